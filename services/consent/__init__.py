"""The consent service: prepares accepted cases, records each participant's consent, says when a case is ready."""
