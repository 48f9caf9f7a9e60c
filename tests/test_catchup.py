"""Catch-up: a peer pinned late receives the source's notices still in effect.

The source (PHL-DFA) indexes a few thousand notices of its own (some withdrawn, some
corrected once or twice) before it pins JPN-ISA; once pinned, JPN-ISA's lookups answer
what PHL-DFA's answer, and nothing withdrawn or superseded went over the wire. A source
SIGKILLed at a chunk's commit points carries on where it left off; live notices and case
steps go out, in order, while a catch-up batch is on the wire.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import threading

import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.cli.common import operator_actor
from exchange_node.domain.documents import Detection, NoticeKind
from exchange_node.domain.repatriation import EventType, Participant, Role
from exchange_node.node import open_store
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.pb.exchange.v1.envelope_pb2 import Batch, Envelope, EnvelopeHeader
from exchange_node.services.catchup import LABEL, selection
from exchange_node.services.documents import body_from_row
from exchange_node.services.notices import NoticeDraft
from exchange_node.store.records import CatchUpProgress, CatchUpRow
from tests import node_helpers
from tests.node_helpers import (
    audit_leaves,
    child_env,
    make_net,
    now_ms,
    pin,
    run_cli,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("node_store_backend")

PHL, JPN = "PHL-DFA", "JPN-ISA"
HELPER = [sys.executable, node_helpers.__file__]

# CLI actions name the operating-system user who ran them.
OPERATOR = operator_actor()


def _doc(i: int) -> notice_pb2.DocumentRef:
    return notice_pb2.DocumentRef(
        issuing_state="PHL", document_type="P", document_number=f"P{i:07d}"
    )


async def _fill(node, n: int) -> dict[str, object]:
    """``n`` documents: each with a status notice, every third also a fraud detection;
    then every fifth status withdrawn, every seventh corrected, and every
    fourteenth corrected again. Returns what the source holds in effect, by id."""
    notices = node.services.notices
    now = now_ms()
    drafts = []
    for i in range(n):
        drafts.append(NoticeDraft(NoticeKind.STOLEN, _doc(i), effective_at_ms=now - 10_000))
        if i % 3 == 0:
            drafts.append(
                NoticeDraft(
                    NoticeKind.COUNTERFEIT,
                    _doc(i),
                    detection=Detection("JPNRT", now - 5_000, "Narita"),
                    remarks=f"seen {i}",
                )
            )
    first = [e for e, _ in await notices.submit_many([(d, None) for d in drafts], actor="t")]
    status = [e for e in first if e.notice.kind == NoticeKind.STOLEN]
    second = []
    for i, e in enumerate(status):
        sid = bytes.fromhex(e.notice.notice_id)
        if i % 5 == 0:
            second.append(NoticeDraft(NoticeKind.WITHDRAWAL, None, supersedes=sid, reason="found"))
        elif i % 7 == 0:
            second.append(NoticeDraft(NoticeKind.REVOKED, _doc(i), supersedes=sid, reason="r1"))
    corrected = [e for e, _ in await notices.submit_many([(d, None) for d in second], actor="t")]
    third = [
        NoticeDraft(
            NoticeKind.INVALIDATED,
            e.notice.document and _doc(int(e.notice.document.number[1:])),
            supersedes=bytes.fromhex(e.notice.notice_id),
            reason="r2",
        )
        for e in corrected
        if e.notice.kind == NoticeKind.REVOKED and int(e.notice.document.number[1:]) % 2 == 0
    ]
    await notices.submit_many([(d, None) for d in third], actor="t")
    return n


def _answers(node, n: int) -> list:
    """Per document: its current status (kind and notice id) and fraud detections."""
    out = []
    index = node.services.index
    for i in range(n):
        answer = index.lookup("PHL", f"P{i:07d}", "P")
        record = answer.records[0][0] if answer.records else None
        out.append(
            (
                record.status.kind if record and record.status else None,
                record.status.notice_id if record and record.status else None,
                tuple(f.notice_id for f in record.fraud) if record else (),
            )
        )
    return out


def _in_effect_ids(answers) -> set[str]:
    ids = set()
    for _, sid, fraud in answers:
        if sid:
            ids.add(sid)
        ids.update(fraud)
    return ids


def _catchup_rows(store, peer: str) -> list[int]:
    rows = store._read(
        "SELECT id FROM outbox WHERE peer_id = ? AND catchup = 1 ORDER BY id", (peer,)
    )
    return [r[0] for r in rows]


async def _caught_up(node, peer: str) -> bool:
    progress = {c.row.peer_id: c for c in node.store.catchup_progress()}
    c = progress.get(peer)
    return c is not None and c.row.state == "done" and c.pending == 0


async def _pin_jpn(net) -> None:
    keys = net[JPN].keys()
    await pin(net[PHL], keys.card_bytes, keys.fingerprint, JPN)


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [PHL, JPN], pins=[(JPN, PHL)], options={PHL: {"batch_size": 50}})
    yield net
    await net.stop_all()


async def test_a_peer_pinned_late_answers_what_the_source_answers(net) -> None:
    n = 2000
    phl = await net[PHL].start()
    await _fill(phl, n)
    jpn = await net[JPN].start()
    await _pin_jpn(net)
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")

    source = _answers(phl, n)
    assert _answers(jpn, n) == source
    held = {
        r.notice_id for i in range(n) for r in jpn.store.notices_for_document("PHL", f"P{i:07d}")
    }
    # Only what is in effect was sent: no withdrawn, no superseded notice, no withdrawal.
    assert held == _in_effect_ids(source)
    [progress] = [c for c in phl.store.catchup_progress() if c.row.peer_id == JPN]
    assert progress.row.queued == progress.delivered == len(held) == progress.row.total
    assert progress.remaining == 0
    assert len(_catchup_rows(phl.store, JPN)) == len(held)


class HeldReceiver:
    """Wraps a node's batch intake: the first full catch-up chunk stays on the wire
    (its receiver has not stored it) until ``release``; every other batch goes through."""

    def __init__(self, node, chunk: int) -> None:
        self.chunk = chunk
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self._receive = node.receive_batch
        node.receive_batch = self.receive

    async def receive(self, data: bytes, peer):
        if not self.arrived.is_set() and len(Batch.FromString(data).envelopes) == self.chunk:
            self.arrived.set()
            await self.release.wait()
        return await self._receive(data, peer)


def _states(store, peer: str) -> dict[int, str]:
    rows = store._read("SELECT id, state FROM outbox WHERE peer_id = ?", (peer,))
    return dict(rows)


async def _catch_up_on_the_wire(net, n: int):
    """The source filled with ``n`` documents, JPN-ISA pinned, the first catch-up chunk
    held at JPN-ISA and a second one queued behind it."""
    phl = await net[PHL].start()
    await _fill(phl, n)
    jpn = await net[JPN].start()
    batch = phl.config.delivery.batch_size
    held = HeldReceiver(jpn, batch)
    await _pin_jpn(net)
    await wait_for(held.arrived.is_set, what="the first chunk at the receiver")
    await wait_for(
        lambda: len(_catchup_rows(phl.store, JPN)) >= 2 * batch, what="a second chunk queued"
    )
    return phl, jpn, held


async def test_a_live_notice_goes_out_while_a_catch_up_batch_is_on_the_wire(net) -> None:
    n = 300
    phl, jpn, held = await _catch_up_on_the_wire(net, n)
    try:
        [live] = await phl.submit(node_helpers.fraud_notice("L0000001"), [JPN])
        await wait_for(
            lambda: _states(phl.store, JPN)[live.outbox_id] == "delivered",
            what="the live notice's receipt",
        )
        catch_up = _catchup_rows(phl.store, JPN)
        states = _states(phl.store, JPN)
        # Two chunks were queued before it, the first of them still on the wire: the
        # live notice went past both, not behind them (docs/protocol.md 11.1).
        assert len([i for i in catch_up if i < live.outbox_id]) >= 2 * held.chunk
        assert {states[i] for i in catch_up} == {"queued"}
        assert jpn.services.index.lookup("PHL", "L0000001").records
        assert not jpn.store.notices_for_document("PHL", "P0000000")
    finally:
        held.release.set()
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
    assert _answers(jpn, n) == _answers(phl, n)


class HeldStore:
    """Holds a node's store writer with a job of its own until ``release``, and records
    the label of every job submitted to it meanwhile."""

    def __init__(self, node) -> None:
        self.writer = node.store._writer
        self.labels: list[str] = []
        self._started, self._release = threading.Event(), threading.Event()
        submit = self.writer.submit

        def recording(fn, **kw):
            self.labels.append(kw.get("label", ""))
            return submit(fn, **kw)

        self.writer.submit = recording
        self.held = submit(lambda conn: (self._started.set(), self._release.wait(30)))

    async def __aenter__(self) -> HeldStore:
        await asyncio.to_thread(self._started.wait, 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._release.set()
        await self.held
        del self.writer.submit


async def test_a_live_notice_is_stored_before_a_catch_up_batch_waiting_for_the_store(net):
    # The receiver's intake of a catch-up batch yields to live work (store/writer.py):
    # a live notice that arrives while a catch-up batch waits for the store commits
    # first, not behind the batch's larger transaction.
    phl = await net[PHL].start()
    await _fill(phl, 100)
    jpn = await net[JPN].start()
    async with HeldStore(jpn) as held:
        await _pin_jpn(net)
        await wait_for(
            lambda: held.labels.count("batch.receive") == 1, what="a catch-up batch waiting"
        )
        [live] = await phl.submit(node_helpers.fraud_notice("L0000001"), [JPN])
        await wait_for(
            lambda: held.labels.count("batch.receive") == 2, what="the live batch waiting too"
        )
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
    rows = jpn.store._read("SELECT message_id, cursor FROM inbox WHERE sender = ?", (PHL,))
    cursors = {bytes(m): c for m, c in rows}
    live_cursor = cursors.pop(live.message_id)
    assert len(cursors) >= 50
    assert live_cursor < min(cursors.values())


async def test_the_source_writes_a_catch_up_in_the_background_and_live_work_not(net):
    phl = await net[PHL].start()
    await _fill(phl, 120)
    await net[JPN].start()
    writes: list[tuple[str, bool]] = []
    submit = phl.store._writer.submit

    def recording(fn, **kw):
        writes.append((kw.get("label", ""), kw.get("background", False)))
        return submit(fn, **kw)

    phl.store._writer.submit = recording
    await _pin_jpn(net)
    await phl.submit(node_helpers.fraud_notice("L0000001"), [JPN])
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
    kinds: dict[str, set[bool]] = {}
    for label, background in writes:
        kinds.setdefault(label, set()).add(background)
    assert kinds[LABEL] == {True}  # every chunk
    assert kinds["notice.submit"] == {False}
    assert kinds["receipt.settle"] == {True, False}  # the catch-up lane's and the live one's
    assert kinds["catchup.begin"] == {False}


class HeldLivePost:
    """Wraps a node's posting of batches: counts the catch-up batches posted, and holds
    the first live batch (it stays on its way) until ``release``."""

    def __init__(self, node) -> None:
        self.store = node.store
        self.catch_up_posted = 0
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self._post = node.outbox.post_batch
        node.outbox.post_batch = self.post

    async def post(self, peer_id: str, data: bytes) -> bytes:
        first = Envelope.FromString(Batch.FromString(data).envelopes[0])
        header = EnvelopeHeader.FromString(first.header)
        [(catch_up,)] = self.store._read(
            "SELECT catchup FROM outbox WHERE message_id = ?", (header.message_id,)
        )
        if catch_up:
            self.catch_up_posted += 1
        elif not self.arrived.is_set():
            self.arrived.set()
            await self.release.wait()
        return await self._post(peer_id, data)


THA = "THA-IMM"


async def _live_work_on_its_way(tmp_path, wait_ms: int):
    """PHL-DFA, pinning THA-IMM, filled with 300 documents; the first live batch of
    them to THA-IMM held on its way (live work under way until ``held.release``).
    JPN-ISA is running, not pinned yet. Returns (net, held)."""
    options = {PHL: {"batch_size": 50, "catchup_live_wait_ms": wait_ms}}
    pins = [(JPN, PHL), (PHL, THA), (THA, PHL)]
    net = await make_net(tmp_path, [PHL, JPN, THA], pins=pins, options=options)
    phl = await net[PHL].start()
    await net[THA].start()
    held = HeldLivePost(phl)
    await _fill(phl, 300)
    await wait_for(held.arrived.is_set, what="a live batch to THA-IMM on its way")
    await net[JPN].start()
    return net, held


async def test_a_catch_up_waits_while_live_work_is_on_its_way(tmp_path) -> None:
    net, held = await _live_work_on_its_way(tmp_path, wait_ms=60_000)
    try:
        phl, jpn = net[PHL].node, net[JPN].node
        await _pin_jpn(net)
        await wait_for(lambda: phl.live_first.waiting, what="JPN-ISA's catch-up waiting")
        await asyncio.sleep(1.0)  # time for the whole catch-up, were it not waiting
        # While the live batch to THA-IMM is on its way, JPN-ISA's catch-up reads and
        # seals nothing, and sends nothing.
        assert held.catch_up_posted == 0
        assert _catchup_rows(phl.store, JPN) == []
        assert phl.live_first.busy
        held.release.set()
        await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
        assert _answers(jpn, 300) == _answers(phl, 300)
        assert phl.live_first.waited_s >= 0.9
        assert "exchange_catchup_live_wait_seconds_total" in phl.metrics.render().decode()
    finally:
        held.release.set()
        await net.stop_all()


async def test_a_catch_up_waits_for_live_work_no_longer_than_its_allowance(tmp_path) -> None:
    # Live work that does not end (the live batch to THA-IMM held on its way) does not
    # stop a catch-up: each of its steps waits at most its allowance, then goes on.
    net, held = await _live_work_on_its_way(tmp_path, wait_ms=20)
    try:
        phl, jpn = net[PHL].node, net[JPN].node
        await _pin_jpn(net)
        await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
        assert phl.live_first.busy  # still: the live batch is held
        assert _answers(jpn, 300) == _answers(phl, 300)
        assert phl.live_first.waited_s > 0
    finally:
        held.release.set()
        await net.stop_all()


class HeldLiveIntake:
    """Wraps a node's store: holds the first live batch's intake (``batch.receive`` in
    the foreground) until ``release``, and counts the catch-up batches' intakes."""

    def __init__(self, node) -> None:
        self.catch_up_stored = 0
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self._transaction = node.store.transaction
        node.store.transaction = self.transaction

    async def transaction(self, work, **kw):
        if kw.get("label") == "batch.receive":
            if kw.get("background"):
                self.catch_up_stored += 1
            elif not self.arrived.is_set():
                self.arrived.set()
                await self.release.wait()
        return await self._transaction(work, **kw)


async def test_the_receiver_takes_in_a_catch_up_batch_after_a_live_one_it_is_receiving(
    tmp_path,
) -> None:
    # JPN-ISA, receiving PHL-DFA's catch-up, receives a live batch from THA-IMM. The
    # source does not wait (its allowance is 0); the receiver, whose allowance is long,
    # neither opens the rest of a catch-up batch nor stores it meanwhile.
    options = {
        PHL: {"batch_size": 50, "catchup_live_wait_ms": 0},
        JPN: {"catchup_live_wait_ms": 60_000},
    }
    pins = [(JPN, PHL), (JPN, THA), (THA, JPN)]
    net = await make_net(tmp_path, [PHL, JPN, THA], pins=pins, options=options)
    try:
        n = 600
        phl = await net[PHL].start()
        await _fill(phl, n)
        tha = await net[THA].start()
        jpn = await net[JPN].start()
        held = HeldLiveIntake(jpn)
        await _pin_jpn(net)
        await wait_for(lambda: held.catch_up_stored >= 1, what="a catch-up batch stored")
        await tha.submit(node_helpers.fraud_notice("L0000001"), [JPN])
        await wait_for(held.arrived.is_set, what="the live batch being received")
        await wait_for(lambda: jpn.live_first.waiting, what="a catch-up batch waiting")
        stored = held.catch_up_stored
        await asyncio.sleep(1.0)  # time to store it, were it not waiting
        assert held.catch_up_stored == stored
        assert jpn.live_first.waiting == 1
        held.release.set()
        await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
        assert _answers(jpn, n) == _answers(phl, n)
        assert jpn.live_first.waited_s >= 0.9
        assert phl.live_first.waited_s == 0
    finally:
        held.release.set()
        await net.stop_all()


async def test_case_steps_stay_in_order_while_a_catch_up_batch_is_on_the_wire(net) -> None:
    phl, jpn, held = await _catch_up_on_the_wire(net, 300)
    steps = [EventType.RECORD_CONSENT, *[EventType.SUSPEND, EventType.RESUME] * 2]
    try:
        cases = phl.services.cases
        case, _ = await cases.open_case([Participant(JPN, Role.ORIGIN_STATE)], None, "", actor="t")
        for kind in steps:
            await cases.add_event(case.case_ref, kind, "", actor="t")
        await wait_for(
            lambda: len(jpn.store.case_events(case.case_ref)) == 1 + len(steps),
            what="every step at the receiver",
        )
        received = jpn.store.case_events(case.case_ref)
        # Each step is applied only after the one before it (event_out_of_order
        # otherwise): all of them arrived, in order, past the held catch-up chunk.
        assert [e.kind for e in received] == [EventType.OPEN_CASE, *steps]
        assert [e.sequence for e in received] == list(range(1, 2 + len(steps)))
        assert {_states(phl.store, JPN)[i] for i in _catchup_rows(phl.store, JPN)} == {"queued"}
    finally:
        held.release.set()
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
    assert phl.store.dead_letters(JPN) == []


async def test_a_live_withdrawal_does_not_overtake_the_notice_it_withdraws(net) -> None:
    n = 300
    phl, jpn, held = await _catch_up_on_the_wire(net, n)
    try:
        # P0000001's status notice is in the first chunk, held on the wire.
        [first] = phl.store.notices_for_document("PHL", "P0000001")
        await phl.services.notices.submit(
            NoticeDraft(
                NoticeKind.WITHDRAWAL, None, supersedes=bytes.fromhex(first.notice_id),
                reason="found",
            ),
            [JPN],
            actor="t",
        )  # fmt: skip
        withdrawal = max(_states(phl.store, JPN))
        # Queued behind the catch-up's rows, on their lane.
        assert withdrawal in _catchup_rows(phl.store, JPN)
    finally:
        held.release.set()
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
    assert _states(phl.store, JPN)[withdrawal] == "delivered"
    assert _answers(jpn, n) == _answers(phl, n)


async def _withdraw_while_the_first_chunk_is_sealed(net, n: int, *, purge: bool):
    """The source filled with ``n`` documents pins JPN-ISA; its first chunk is read, then
    one of its notices is withdrawn live (and, if ``purge``, the withdrawn chain purged
    by retention) before the chunk's transaction. Returns (phl, jpn, that notice's id)
    once the catch-up is delivered."""
    phl = await net[PHL].start()
    # The node's start-up retention run is over before the catch-up: it would purge the
    # chain withdrawn below whenever it came after the withdrawal.
    retention_ran = asyncio.Event()
    run_retention = phl.run_retention

    async def run_and_note():
        report = await run_retention()
        retention_ran.set()
        return report

    phl.run_retention = run_and_note
    await _fill(phl, n)
    await wait_for(retention_ran.is_set, what="the start-up retention run")
    jpn = await net[JPN].start()
    chunk_submit = phl.submit_many
    withdrawn: list[str] = []

    async def withdraw_first_then_submit(bodies, **kw):
        if kw.get("label") == LABEL and not withdrawn:
            body = next(b for b, _ in bodies if b.WhichOneof("content") == "status_notice")
            withdrawn.append(body.status_notice.notice_id.hex())
            await phl.services.notices.submit(
                NoticeDraft(NoticeKind.WITHDRAWAL, None, supersedes=body.status_notice.notice_id,
                            reason="found"),
                [JPN],
                actor="t",
            )  # fmt: skip
            if purge:
                assert withdrawn[0] in (await phl.run_retention()).notices
        return await chunk_submit(bodies, **kw)

    phl.submit_many = withdraw_first_then_submit
    await _pin_jpn(net)
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up delivered")
    assert withdrawn
    return phl, jpn, withdrawn[0]


async def test_a_notice_withdrawn_while_its_chunk_is_sealed_is_left_out_of_it(net) -> None:
    """The chunk reads its notices, then a withdrawal of one commits (live, ahead of the
    chunk) before the chunk's transaction does: that notice is not sent, so the peer
    does not keep a notice its source withdrew."""
    n = 40
    phl, jpn, withdrawn = await _withdraw_while_the_first_chunk_is_sealed(net, n, purge=False)
    assert phl.store.notice_superseded_by(withdrawn) is not None
    # Neither the withdrawn notice nor anything else the source no longer holds in effect.
    assert _answers(jpn, n) == _answers(phl, n)
    assert jpn.store.notice(withdrawn) is None
    [progress] = [c for c in phl.store.catchup_progress() if c.row.peer_id == JPN]
    assert progress.row.queued == len(_catchup_rows(phl.store, JPN))


async def test_a_notice_withdrawn_and_purged_while_its_chunk_is_sealed_is_left_out(net):
    """As above, and retention purges the withdrawn chain (withdrawn by its source)
    before the chunk commits: a notice no longer in the index is not sent either."""
    n = 40
    phl, jpn, purged = await _withdraw_while_the_first_chunk_is_sealed(net, n, purge=True)
    assert phl.store.notice(purged) is None  # purged at the source...
    assert jpn.store.notice(purged) is None  # ...and never sent
    assert _answers(jpn, n) == _answers(phl, n)


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_source_killed_during_catch_up_resumes_without_loss_or_double(net, point):
    n = 200
    phl = await net[PHL].open()
    await _fill(phl, n)
    source = _answers(phl, n)
    await net[PHL].stop()
    await _pin_jpn(net)
    proc = subprocess.Popen(
        [*HELPER, "--config", str(net[PHL].config_path), "--crash-at", f"{LABEL}:{point}",
         "serve", "--ready-file", str(net[PHL].dir / "ready.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(),
    )  # fmt: skip
    assert await asyncio.to_thread(proc.wait, 60) == -9

    store = await open_store(net[PHL].config())
    try:
        row = store.catchup(JPN)
        marked = _catchup_rows(store, JPN)
        assert row is not None and row.state == "running"
        if point == "applied":
            assert (row.cursor, row.queued, marked) == (0, 0, [])
        else:  # the chunk and its cursor, together
            assert row.queued == len(marked) == phl.config.delivery.batch_size
            assert row.cursor > 0
    finally:
        await store.close()

    jpn = await net[JPN].start()
    phl = await net[PHL].start()
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the catch-up resumed")
    assert _answers(jpn, n) == source
    expected = _in_effect_ids(source)
    # Nothing queued twice: one outbox row per notice in effect.
    assert len(_catchup_rows(phl.store, JPN)) == len(expected)
    assert jpn.store.count_notices() == len(expected)


async def test_the_operator_pauses_resumes_and_restarts_a_catch_up(net, capsys) -> None:
    n = 150
    phl = await net[PHL].start()
    await _fill(phl, n)
    await _pin_jpn(net)  # JPN-ISA is down: one chunk queued, then the queue is full
    await wait_for(lambda: _catchup_rows(phl.store, JPN), what="a first chunk")
    await net[PHL].stop()

    cli = ["--config", str(net[PHL].config_path)]
    assert await asyncio.to_thread(run_cli, [*cli, "peer", "catchup", JPN, "pause"]) == 0
    assert await asyncio.to_thread(run_cli, [*cli, "status"]) == 0
    out = capsys.readouterr().out
    assert "catch-up" in out and f"{JPN:<14} paused" in out
    assert await asyncio.to_thread(run_cli, [*cli, "peer", "catchup", JPN, "resume"]) == 0
    assert await asyncio.to_thread(run_cli, [*cli, "peer", "catchup", JPN, "restart"]) == 0
    assert await asyncio.to_thread(run_cli, [*cli, "peer", "catchup", "XXX-NONE", "pause"]) == 2

    jpn = await net[JPN].start()
    phl = await net[PHL].start()
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the restarted catch-up")
    source = _answers(phl, n)
    assert _answers(jpn, n) == source
    actions = [
        (leaf.actor, leaf.attrs["action"])
        for leaf in audit_leaves(phl.audit, LeafKind.PEER_CATCHUP)
    ]
    assert actions == [
        ("catchup", "started"),
        (OPERATOR, "paused"),
        (OPERATOR, "resumed"),
        (OPERATOR, "restarted"),
        ("catchup", "finished"),
    ]
    # Refreshed, the gauge says nothing remains (before, it may still show a value the
    # periodic refresh took during the run).
    phl.update_gauges()
    assert (
        phl.metrics.registry.get_sample_value(
            "exchange_catchup_notices", {"peer": JPN, "count": "remaining"}
        )
        == 0
    )
    assert phl.metrics.registry.get_sample_value(
        "exchange_catchup_notices", {"peer": JPN, "count": "delivered"}
    ) == len(_in_effect_ids(source))
    assert phl.metrics.registry.get_sample_value("exchange_catchup_eta_seconds", {"peer": JPN}) == 0
    # And the SQLite store's WAL, which the checkpoints keep short (PostgreSQL keeps its
    # own: the gauge stays at 0).
    wal = phl.metrics.registry.get_sample_value("exchange_store_wal_bytes")
    if phl.store.wal_bytes() is None:
        assert wal == 0
    else:
        assert 0 < wal <= os.path.getsize(phl.store.path + "-wal")


def _status_body(number: str, status, *, issued_at: int | None = None) -> notice_pb2.Body:
    body = notice_pb2.Body(
        status_notice=notice_pb2.TravelDocumentStatusNotice(
            notice_id=secrets.token_bytes(16),
            document=notice_pb2.DocumentRef(
                issuing_state="PHL", document_type="P", document_number=number
            ),
            status=status,
        )
    )
    if issued_at is not None:
        body.catch_up.issued_at_ms = issued_at
    return body


async def test_the_receiver_orders_a_caught_up_notice_by_when_it_was_issued(net) -> None:
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    await _pin_jpn(net)
    await wait_for(lambda: _caught_up(phl, JPN), what="the (empty) catch-up")
    newer = _status_body("P7000001", notice_pb2.DOCUMENT_STATUS_REVOKED)
    older = _status_body(
        "P7000001", notice_pb2.DOCUMENT_STATUS_STOLEN, issued_at=now_ms() - 86_400_000
    )
    sent = [await phl.submit(newer, [JPN]), await phl.submit(older, [JPN])]
    # The same notice caught up twice (a restarted catch-up): accepted, held once.
    sent.append(await phl.submit(older, [JPN]))
    # A caught-up correction of a notice the receiver never held stands on its own.
    correction = notice_pb2.Body(
        correction=notice_pb2.NoticeCorrection(
            notice_id=secrets.token_bytes(16),
            supersedes_notice_id=secrets.token_bytes(16),
            action=notice_pb2.CORRECTION_ACTION_REPLACE,
            reason="re-issued",
        )
    )
    replacement = _status_body("P7000002", notice_pb2.DOCUMENT_STATUS_LOST).status_notice
    replacement.notice_id = correction.correction.notice_id
    correction.correction.status_notice.CopyFrom(replacement)
    correction.catch_up.issued_at_ms = now_ms() - 3_600_000
    sent.append(await phl.submit(correction, [JPN]))
    mids = [s.message_id for [s] in sent]
    await wait_for(lambda: node_helpers.settled(phl.store, mids), what="delivery")
    assert [phl.store.message_status(m)[0].outcome.value for m in mids] == ["accepted"] * 4

    record = jpn.services.index.lookup("PHL", "P7000001", "P").records[0][0]
    assert record.status.kind == NoticeKind.REVOKED  # the older notice did not override it
    assert [e.notice.kind for e in record.history] == [NoticeKind.STOLEN, NoticeKind.REVOKED]
    [(alone, entries)] = jpn.services.index.lookup("PHL", "P7000002", "P").records
    assert alone.status.kind == NoticeKind.LOST and alone.status.supersedes is None
    assert entries[0].reason == "re-issued"
    assert jpn.store.count_notices() == 3


async def test_a_policy_that_comes_to_allow_a_kind_catches_up_on_that_kind(net) -> None:
    n = 90
    phl = await net[PHL].start()
    await _fill(phl, n)
    jpn = await net[JPN].start()
    keys = net[JPN].keys()
    await phl.store.upsert_peer(JPN, keys.card_bytes, keys.fingerprint, now_ms(), ["fraud_notice"])
    phl.reload_peers()
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the fraud catch-up")
    source = _answers(phl, n)
    fraud = {f for _, _, ids in source for f in ids}

    def held() -> set[str]:
        return {
            r.notice_id
            for i in range(n)
            for r in jpn.store.notices_for_document("PHL", f"P{i:07d}")
        }

    # The receiver's index is read through its own connection (PostgreSQL: another
    # process's view); wait for it rather than race it.
    await wait_for(lambda: held() == fraud, timeout=30, what="the receiver holds the fraud notices")

    await phl.directory.set_policy(JPN, ["fraud_notice", "status_notice", "correction"])
    await wait_for(lambda: phl.store.catchup(JPN).todo == ("correction", "status_notice"),
                   what="a catch-up of the new kinds")  # fmt: skip
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the status catch-up")
    assert _answers(jpn, n) == source
    # Only the new kinds went out the second time: each notice in effect once.
    assert len(_catchup_rows(phl.store, JPN)) == len(_in_effect_ids(source))


async def test_a_peer_asks_for_a_catch_up_and_is_answered_once_per_interval(net) -> None:
    n = 60
    phl = await net[PHL].start()
    await _fill(phl, n)
    jpn = await net[JPN].start()
    await _pin_jpn(net)
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the first catch-up")
    held = jpn.store.count_notices()

    cli = ["--config", str(net[JPN].config_path)]
    for _ in range(2):
        assert await asyncio.to_thread(run_cli, [*cli, "peer", "catchup", PHL, "request"]) == 0
    mids = [
        bytes.fromhex(leaf.message_id)
        for leaf in audit_leaves(jpn.audit, LeafKind.NOTICE_SUBMITTED)
        if leaf.attrs["kind"] == "catch_up_request"
    ]
    assert len(mids) == 2
    await wait_for(lambda: node_helpers.settled(jpn.store, mids), what="both requests answered")
    outcomes = [jpn.store.message_status(m)[0] for m in mids]
    # The first is honoured; the second, inside the interval, refused and dead-lettered.
    assert [(o.outcome.value, o.reason) for o in outcomes] == [
        ("accepted", None),
        ("rejected", "policy_denied"),
    ]
    await wait_for(lambda: _caught_up(phl, JPN), timeout=60, what="the requested catch-up")
    assert phl.store.catchup(JPN).queued == held  # everything in effect sent again...
    assert jpn.store.count_notices() == held  # ...and held once
    restarted = [
        (leaf.actor, leaf.attrs["why"])
        for leaf in audit_leaves(phl.audit, LeafKind.PEER_CATCHUP)
        if leaf.attrs["action"] == "restarted"
    ]
    assert restarted == [(JPN, "requested")]
    requested = [
        leaf.actor
        for leaf in audit_leaves(jpn.audit, LeafKind.PEER_CATCHUP)
        if leaf.attrs["action"] == "requested"
    ]
    assert requested == [OPERATOR, OPERATOR]


async def test_a_caught_up_correction_supersedes_the_earlier_notice_of_its_chain_held(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    await _pin_jpn(net)
    await wait_for(lambda: _caught_up(phl, JPN), what="the (empty) catch-up")
    # JPN-ISA received the original live, but not the first correction of it (its policy
    # did not allow corrections then); the catch-up sends the second correction.
    original = _status_body("P7100001", notice_pb2.DOCUMENT_STATUS_STOLEN)
    [first] = await phl.submit(original, [JPN])
    first_correction = secrets.token_bytes(16)
    second = notice_pb2.Body(
        correction=notice_pb2.NoticeCorrection(
            notice_id=secrets.token_bytes(16),
            supersedes_notice_id=first_correction,
            action=notice_pb2.CORRECTION_ACTION_REPLACE,
            reason="r2",
        )
    )
    replacement = _status_body("P7100001", notice_pb2.DOCUMENT_STATUS_REVOKED).status_notice
    replacement.notice_id = second.correction.notice_id
    second.correction.status_notice.CopyFrom(replacement)
    second.catch_up.issued_at_ms = now_ms() - 1000
    second.catch_up.superseded_ids.extend([first_correction, original.status_notice.notice_id])
    [sub] = await phl.submit(second, [JPN])
    mids = [first.message_id, sub.message_id]
    await wait_for(lambda: node_helpers.settled(phl.store, mids), what="delivery")
    assert [phl.store.message_status(m)[0].outcome.value for m in mids] == ["accepted"] * 2

    record = jpn.services.index.lookup("PHL", "P7100001", "P").records[0][0]
    assert record.status.notice_id == second.correction.notice_id.hex()
    [held_original] = [e for e in record.history if e.notice.kind == NoticeKind.STOLEN]
    assert not held_original.in_effect
    assert held_original.superseded_by == second.correction.notice_id.hex()


async def test_the_catch_up_sends_a_correction_with_its_chain(net) -> None:
    phl = await net[PHL].open()
    await _fill(phl, 20)  # P0000014 is corrected twice
    [row] = [
        r for r in phl.store.notices_for_document("PHL", "P0000014") if r.kind == "INVALIDATED"
    ]
    body = body_from_row(row, phl.services.catchup._chain(row.supersedes))
    chain = [i.hex() for i in body.catch_up.superseded_ids]
    assert chain[0] == row.supersedes and len(chain) == 2
    assert phl.store.notice(chain[1]).kind == "STOLEN"
    assert body.correction.notice_id.hex() == row.notice_id
    assert body.catch_up.issued_at_ms == row.issued_at_ms


def _progress(
    state: str,
    total: int,
    queued: int,
    pending: int,
    started_at: int = 0,
    paused_ms: int = 0,
    paused_at: int | None = None,
):
    row = CatchUpRow(
        peer_id=JPN, state=state, kinds=("status_notice",), todo=("status_notice",),
        cursor=0, high_water=0, total=total, queued=queued, started_at=started_at,
        updated_at=started_at, paused_ms=paused_ms, paused_at=paused_at,
    )  # fmt: skip
    return CatchUpProgress(row=row, pending=pending, dead=0)


def test_a_catch_ups_time_left_is_what_is_left_at_the_rate_delivered_so_far() -> None:
    # 100 s in, 2,000 of 10,000 delivered (500 sent and waiting, 7,500 not queued yet):
    # 8,000 left at 20 a second.
    assert _progress("running", 10_000, 2_500, 500).eta_s(100_000) == 400.0
    assert _progress("running", 10_000, 200, 200).eta_s(100_000) is None  # no receipt yet
    assert _progress("paused", 10_000, 2_500, 500).eta_s(100_000) is None
    # All queued, the last 10 on their way; and done.
    assert _progress("done", 10_000, 10_000, 10).eta_s(100_000) == 10 * 100 / 9_990
    assert _progress("done", 10_000, 9_990, 0).eta_s(100_000) == 0.0
    # 150 s since it began, 50 of them paused: the same 2,000 in 100 s of running.
    assert _progress("running", 10_000, 2_500, 500, paused_ms=50_000).eta_s(150_000) == 400.0


async def test_a_catch_up_keeps_the_time_it_spent_paused_until_it_starts_again(net) -> None:
    # PHL-DFA's store alone, with notices of its own, on a clock of the test's own
    # (JPN-ISA is not its peer: no catch-up runs, only its row is kept).
    await _fill(await net[PHL].start(), 10)
    await net[PHL].stop()
    store = await open_store(net[PHL].config())
    try:
        row = await store.transaction(lambda tx: _begin(tx, 1_000), label="test")
        assert (row.state, row.paused_ms, row.paused_at) == ("running", 0, None)

        def state(name: str, at: int):
            return store.transaction(lambda tx: tx.set_catchup_state(JPN, name, at), label="test")

        await state("paused", 5_000)
        await state("paused", 6_000)  # paused again: the pause still began at 5 s
        paused = store.catchup(JPN)
        assert (paused.paused_at, paused.running_ms(8_000)) == (5_000, 4_000)
        row = await state("running", 9_000)
        assert (row.paused_ms, row.paused_at) == (4_000, None)
        assert store.catchup(JPN) == row  # as stored
        await state("running", 10_000)  # resumed again: nothing more was paused
        await state("paused", 20_000)
        # 24 s since it began: 4 s paused, then 5 s of the pause under way.
        assert store.catchup(JPN).running_ms(25_000) == 15_000
        row = await store.transaction(lambda tx: _begin(tx, 30_000), label="test")  # restarted
        assert (row.state, row.started_at, row.paused_ms, row.paused_at) == (
            "running", 30_000, 0, None,
        )  # fmt: skip
    finally:
        await store.close()


def _begin(tx, at: int) -> CatchUpRow:
    return tx.begin_catchup(JPN, PHL, ["status_notice"], selection(["status_notice"]), at)
