"""The worker process: the code that runs in the child, around the engine."""
