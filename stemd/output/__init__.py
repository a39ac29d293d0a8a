"""The outbox: naming, atomic publishing, the stem cache, disk space."""
