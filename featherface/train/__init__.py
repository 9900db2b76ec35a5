"""Training: loop, schedules, checkpoints."""
