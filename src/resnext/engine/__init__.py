"""The training engine: distributed setup, precision, the loop, checkpoints, metrics and logs."""
