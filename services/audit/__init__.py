"""The audit log: every event once, in a Merkle tree (RFC 6962 / RFC 9162) with signed tree heads, so that an
auditor who trusts neither our database nor our administrators can check one case's record, or the whole log,
against a head a witness holds.

``merkle``, ``heads`` and ``check`` import nothing of the project (stdlib and ``cryptography`` only): they are
what an auditor is handed, alone, to verify an export. ``canonical`` is how an event becomes the bytes a leaf
commits to.
"""
