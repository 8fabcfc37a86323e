"""``python -m warpdrive``: the ``warpdrive`` command."""

import sys

from warpdrive.cli import main

sys.exit(main())
