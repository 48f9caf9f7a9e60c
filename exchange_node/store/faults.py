"""Fault injection: kill this process at a named commit point, for crash tests.

A unit of work carries a label (``notice.submit``, ``batch.receive``, ...). The store's
writer calls :func:`reached` at each point of its commit:

- ``applied``: the unit's writes are done inside the open transaction, not committed;
- ``committed``: COMMIT has returned, the caller has not been answered yet.

A crash test starts a node process, arms one (label, point) with :func:`arm` (or the
``EXCHANGE_NODE_CRASH_AT=label:point`` environment variable, read by the composition
root only), drives the operation, and checks after the SIGKILL what a restart finds:
all of the operation or none of it. Unarmed, the check is one comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = ("applied", "committed")

_armed: tuple[str, str] | None = None


def arm(label: str, point: str) -> None:
    """Kill the process the next time unit ``label`` reaches ``point`` (``*``: any unit)."""
    global _armed
    if point not in POINTS:
        raise ValueError(f"unknown commit point {point!r}; one of {', '.join(POINTS)}")
    _armed = (label, point)


def arm_from(spec: str) -> None:
    """``label:point`` as in ``EXCHANGE_NODE_CRASH_AT``; ValueError if malformed."""
    label, sep, point = spec.rpartition(":")
    if not sep or not label:
        raise ValueError(f"EXCHANGE_NODE_CRASH_AT={spec!r}: expected label:point")
    arm(label, point)


def reached(labels: tuple[str, ...], point: str) -> None:
    if _armed is None:
        return
    label, at = _armed
    if at == point and (label == "*" or label in labels):
        os.kill(os.getpid(), signal.SIGKILL)
