"""All or nothing: a node process SIGKILLed at each commit point of each operation.

Every operation is one transaction (``store.transaction``), so it has two commit points
(``store/faults.py``): ``applied`` (its writes done, COMMIT not yet run) and
``committed`` (COMMIT returned, nobody told yet). The fault hook kills the process at
one of them, by the operation's label, not by timing. The test then opens what the
process left on disk and checks that the operation is there whole (state rows, index
rows, outbox rows and the audit leaves recording them) or not at all, and that
delivery then completes with every leaf in place.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.audit.log import AuditLog
from exchange_node.node import open_audit_log, open_store
from exchange_node.store.records import OutboxState, Outcome
from exchange_node.store.sqlite import SqliteStore
from tests import node_helpers
from tests.node_helpers import (
    child_env,
    fraud_notice,
    make_net,
    now_ms,
    settled,
    start_serve,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL = "JPN-ISA", "PHL-DFA"
HELPER = [sys.executable, node_helpers.__file__]


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


class Left:
    """What a stopped node left on disk, read straight from its database."""

    def __init__(self, store: SqliteStore, audit: AuditLog) -> None:
        self.store, self.audit = store, audit

    def leaves(self, kind: str, message_id: bytes | None = None) -> list:
        found = [leaf.record for leaf in self.audit.query(kind=kind, limit=10_000)]
        if message_id is not None:
            found = [r for r in found if r.message_id == message_id.hex()]
        return found


async def left_by(nd) -> Left:
    store = await open_store(nd.config())
    audit = open_audit_log(nd.config(), store)
    return Left(store, audit)


async def close(left: Left) -> None:
    left.audit.close()
    await left.store.close()


def killed(proc: subprocess.Popen) -> bool:
    return proc.wait(timeout=30) == -signal.SIGKILL


# --- submitting a notice: index row + outbox row + notice.submitted leaf ----------------------


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_notice_submission_killed_at_its_commit_is_indexed_queued_and_audited_or_not_at_all(
    net, point
):
    proc = subprocess.Popen(
        [*HELPER, "--config", str(net[JPN].config_path), "--crash-at",
         f"notice.submit:{point}", "submit-notice", PHL, "P0000042"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), text=True,
    )  # fmt: skip
    out, _ = await asyncio.to_thread(proc.communicate, None, 30)
    assert proc.returncode == -signal.SIGKILL
    assert "ack" not in out  # the caller never got an answer either way

    left = await left_by(net[JPN])
    try:
        indexed = left.store.notices_for_document("PHL", "P0000042")
        queued = [r for q in [left.store.pending(PHL, 100)] for r in q]
        audited = left.leaves(LeafKind.NOTICE_SUBMITTED)
        if point == "applied":
            assert (indexed, queued, audited) == ([], [], [])
        else:
            assert len(indexed) == len(queued) == len(audited) == 1
            assert audited[0].message_id == queued[0].message_id.hex()
            assert indexed[0].kind == "COUNTERFEIT"
    finally:
        await close(left)

    if point == "committed":  # what was committed is delivered after the restart
        await net[PHL].start()
        jpn = await net[JPN].start()
        mid = queued[0].message_id
        await wait_for(lambda: settled(jpn.store, [mid]), what="delivery after the restart")
        assert jpn.store.message_status(mid)[0].outcome is Outcome.ACCEPTED
        assert net[PHL].running.services.index.lookup("PHL", "P0000042").records


# --- a keyed submission through the local API: the above + its idempotency record -----------


async def desk_token(nd) -> tuple[str, int]:
    secret = "xn_" + secrets.token_urlsafe(32)
    store = await open_store(nd.config())
    try:
        record = await store.create_token("narita-desk", "document_officer", secret, now_ms())
    finally:
        await store.close()
    return secret, record.id


async def post_keyed(nd, secret: str, key: str, notice: dict) -> tuple[int, bool, dict]:
    port = json.loads((nd.dir / "ready.json").read_text())["local_port"]
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/api/v1/notices", json=notice, headers=headers
        ) as resp,
    ):
        replayed = resp.headers.get("Idempotent-Replayed") == "true"
        return resp.status, replayed, await resp.json()


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_keyed_submission_killed_at_its_commit_and_retried_after_a_restart_is_one_notice(
    net, point
):
    secret, token_id = await desk_token(net[JPN])
    notice = {
        "kind": "COUNTERFEIT",
        "document": {"issuing_state": "PHL", "document_number": "P0000042"},
        "detection": {"place": "JPNRT", "detected_at_ms": now_ms() - 60_000},
    }
    proc = start_serve(net[JPN], "--crash-at", f"notice.submit:{point}", script=HELPER)
    try:
        with pytest.raises(aiohttp.ClientError):  # killed before it could answer
            await post_keyed(net[JPN], secret, "retry-me", notice)
        assert await asyncio.to_thread(killed, proc)
    finally:
        stop_process(proc)

    left = await left_by(net[JPN])
    try:  # the notice and its key: both or neither
        kept = left.store.idempotency_record(token_id, "retry-me")
        assert (kept is not None) == (point == "committed")
        assert left.store.count_notices() == (1 if point == "committed" else 0)
    finally:
        await close(left)

    proc = start_serve(net[JPN])  # PHL-DFA stays down: the copy stays queued
    try:
        status, replayed, answer = await post_keyed(net[JPN], secret, "retry-me", notice)
    finally:
        stop_process(proc)
    assert status == 202
    assert replayed == (point == "committed")  # committed: the first answer, kept with it

    left = await left_by(net[JPN])
    try:  # exactly one notice: indexed once, queued once, audited once
        [indexed] = left.store.notices_for_document("PHL", "P0000042")
        [queued] = left.store.pending(PHL, 100)
        [audited] = left.leaves(LeafKind.NOTICE_SUBMITTED)
        assert indexed.notice_id == answer["notice_id"]
        assert queued.message_id.hex() == audited.message_id == answer["messages"][0]["message_id"]
    finally:
        await close(left)


# --- receiving a batch: inbox rows + index rows + sent receipt + received leaves --------------


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_receiver_killed_at_its_commit_stores_indexes_and_audits_a_batch_whole_or_not_at_all(
    net, point
):
    receiver = start_serve(net[PHL], "--crash-at", f"batch.receive:{point}", script=HELPER)
    try:
        jpn = await net[JPN].open()
        ids = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0].message_id for i in range(4)]
        await jpn.start()
        assert await asyncio.to_thread(killed, receiver)

        left = await left_by(net[PHL])
        try:
            inbox = [r.message_id for r in left.store.inbox_feed(0, 100)]
            received = [left.leaves(LeafKind.ENVELOPE_RECEIVED, m) for m in ids]
            receipts = left.leaves(LeafKind.RECEIPT_SENT)
            indexed = left.store.count_notices()
            if point == "applied":
                assert (inbox, indexed, receipts) == ([], 0, [])
                assert received == [[], [], [], []]
            else:
                assert inbox == ids and indexed == 4 and len(receipts) == 1
                assert all(len(r) == 1 for r in received)
        finally:
            await close(left)

        receiver = start_serve(net[PHL])
        await wait_for(lambda: settled(jpn.store, ids), what="delivery after the restart")
    finally:
        stop_process(receiver)

    outcomes = {jpn.store.message_status(m)[0].outcome for m in ids}
    # Nothing was stored before COMMIT, so the resend is new; after COMMIT, a duplicate.
    assert outcomes == {Outcome.ACCEPTED if point == "applied" else Outcome.DUPLICATE}
    left = await left_by(net[PHL])
    try:
        assert [r.message_id for r in left.store.inbox_feed(0, 100)] == ids
        for m in ids:  # stored once, audited once as accepted (a resend: as duplicate)
            outcomes = [r.attrs["outcome"] for r in left.leaves(LeafKind.ENVELOPE_RECEIVED, m)]
            assert outcomes.count("accepted") == 1
            assert outcomes.count("duplicate") == (0 if point == "applied" else 1)
    finally:
        await close(left)


# --- settling a receipt: outbox outcomes + receipt row + envelope.sent leaves -----------------


@pytest.mark.parametrize("point", ["applied", "committed"])
async def test_a_sender_killed_while_settling_a_receipt_records_outcomes_and_leaves_together(
    net, point
):
    await net[PHL].start()
    jpn = await net[JPN].open()
    ids = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0].message_id for i in range(3)]
    await net[JPN].stop()
    sender = start_serve(net[JPN], "--crash-at", f"receipt.settle:{point}", script=HELPER)
    try:
        assert await asyncio.to_thread(killed, sender)
    finally:
        stop_process(sender)

    left = await left_by(net[JPN])
    try:
        states = [left.store.message_status(m)[0].state for m in ids]
        sent = [left.leaves(LeafKind.ENVELOPE_SENT, m) for m in ids]
        if point == "applied":
            assert states == [OutboxState.QUEUED] * 3 and sent == [[], [], []]
        else:
            assert states == [OutboxState.DELIVERED] * 3
            assert all(len(s) == 1 and s[0].attrs["outcome"] == "accepted" for s in sent)
    finally:
        await close(left)

    jpn = await net[JPN].start()
    await wait_for(lambda: settled(jpn.store, ids), what="settlement after the restart")
    for m in ids:
        [leaf] = [r for r in jpn.audit.query(kind=LeafKind.ENVELOPE_SENT, limit=100)
                  if r.record.message_id == m.hex()]  # fmt: skip
        row = jpn.store.message_status(m)[0]
        assert row.state is OutboxState.DELIVERED
        assert leaf.record.attrs["outcome"] == row.outcome.value


# --- an operator's change: its row and its leaf ----------------------------------------------


def _token_made(left: Left) -> tuple[bool, bool]:
    return (
        any(t.name == "crash-test" for t in left.store.list_tokens()),
        any(r.attrs.get("token") == "crash-test" for r in left.leaves(LeafKind.TOKEN_CREATED)),
    )


def _peer_paused(left: Left) -> tuple[bool, bool]:
    return (
        left.store.get_peer(PHL).paused,
        any(r.peer == PHL for r in left.leaves(LeafKind.PEER_PAUSED)),
    )


def _rotation_announced(left: Left) -> tuple[bool, bool]:
    return (
        bool(left.store.pending(PHL, 10)),
        bool(left.leaves(LeafKind.KEY_ROTATED)),
    )


def _dead_letter_retried(left: Left) -> tuple[bool, bool]:
    return (
        bool(left.store.pending(PHL, 10)),
        bool(left.leaves(LeafKind.DEAD_LETTER_RETRIED)),
    )


def _dead_letter_acknowledged(left: Left) -> tuple[bool, bool]:
    return (
        left.store.dead_letters() == [],
        bool(left.leaves(LeafKind.DEAD_LETTER_ACKNOWLEDGED)),
    )


async def _dead_letter(nd) -> None:
    """One message to PHL refused for good: outbox row 1, dead."""
    from exchange_node.store.records import OutboxItem, ReceiptRecord

    store = await open_store(nd.config())
    try:
        [row] = await store.enqueue([OutboxItem(PHL, b"\x01" * 16, b"env", b"pay", now_ms())])
        receipt = ReceiptRecord(batch_id=b"batch-1", receipt=b"signed", received_at=now_ms())
        await store.record_receipt(PHL, receipt, [(row, Outcome.REJECTED, "policy_denied")])
    finally:
        await store.close()


OPERATOR_CHANGES = {
    "token.create": (["token", "create", "--role", "auditor", "--name", "crash-test"], _token_made),
    "peer.update": (["peer", "pause", PHL], _peer_paused),
    "keys": (["keys", "rotate"], _rotation_announced),
    "outbox.retry_dead_letter": (["dead-letters", "retry", "1"], _dead_letter_retried),
    "outbox.acknowledge_dead_letter": (
        ["dead-letters", "acknowledge", "1"],
        _dead_letter_acknowledged,
    ),
}


@pytest.mark.parametrize("point", ["applied", "committed"])
@pytest.mark.parametrize("label", list(OPERATOR_CHANGES))
async def test_an_operator_command_killed_at_its_commit_records_its_change_and_leaf_together(
    net, label, point
):
    args, observe = OPERATOR_CHANGES[label]
    if args[0] == "dead-letters":
        await _dead_letter(net[JPN])
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange_node.cli", "--config", str(net[JPN].config_path), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**child_env(), "EXCHANGE_NODE_CRASH_AT": f"{label}:{point}"},
    )
    assert await asyncio.to_thread(killed, proc)

    left = await left_by(net[JPN])
    try:
        assert observe(left) == ((False, False) if point == "applied" else (True, True))
    finally:
        await close(left)


# --- a case opened and a step recorded: case rows + outbox rows + their leaves ---------------


@pytest.mark.parametrize("point", ["applied", "committed"])
@pytest.mark.parametrize("label", ["case.open", "case.event"])
async def test_a_case_step_killed_at_its_commit_is_stored_queued_and_audited_or_not_at_all(
    net, label, point
):
    proc = subprocess.Popen(
        [*HELPER, "--config", str(net[JPN].config_path), "--crash-at", f"{label}:{point}",
         "open-case", PHL],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), text=True,
    )  # fmt: skip
    out, _ = await asyncio.to_thread(proc.communicate, None, 30)
    assert proc.returncode == -signal.SIGKILL

    steps = 0 if label == "case.open" else 1  # committed before the one killed
    steps += point == "committed"
    left = await left_by(net[JPN])
    try:
        transitions = left.leaves(LeafKind.CASE_TRANSITION)
        queued = left.store.pending(PHL, 10)
        submitted = left.leaves(LeafKind.NOTICE_SUBMITTED)
        assert len(transitions) == len(queued) == len(submitted) == steps
        if steps:
            ref = transitions[0].attrs["case"]
            events = left.store.case_events(ref)
            assert len(events) == steps
            # Each stored step names the message it went out under, and it is queued.
            sent = [json.loads(e.message_ids)[PHL] for e in events]
            assert sent == [r.message_id.hex() for r in queued]
    finally:
        await close(left)
