"""The `--config` flag and the checks a config must pass before a run starts."""
