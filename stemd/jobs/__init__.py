"""Jobs: the store (state machine), intake, the lifecycle of a job and its options."""
