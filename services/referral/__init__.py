"""The referral service: turns upstream crime events into RJ cases, screens them, runs the Victims' Code clock."""
