"""``demo``: three nodes on loopback play a scenario."""

from __future__ import annotations


def cmd_demo(args) -> int:
    from exchange_node.demo import run_demo

    return run_demo(keep=args.keep, workdir=args.workdir)
