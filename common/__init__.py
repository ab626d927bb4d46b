"""Pieces every cipherdrop process shares: wire protocol, crypto, errors, logging.

Nothing in here imports from ``broker``, ``workers``, ``client`` or ``config``, and nothing
in here does I/O on a socket.
"""
