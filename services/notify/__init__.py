"""The notify service: who is told what, when, on which channel; sent once, never silently lost."""
