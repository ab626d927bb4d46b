"""``python -m client``: the ``cipherdrop`` command."""

import sys

from client.cli import main

sys.exit(main())
