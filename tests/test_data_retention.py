"""The retention schedule on a controlled clock, and legal holds.

Real nodes on loopback; the clock of the node under test is set by the test and the
retention job is run by it, so each record type is seen purged exactly when due and not
a millisecond before, and nothing under a legal hold is touched.
"""

from __future__ import annotations

import time
import types

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.domain.repatriation import EventType, Role
from exchange_node.node import Node
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.services.cases import Participant, PersonalData
from tests.node_helpers import make_net, settled, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    await net[PHL].start()
    yield net
    await net.stop_all()


def at(node: Node, ms: int) -> None:
    """Set the node's clock to ``ms`` (the retention job reads nothing else)."""
    node.clock = lambda: ms


async def _case(node: Node, *, end: bool) -> str:
    case, ids = await node.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name="A. Person"), "note",
        actor="officer-1",
    )  # fmt: skip
    if end:
        await node.services.cases.add_event(case.case_ref, EventType.CANCEL, "", actor="o-1")
    await wait_for(lambda: settled(node.store, list(ids.values())), what="delivery")
    return case.case_ref


async def test_a_finished_case_is_purged_exactly_when_due_and_a_held_one_is_not(net):
    jpn = await net[JPN].start()
    due_one, held, running = [await _case(jpn, end=e) for e in (True, True, False)]
    await jpn.services.retention.place_hold(held, None, "court order 2026/17", actor="dpo-1")
    cfg = jpn.config.retention
    due = jpn.services.retention.case_due_at(due_one)
    ended = jpn.services.cases.get(due_one).state.timeline[-1].at_ms
    assert due == ended + (cfg.case_monitoring_days + cfg.case_after_monitoring_days) * DAY_MS
    assert jpn.services.retention.case_due_at(running) is None

    at(jpn, due - 1)
    report = await jpn.services.retention.run()
    assert report.cases == [] and jpn.services.cases.get(due_one).personal is not None

    at(jpn, due + 60_000)  # both finished cases are due; one is held
    report = await jpn.services.retention.run()
    assert report.cases == [due_one]
    assert report.held == [f"case:{held}"]
    assert jpn.services.cases.get(due_one).purged.reason == "retention"
    assert jpn.services.cases.get(due_one).personal is None
    assert jpn.services.cases.get(held).personal.full_name == "A. Person"
    assert jpn.services.cases.get(running).personal.full_name == "A. Person"
    with pytest.raises(Exception) as refused:  # an erasure is refused under the hold too
        await jpn.services.cases.erase(held, "erasure_request", approver="dpo-1")
    assert getattr(refused.value, "code", "") == "record_on_hold"
    [purged] = jpn.audit.query(kind=LeafKind.RECORD_PURGED)
    assert (purged.record.actor, purged.record.attrs["reason"]) == ("retention", "retention")

    await jpn.services.retention.release_hold(held, None, actor="dpo-1")
    assert (await jpn.services.retention.run()).cases == [held]
    holds = [leaf.record for leaf in jpn.audit.query(kind=LeafKind.RECORD_HOLD)]
    # Named by keyed hash only: a reference beside it would link the hashed reads.
    held_hash = jpn.services.case_subject_hash(held)
    assert [(h.actor, h.attrs["action"], h.attrs["record"], h.subject_hash) for h in holds] == [
        ("dpo-1", "placed", "", held_hash),
        ("dpo-1", "released", "", held_hash),
    ]
    assert jpn.audit.verify().ok


async def _notice(http, base: str, token: str, body: dict) -> str:
    async with http.post(
        f"{base}/api/v1/notices", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        answer = await resp.json()
        assert resp.status == 202, answer
        return answer["notice_id"]


def _fraud(number: str) -> dict:
    return {
        "kind": "COUNTERFEIT",
        "document": {"issuing_state": "PHL", "document_number": number},
        "detection": {"place": "JPNRT", "detected_at_ms": int(time.time() * 1000) - 60_000},
    }


def _stolen(number: str) -> dict:
    return {"kind": "STOLEN", "document": {"issuing_state": "JPN", "document_number": number}}


async def test_document_notices_go_when_withdrawn_fraud_detections_after_five_years(net):
    jpn = await net[JPN].start()
    secret = "xn_" + "d" * 40
    await jpn.store.create_token("narita", "document_officer", secret, int(time.time() * 1000))
    base = f"http://127.0.0.1:{jpn.local_port}"
    async with aiohttp.ClientSession() as http:
        fraud = await _notice(http, base, secret, _fraud("P7654321"))
        fraud_held = await _notice(http, base, secret, _fraud("P0000001"))
        stolen = await _notice(http, base, secret, _stolen("TK1234567"))
        withdrawal = await _notice(
            http, base, secret,
            {**_stolen("TK1234567"), "kind": "WITHDRAWAL", "supersedes": stolen},
        )  # fmt: skip
        kept = await _notice(http, base, secret, _stolen("TK7654321"))
    await jpn.services.retention.place_hold(
        None, ("PHL", "P0000001"), "investigation 88", actor="dpo-1"
    )
    index = jpn.services.index

    # Withdrawn by its source: gone at the next run, with the withdrawal itself.
    report = await jpn.services.retention.run()
    assert sorted(report.notices) == sorted([stolen, withdrawal])
    assert index.lookup("JPN", "TK1234567").records == ()
    assert jpn.store.notice(fraud) is not None and jpn.store.notice(kept) is not None

    # Fraud detections: five years after issue, to the millisecond.
    due = jpn.store.notice(fraud).issued_at_ms + jpn.config.retention.fraud_notice_days * DAY_MS
    at(jpn, due - 1)
    assert (await jpn.services.retention.run()).notices == []
    at(jpn, due + 60_000)
    report = await jpn.services.retention.run()
    assert report.notices == [fraud]
    assert report.held == [f"document:{jpn.services.subject_hash('PHL', 'P0000001')}"]
    assert index.lookup("PHL", "P7654321").records == ()
    assert jpn.store.notice(fraud_held) is not None  # under the hold
    assert index.lookup("JPN", "TK7654321").records  # in effect: kept (review, not purge)
    reasons = {
        leaf.record.attrs["record"]: leaf.record.attrs["reason"]
        for leaf in jpn.audit.query(kind=LeafKind.RECORD_PURGED)
    }
    assert reasons == {
        stolen: "withdrawn_by_source",
        withdrawal: "withdrawn_by_source",
        fraud: "retention",
    }
    assert jpn.store.record_purge(f"notice:{fraud}").reason == "retention"
    assert jpn.audit.verify().ok


async def test_holds_through_the_api_are_listed_and_refused_twice(net):
    jpn = await net[JPN].start()
    ref = await _case(jpn, end=False)
    secret = "xn_" + "o" * 40
    await jpn.store.create_token("dpo-1", "operator", secret, int(time.time() * 1000))
    base = f"http://127.0.0.1:{jpn.local_port}"
    auth = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as http:
        body = {"case_ref": ref, "reason": "court order 2026/17"}
        async with http.post(f"{base}/api/v1/holds", json=body, headers=auth) as resp:
            assert resp.status == 201
            hold = await resp.json()
        async with http.post(f"{base}/api/v1/holds", json=body, headers=auth) as resp:
            assert (resp.status, (await resp.json())["code"]) == (409, "hold_exists")
        async with http.post(f"{base}/api/v1/holds", json={"reason": "x"}, headers=auth) as resp:
            assert (resp.status, (await resp.json())["code"]) == (422, "hold_target_required")
        async with http.get(f"{base}/api/v1/holds", headers=auth) as resp:
            assert (await resp.json())["holds"] == [hold]
        async with http.post(
            f"{base}/api/v1/holds/release", json={"case_ref": ref}, headers=auth
        ) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/api/v1/holds", headers=auth) as resp:
            assert (await resp.json())["holds"] == []
    assert hold["record"] == f"case:{ref}" and hold["placed_by"] == "dpo-1"


# --- periodic review -------------------------------------------------------------------------


def _gauge(node: Node, record_type: str) -> float:
    return node.metrics.reviews_due.labels(record_type)._value.get()


async def test_records_come_due_for_review_and_are_kept_with_a_reason_or_purged(net, capsys):
    jpn = await net[JPN].start()
    kept, erased = [await _case(jpn, end=False) for _ in range(2)]
    secret = "xn_" + "d" * 40
    await jpn.store.create_token("narita", "document_officer", secret, int(time.time() * 1000))
    async with aiohttp.ClientSession() as http:
        notice = await _notice(
            http, f"http://127.0.0.1:{jpn.local_port}", secret, _stolen("TK1234567")
        )
    opened = jpn.services.cases.get(kept).opened_at
    cfg = jpn.config.retention
    case_due = max(opened, jpn.services.cases.get(erased).opened_at) + cfg.case_review_days * DAY_MS
    notice_due = jpn.store.notice(notice).issued_at_ms + cfg.document_review_days * DAY_MS

    at(jpn, opened + cfg.case_review_days * DAY_MS - 1)
    assert jpn.services.retention.reviews_due() == []
    at(jpn, case_due)
    await jpn.run_retention()
    due = sorted(r.record_id for r in jpn.services.retention.reviews_due())
    assert due == sorted([f"case:{kept}", f"case:{erased}"])
    assert _gauge(jpn, "case") == 2 and _gauge(jpn, "document_notice") == 0

    # Through the API: status counts them, keep one with a reason, erase the other.
    operator = "xn_" + "o" * 40
    await jpn.store.create_token("dpo-1", "operator", operator, int(time.time() * 1000))
    base = f"http://127.0.0.1:{jpn.local_port}"
    auth = {"Authorization": f"Bearer {operator}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/v1/status", headers=auth) as resp:
            assert (await resp.json())["reviews_due"] == 2
        async with http.post(
            f"{base}/api/v1/reviews/keep", headers=auth,
            json={"record": f"case:{kept}", "reason": "monitoring continues until June"},
        ) as resp:  # fmt: skip
            assert resp.status == 200
            assert [r["record"] for r in (await resp.json())["reviews"]] == [f"case:{erased}"]
        async with http.post(
            f"{base}/api/v1/reviews/keep", headers=auth, json={"record": "case:JPN-2026-AAAAAAAA", "reason": "x"}
        ) as resp:  # fmt: skip
            assert (resp.status, (await resp.json())["code"]) == (404, "record_not_under_review")
        async with http.post(
            f"{base}/api/v1/cases/{erased}/erasure", headers=auth, json={"reason": "retention"}
        ) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/api/v1/reviews", headers=auth) as resp:
            assert (await resp.json())["reviews"] == []
    assert _gauge(jpn, "case") == 0
    [reviewed] = jpn.audit.query(kind=LeafKind.RECORD_REVIEWED)
    assert (reviewed.record.actor, reviewed.record.attrs) == (
        "dpo-1", {"decision": "keep", "record_type": "case", "record": ""},
    )  # fmt: skip
    assert reviewed.record.subject_hash == jpn.services.case_subject_hash(kept)
    assert b"June" not in reviewed.data  # the reason is kept with the review, not in the log

    # A year after it was kept, the case is due again; the notice after five years.
    at(jpn, jpn.now_ms() + cfg.case_review_days * DAY_MS)
    assert [r.record_id for r in jpn.services.retention.reviews_due()] == [f"case:{kept}"]
    at(jpn, max(notice_due, jpn.now_ms()))
    due = {r.record_id: r for r in jpn.services.retention.reviews_due()}
    assert due[f"notice:{notice}"].document == ("JPN", "TK1234567")
    assert due[f"notice:{notice}"].due_at == notice_due


async def test_the_retention_schedule_runs_at_start_up_on_a_machine_just_booted(
    net, monkeypatch
) -> None:
    # The schedule's clock is the monotonic one, which starts near 0 when the machine
    # boots: a node started then runs retention at once all the same, not an interval
    # later.
    import exchange_node.node as node_module

    booted = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if k[0] != "_"})
    booted.monotonic = lambda: 10.0
    monkeypatch.setattr(node_module, "time", booted)
    jpn = await net[JPN].start()
    runs: list[object] = []
    run_retention = jpn.run_retention

    async def counted():
        runs.append(await run_retention())
        return runs[-1]

    jpn.run_retention = counted
    await wait_for(lambda: runs, timeout=10, what="the start-up retention run")
