"""The supervisor process (``stemd run``) and the status it reports."""
