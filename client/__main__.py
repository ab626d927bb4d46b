"""``python -m client``: the ``cipherdrop`` command."""

import sys

from client.cli import run

sys.exit(run())
