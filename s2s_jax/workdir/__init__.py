"""A run's directory: its saved config, checkpoints and their checksums, the lock, lost peers."""
