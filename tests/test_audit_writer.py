"""Group commit of concurrent appends from asyncio code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exchange_node.audit import merkle
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import AuditLog
from exchange_node.audit.writer import AuditWriter
from exchange_node.errors import ConflictError


def event(i: int) -> AuditEvent:
    return AuditEvent(time=i, kind=LeafKind.ENVELOPE_RECEIVED, actor="PHL-DFA", peer="PHL-DFA")


async def test_concurrent_appends_get_distinct_seqs_and_are_all_stored(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db", node_id="JPN-ISA") as log:
        async with AuditWriter(log) as writer:
            seqs = await asyncio.gather(*(writer.append(event(i)) for i in range(500)))
        assert sorted(seqs) == list(range(500))
        assert [log.leaf(s).record.time for s in seqs] == list(range(500))
        assert log.root() == merkle.root(log.leaf(i).data for i in range(500))


async def test_failed_commit_raises_in_every_caller_of_the_batch(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.db", node_id="JPN-ISA")
    writer = AuditWriter(log)
    writer.start()
    log.close()  # every commit now fails
    results = await asyncio.gather(
        *(writer.append(event(i)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results)
    await writer.close()


async def test_append_after_close_is_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db", node_id="JPN-ISA") as log:
        writer = AuditWriter(log)
        writer.start()
        await writer.close()
        with pytest.raises(ConflictError):
            await writer.append(event(0))
