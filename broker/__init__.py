"""cipherdrop message broker: a Majordomo (7/MDP + 8/MMI) ROUTER broker."""
