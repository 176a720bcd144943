"""The one training loop, schedules, checkpoints and the supervised child process."""
