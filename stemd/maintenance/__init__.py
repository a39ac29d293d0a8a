"""Maintenance: the cleanup pass and the APScheduler scheduler."""
