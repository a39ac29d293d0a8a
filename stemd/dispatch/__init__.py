"""The dispatcher: slots, admission and deadlines (runs in the supervisor)."""
