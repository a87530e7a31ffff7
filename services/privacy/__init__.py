"""The privacy service: erasure of a person, retention after closure (with holds), rectification, and the
subject access export."""
