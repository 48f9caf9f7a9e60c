"""Idempotency-Key on the local API's submissions, and the batch submission of notices.

Real nodes on loopback (JPN-ISA submits, PHL-DFA is its pinned peer). Each test states
one behaviour and checks what the node stored: index rows, outbox rows, audit leaves and
idempotency records.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from test_api_support import Client, make_node, pin_all, token

from exchange_node.api.schemas import MAX_BATCH

pytestmark = pytest.mark.usefixtures("node_store_backend")

DOC = {"issuing_state": "PHL", "document_number": "P1234567A", "document_type": "P"}
DETECTION = {"place": "JPNRT", "detected_at_ms": 1_700_000_000_000, "authority": "ISA Narita"}


def fraud(number: str = "P1234567A") -> dict:
    return {"kind": "COUNTERFEIT", "document": {**DOC, "document_number": number},
            "detection": DETECTION}  # fmt: skip


class Answer:
    def __init__(self, status: int, headers, body: dict) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


async def call(
    client: Client, method: str, path: str, body=None, *, key: str | None = None, raw=None
) -> Answer:
    headers = dict(client.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    if raw is not None:
        headers["Content-Type"] = "application/json"
    async with client.session.request(
        method, client.base + path, json=body if raw is None else None, data=raw, headers=headers
    ) as resp:
        return Answer(resp.status, resp.headers, await resp.json(content_type=None))


def outbox_rows(node) -> int:
    return sum(q.depth + q.delivered + q.dead for q in node.store.queue_stats())


def token_id(node, name: str = "narita-desk") -> int:
    return next(t.id for t in node.store.list_tokens() if t.name == name)


def leaves(node, kind: str) -> list:
    return [leaf.record for leaf in node.audit.query(kind=kind, limit=10_000)]


@pytest.fixture
async def net(tmp_path):
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL")
    await pin_all([jpn, phl])
    async with aiohttp.ClientSession() as session:
        desk = Client(session, jpn, await token(jpn, "document_officer", "narita-desk"))
        yield jpn, phl, desk, session
    await jpn.stop()
    await phl.stop()


# --- one notice, one key -------------------------------------------------------------------


async def test_a_retry_with_the_same_key_and_body_gets_the_first_answer_and_submits_nothing(net):
    jpn, _, desk, _ = net
    first = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    again = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")

    assert (first.status, first.replayed) == (202, False)
    assert (again.status, again.replayed, again.body) == (202, True, first.body)
    assert jpn.services.index.count() == 1
    assert outbox_rows(jpn) == 1
    assert len(leaves(jpn, "notice.submitted")) == 1


async def test_the_same_body_in_other_spacing_and_key_order_is_the_same_request(net):
    _, _, desk, _ = net
    first = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    reordered = json.dumps(dict(reversed(list(fraud().items()))), indent=3).encode()
    again = await call(desk, "POST", "/api/v1/notices", key="k-1", raw=reordered)
    assert (again.status, again.replayed, again.body) == (202, True, first.body)


async def test_a_quoted_key_is_the_same_key_as_the_bare_one(net):
    _, _, desk, _ = net
    first = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    again = await call(desk, "POST", "/api/v1/notices", fraud(), key='"k-1"')
    assert (again.replayed, again.body) == (True, first.body)


async def test_the_same_key_with_another_body_is_refused_422_and_audited(net):
    jpn, _, desk, _ = net
    await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    other = await call(desk, "POST", "/api/v1/notices", fraud("P7654321B"), key="k-1")

    assert other.status == 422
    assert (other.body["code"], other.body["field"]) == (
        "idempotency_key_reused",
        "Idempotency-Key",
    )
    assert jpn.services.index.count() == 1 and outbox_rows(jpn) == 1
    (refused,) = leaves(jpn, "request.refused")
    assert (refused.actor, refused.reason) == ("narita-desk", "idempotency_key_reused")
    assert refused.attrs == {"operation": "submitNotice"}


async def test_the_same_key_on_another_endpoint_is_another_request_and_refused(net):
    jpn, _, desk, _ = net
    await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    other = await call(desk, "POST", "/api/v1/notice-batches", {"notices": [fraud()]}, key="k-1")
    assert (other.status, other.body["code"]) == (422, "idempotency_key_reused")
    assert jpn.services.index.count() == 1


async def test_another_tokens_same_key_is_another_key(net):
    jpn, _, desk, session = net
    other_desk = Client(session, jpn, await token(jpn, "document_officer", "kansai-desk"))
    first = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    second = await call(other_desk, "POST", "/api/v1/notices", fraud(), key="k-1")

    assert (second.status, second.replayed) == (202, False)
    assert second.body["notice_id"] != first.body["notice_id"]
    assert jpn.services.index.count() == 2 and outbox_rows(jpn) == 2


@pytest.mark.parametrize(
    "key", ["", '""', "x" * 256, "two words", "a/b", '"unterminated', "ключ"], ids=repr
)
async def test_a_malformed_key_is_refused_400_audited_and_nothing_is_submitted(net, key):
    jpn, _, desk, _ = net
    answer = await call(desk, "POST", "/api/v1/notices", fraud(), key=key)

    assert answer.status == 400
    assert (answer.body["code"], answer.body["field"]) == (
        "idempotency_key_invalid",
        "Idempotency-Key",
    )
    assert jpn.services.index.count() == 0 and outbox_rows(jpn) == 0
    (refused,) = leaves(jpn, "request.refused")
    assert refused.reason == "idempotency_key_invalid"


async def test_a_key_of_255_characters_is_accepted(net):
    _, _, desk, _ = net
    answer = await call(desk, "POST", "/api/v1/notices", fraud(), key="k" * 255)
    assert answer.status == 202


async def test_a_refused_request_keeps_no_key_so_the_corrected_request_may_use_it(net):
    jpn, _, desk, _ = net
    refused = await call(desk, "POST", "/api/v1/notices", {"kind": "STOLEN", "document": DOC},
                         key="k-1")  # fmt: skip
    assert (refused.status, refused.body["code"]) == (422, "not_issuing_state")
    assert jpn.store.idempotency_record(token_id(jpn), "k-1") is None

    corrected = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    assert (corrected.status, corrected.replayed) == (202, False)
    assert jpn.services.index.count() == 1


async def test_duplicates_in_flight_are_serialised_and_the_later_gets_the_first_answer(net):
    jpn, _, desk, _ = net
    answers = await asyncio.gather(
        *(call(desk, "POST", "/api/v1/notices", fraud(), key="k-1") for _ in range(5))
    )

    assert {a.status for a in answers} == {202}
    assert sorted(a.replayed for a in answers) == [False, True, True, True, True]
    assert len({a.body["notice_id"] for a in answers}) == 1
    assert jpn.services.index.count() == 1 and outbox_rows(jpn) == 1


async def test_a_correction_retried_after_it_succeeded_is_replayed_not_refused(net):
    jpn, _, desk, _ = net
    original = await call(desk, "POST", "/api/v1/notices", fraud())
    correction = {**fraud(), "kind": "FORGED", "supersedes": original.body["notice_id"]}
    first = await call(desk, "POST", "/api/v1/notices", correction, key="fix-1")
    # Sent again, the correction itself would be refused (already superseded): the key
    # answers before any rule runs.
    again = await call(desk, "POST", "/api/v1/notices", correction, key="fix-1")
    assert (first.status, again.status, again.replayed) == (202, 202, True)
    assert again.body == first.body
    assert jpn.services.index.count() == 2


async def test_the_record_of_a_keyed_submission_is_stored_with_its_answer(net):
    jpn, _, desk, _ = net
    first = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    record = jpn.store.idempotency_record(token_id(jpn), "k-1")
    assert (record.method, record.path, record.status) == ("POST", "/api/v1/notices", 202)
    assert json.loads(record.response) == first.body


# --- GET by key ------------------------------------------------------------------------------


async def test_get_by_key_tells_what_the_request_did(net):
    _, _, desk, _ = net
    first = await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    found = await call(desk, "GET", "/api/v1/idempotency-keys/k-1")

    assert found.status == 200
    body = found.body
    assert (body["key"], body["method"], body["path"]) == ("k-1", "POST", "/api/v1/notices")
    assert (body["status"], body["response"]) == (202, first.body)
    assert len(body["request_sha256"]) == 64 and body["created_at_ms"] > 0


async def test_get_by_an_unknown_key_is_404(net):
    _, _, desk, _ = net
    missing = await call(desk, "GET", "/api/v1/idempotency-keys/never-used")
    assert (missing.status, missing.body["code"]) == (404, "idempotency_key_not_found")


async def test_get_by_another_tokens_key_is_404(net):
    jpn, _, desk, session = net
    other_desk = Client(session, jpn, await token(jpn, "document_officer", "kansai-desk"))
    await call(desk, "POST", "/api/v1/notices", fraud(), key="k-1")
    missing = await call(other_desk, "GET", "/api/v1/idempotency-keys/k-1")
    assert (missing.status, missing.body["code"]) == (404, "idempotency_key_not_found")


async def test_get_by_a_malformed_key_is_400(net):
    _, _, desk, _ = net
    bad = await call(desk, "GET", "/api/v1/idempotency-keys/" + "x" * 256)
    assert (bad.status, bad.body["code"]) == (400, "idempotency_key_invalid")


# --- cases -----------------------------------------------------------------------------------


async def test_a_case_opened_and_stepped_twice_with_the_same_keys_is_one_case_one_step(net):
    jpn, _, _, session = net
    officer = Client(session, jpn, await token(jpn, "case_officer", "shelter-desk"))
    opening = {"participants": [{"node_id": "PHL-DFA", "role": "ORIGIN_STATE"}]}
    opened = [await call(officer, "POST", "/api/v1/cases", opening, key="open-1") for _ in "ab"]
    assert [(a.status, a.replayed) for a in opened] == [(201, False), (201, True)]
    assert opened[0].body == opened[1].body
    ref = opened[0].body["case_ref"]

    step = {"type": "record_consent"}
    steps = [
        await call(officer, "POST", f"/api/v1/cases/{ref}/events", step, key="consent-1")
        for _ in "ab"
    ]
    assert [(a.status, a.replayed) for a in steps] == [(202, False), (202, True)]
    assert steps[0].body == steps[1].body and steps[0].body["sequence"] == 2

    case = await call(officer, "GET", f"/api/v1/cases/{ref}?purpose=case_management")
    assert [e["type"] for e in case.body["timeline"]] == ["open_case", "record_consent"]
    assert outbox_rows(jpn) == 2  # one copy per step, to PHL-DFA


# --- batches ---------------------------------------------------------------------------------


async def test_a_batch_is_indexed_queued_and_audited_whole(net):
    jpn, _, desk, _ = net
    batch = {"notices": [fraud(f"P{n:07d}A") for n in range(3)]}
    answer = await call(desk, "POST", "/api/v1/notice-batches", batch)

    assert answer.status == 202
    assert [n["kind"] for n in answer.body["notices"]] == ["COUNTERFEIT"] * 3
    assert [len(n["messages"]) for n in answer.body["notices"]] == [1, 1, 1]
    assert jpn.services.index.count() == 3 and outbox_rows(jpn) == 3
    assert len(leaves(jpn, "notice.submitted")) == 3


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        ({"kind": "COUNTERFEIT", "detection": DETECTION}, "document_required",
         "notices[17].document"),
        ({**fraud(), "document": {**DOC, "issuing_state": "QQQ"}}, "invalid_state_code",
         "notices[17].document.issuing_state"),
        ({"kind": "STOLEN", "document": DOC}, "not_issuing_state", "notices[17].kind"),
        ({**fraud(), "recipients": ["THA-IMM"]}, "unknown_peer", "notices[17].recipients"),
        ({**fraud(), "detection": {**DETECTION, "detected_at_ms": "soon"}}, "invalid_field",
         "notices[17].detection.detected_at_ms"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)  # fmt: skip
async def test_a_batch_with_a_bad_notice_in_the_middle_stores_nothing_and_names_it(
    net, bad, code, field
):
    jpn, _, desk, _ = net
    notices = [fraud(f"P{n:07d}A") for n in range(30)]
    notices[17] = bad
    answer = await call(desk, "POST", "/api/v1/notice-batches", {"notices": notices}, key="b-1")

    assert (answer.status, answer.body["code"], answer.body["field"]) == (422, code, field)
    assert jpn.services.index.count() == 0
    assert outbox_rows(jpn) == 0
    assert leaves(jpn, "notice.submitted") == []
    assert jpn.store.idempotency_record(token_id(jpn), "b-1") is None


async def test_two_notices_of_a_batch_cannot_supersede_the_same_notice(net):
    jpn, _, desk, _ = net
    original = await call(desk, "POST", "/api/v1/notices", fraud())
    fix = {**fraud(), "kind": "FORGED", "supersedes": original.body["notice_id"]}
    answer = await call(desk, "POST", "/api/v1/notice-batches", {"notices": [fix, fix]})
    assert (answer.status, answer.body["code"]) == (409, "already_superseded")
    assert answer.body["field"] == "notices[1].supersedes"
    assert jpn.services.index.count() == 1


async def test_a_batch_over_the_maximum_is_refused_whole(net):
    jpn, _, desk, _ = net
    notices = [fraud(f"P{n:07d}A") for n in range(MAX_BATCH + 1)]
    answer = await call(desk, "POST", "/api/v1/notice-batches", {"notices": notices})
    assert (answer.status, answer.body["code"], answer.body["field"]) == (
        422,
        "invalid_field",
        "notices",
    )
    assert jpn.services.index.count() == 0


async def test_a_keyed_batch_retried_is_replayed_whole(net):
    jpn, _, desk, _ = net
    batch = {"notices": [fraud(f"P{n:07d}A") for n in range(5)]}
    first = await call(desk, "POST", "/api/v1/notice-batches", batch, key="b-1")
    again = await call(desk, "POST", "/api/v1/notice-batches", batch, key="b-1")
    assert (again.status, again.replayed, again.body) == (202, True, first.body)
    assert jpn.services.index.count() == 5 and outbox_rows(jpn) == 5
