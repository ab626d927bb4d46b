"""Typed settings: defaults < TOML file < CIPHERDROP_* environment < command-line flags."""
