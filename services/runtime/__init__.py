"""Plumbing every service shares: settings, database, inbox/outbox, relay, dead letters, the Faust app."""
