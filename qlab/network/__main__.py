"""``python -m qlab.network network emulate|demo …`` and ``python -m qlab.network node NAME …``: the network
subcommands without the rest of qlab's CLI (see qlab.network.cli)."""

import sys

from qlab.network.cli import main

sys.exit(main())
