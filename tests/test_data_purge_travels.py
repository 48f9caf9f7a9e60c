"""Purges travel: an erasure on one node reaches every participant that received the
case, which destroys its copy and confirms with its receipt. Two real nodes on loopback."""

from __future__ import annotations

import sqlite3
import time

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.domain.repatriation import EventType, Role
from exchange_node.node import DATABASE
from exchange_node.services.cases import Participant, PersonalData
from tests.node_helpers import make_net, settled, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"
NAME = "Maria Santos Dela Cruz"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def _shared_case(net) -> str:
    jpn, phl = net[JPN].running, net[PHL].running
    case, ids = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name=NAME), "from the shelter",
        actor="officer-1",
    )  # fmt: skip
    ref = case.case_ref
    await wait_for(lambda: settled(jpn.store, list(ids.values())), what="delivery")
    _, more = await jpn.services.cases.add_event(ref, EventType.RECORD_CONSENT, "signed", actor="o")
    await wait_for(lambda: settled(jpn.store, list(more.values())), what="delivery")
    assert phl.services.cases.get(ref).personal.full_name == NAME
    assert phl.services.cases.get(ref).events[1].note == "signed"
    return ref


async def test_an_erasure_reaches_the_peer_which_purges_and_confirms(net):
    jpn = await net[JPN].start()
    phl = await net[PHL].start()
    ref = await _shared_case(net)
    received_on_phl = [
        e.received_message_id for e in phl.services.cases.get(ref).events if e.received_message_id
    ]
    assert any(phl.store.get_inbox(JPN, bytes.fromhex(m)) for m in received_on_phl)

    secret = "xn_" + "o" * 40
    await jpn.store.create_token("dpo-1", "operator", secret, int(time.time() * 1000))
    officer = "xn_" + "c" * 40
    await jpn.store.create_token("officer-1", "case_officer", officer, int(time.time() * 1000))
    base = f"http://127.0.0.1:{jpn.local_port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/api/v1/cases/{ref}/erasure", json={"reason": "erasure_request"},
            headers={"Authorization": f"Bearer {secret}"},
        ) as resp:  # fmt: skip
            assert resp.status == 200
            purge = await resp.json()
        [notice] = purge["confirmations"]
        assert notice["recipient"] == PHL

        async def confirmed():
            async with http.get(
                f"{base}/api/v1/cases/{ref}?purpose=case_management",
                headers={"Authorization": f"Bearer {officer}"},
            ) as resp:
                [c] = (await resp.json())["purged"]["confirmations"]
                return c if c["state"] == "accepted" and c["receipt_id"] else None

        confirmation = await wait_for(confirmed, what="the peer's confirmation")
    assert confirmation["message_id"] == notice["message_id"]

    # The peer destroyed its copy: no key, no content, no clear inbox copy; audited with
    # the sender as the approver.
    kept = phl.services.cases.get(ref)
    assert kept.personal is None and all(e.note == "" for e in kept.events)
    assert kept.purged.reason == "erasure_request" and kept.purged.approver == JPN
    assert phl.store.record_key(f"case:{ref}") is None
    assert not any(phl.store.get_inbox(JPN, bytes.fromhex(m)) for m in received_on_phl)
    [leaf] = phl.audit.query(kind=LeafKind.RECORD_PURGED)
    assert (leaf.record.actor, leaf.record.peer, leaf.record.attrs["reason"]) == (
        JPN, JPN, "erasure_request",
    )  # fmt: skip
    raw = b"".join(
        p.read_bytes() for p in net[PHL].data.glob(DATABASE + "*") if not p.name.endswith("-shm")
    )
    assert NAME.encode() not in raw
    with sqlite3.connect(net[PHL].data / DATABASE) as db:
        assert db.execute("SELECT personal FROM cases WHERE case_ref = ?", (ref,)).fetchone() == (
            None,
        )
    assert jpn.audit.verify().ok and phl.audit.verify().ok


async def test_a_peer_under_a_legal_hold_refuses_the_purge_and_the_sender_sees_it(net):
    jpn = await net[JPN].start()
    phl = await net[PHL].start()
    ref = await _shared_case(net)
    await phl.services.retention.place_hold(ref, None, "court order 2026/17", actor="dpo-2")
    purge = await jpn.services.cases.erase(ref, "withdrawn_by_source", approver="dpo-1")
    [(peer, mid, _)] = jpn.services.cases.confirmations(purge)
    await wait_for(lambda: settled(jpn.store, [bytes.fromhex(mid)]), what="the answer")
    [(_, _, row)] = jpn.services.cases.confirmations(purge)
    assert (peer, row.state.value, row.reason) == (PHL, "dead", "policy_denied")
    assert phl.services.cases.get(ref).personal.full_name == NAME  # held: untouched


async def test_retention_purges_stay_local(net):
    jpn = await net[JPN].start()
    await net[PHL].start()
    ref = await _shared_case(net)
    purge = await jpn.services.cases.erase(ref, "retention", approver="retention")
    assert jpn.services.cases.confirmations(purge) == []
    assert net[PHL].running.services.cases.get(ref).personal.full_name == NAME
