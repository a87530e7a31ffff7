"""The RJ workflow services. Each subpackage is one service; ``runtime`` is the plumbing they share."""
