"""``exchange-node``: the operator's command line.

Every command prints a short human-readable result, or one ``error: ...`` line and a
non-zero exit status; never a stack trace for something the operator can fix.
Commands that change state while ``serve`` runs (peer add/pause/resume/remove, keys
rotate, send) write to the node's store; the running node picks the change up within
a second.
"""

from exchange_node.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
