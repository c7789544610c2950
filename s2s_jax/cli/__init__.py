"""The commands (s2s-train, s2s-decode, s2s-serve, s2s-prepare, s2s-export, s2s-download) and process settings."""
