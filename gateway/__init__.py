"""The legacy gateway: clients of the original binary TCP protocol in, broker requests out.

Off by default: it runs only as its own command, ``cipherdrop-gateway`` (docs/legacy.md).
"""
