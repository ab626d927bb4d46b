"""cipherdrop client: transport, session, upload/download and the ``cipherdrop`` command."""
