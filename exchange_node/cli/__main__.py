"""``python -m exchange_node.cli``: the same as ``exchange-node``."""

import sys

from exchange_node.cli.main import main

sys.exit(main())
