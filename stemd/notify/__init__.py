"""Notifications: job events become deliveries (recorded in SQLite), sent to webhooks
or, with the ``notify`` extra, to any Apprise URL; retried with backoff."""
