"""cipherdrop worker runtime (MDP worker), the three services and the SQLite store."""
