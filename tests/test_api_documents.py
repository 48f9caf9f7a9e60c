"""Notices, lookups, the inbox feed and HTTP-level errors of the local API."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path

import aiohttp
import pytest
from test_api_support import Client, eventually, make_node, pin_all, token

from exchange_node.api.openapi import openapi_bytes, openapi_document

pytestmark = pytest.mark.usefixtures("node_store_backend")

DOC = {"issuing_state": "PHL", "document_number": "P1234567A", "document_type": "P"}
DETECTION = {"place": "JPNRT", "detected_at_ms": 1_700_000_000_000, "authority": "ISA Narita"}
# ICAO Doc 9303 Part 4 specimen passport (issuing state UTO), check digits valid.
TD3 = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10"


@pytest.fixture
async def pair(tmp_path):
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL", policies={"JPN-ISA": ["fraud_notice"]})
    await pin_all([jpn, phl])
    async with aiohttp.ClientSession() as session:
        yield (
            jpn,
            phl,
            Client(session, jpn, await token(jpn, "document_officer", "narita-desk")),
            Client(session, phl, await token(phl, "document_officer", "manila-desk")),
        )
    await jpn.stop()
    await phl.stop()


async def test_a_fraud_detection_is_accepted_at_once_and_delivered_with_a_signed_receipt(pair):
    jpn, phl, cj, cp = pair
    status, body = await cj.post(
        "/api/v1/notices", {"kind": "COUNTERFEIT", "document": DOC, "detection": DETECTION}
    )
    assert status == 202
    (msg,) = body["messages"]
    assert msg["recipient"] == "PHL-DFA"

    async def accepted():
        _, m = await cj.get(f"/api/v1/messages/{msg['message_id']}")
        return m["recipients"][0]["state"] == "accepted" and m["recipients"][0]

    delivery = await eventually(accepted)
    assert delivery["receipt"]["signed_receipt"]


async def test_a_recipient_whose_policy_forbids_the_kind_is_refused_naming_the_peer(pair):
    jpn, phl, cj, cp = pair
    await cj.post(
        "/api/v1/notices", {"kind": "COUNTERFEIT", "document": DOC, "detection": DETECTION}
    )
    await eventually(lambda: phl.services.index.count() == 1)
    status, body = await cp.post(
        "/api/v1/notices", {"kind": "REVOKED", "document": DOC, "recipients": ["JPN-ISA"]}
    )
    # PHL's policy for JPN allows fraud notices only.
    assert (status, body["code"], body["field"]) == (403, "policy_denied", "recipients")
    assert "JPN-ISA" in body["detail"]


async def test_a_status_notice_from_another_state_is_refused_with_code_and_field(pair):
    jpn, phl, cj, cp = pair
    status, body = await cj.post("/api/v1/notices", {"kind": "STOLEN", "document": DOC})
    assert (status, body["code"], body["field"]) == (422, "not_issuing_state", "kind")
    assert body["type"].endswith("not_issuing_state") and body["status"] == 422


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (
            {"kind": "STOLEN", "document": {**DOC, "issuing_state": "QQQ"}},
            "invalid_state_code",
            "document.issuing_state",
        ),
        (
            {
                "kind": "COUNTERFEIT",
                "document": {**DOC, "document_number": "P-1"},
                "detection": DETECTION,
            },
            "invalid_document_number",
            "document.document_number",
        ),
        (
            {
                "kind": "COUNTERFEIT",
                "document": {**DOC, "document_type": "Z"},
                "detection": DETECTION,
            },
            "invalid_document_type",
            "document.document_type",
        ),
        ({"kind": "COUNTERFEIT", "document": DOC}, "detection_required", "detection"),
        (
            {"kind": "COUNTERFEIT", "document": DOC, "detection": {**DETECTION, "place": " "}},
            "invalid_detection_place",
            "detection.place",
        ),
        (
            {
                "kind": "COUNTERFEIT",
                "document": DOC,
                "detection": {**DETECTION, "detected_at_ms": 9_000_000_000_000},
            },
            "detection_in_future",
            "detection.detected_at_ms",
        ),
        (
            {
                "kind": "COUNTERFEIT",
                "document": {**DOC, "mrz": TD3.replace("10", "11")},
                "detection": DETECTION,
            },
            "mrz_check_digit",
            None,
        ),
        (
            {
                "kind": "COUNTERFEIT",
                "document": {"issuing_state": "D", "document_number": "L898902C3", "mrz": TD3},
                "detection": DETECTION,
            },
            "invalid_state_code",
            None,
        ),
        ({"kind": "COUNTERFEIT", "detection": DETECTION}, "document_required", "document"),
        ({"kind": "WITHDRAWAL"}, "supersedes_required", "supersedes"),
        (
            {"kind": "WITHDRAWAL", "supersedes": "ab" * 16},
            "superseded_notice_not_found",
            "supersedes",
        ),
        ({"kind": "LOST", "document": DOC}, "invalid_field", "kind"),
        (
            {"kind": "COUNTERFEIT", "document": DOC, "detection": DETECTION, "colour": "red"},
            "invalid_field",
            None,
        ),
        (
            {
                "kind": "COUNTERFEIT",
                "document": DOC,
                "detection": DETECTION,
                "recipients": ["XYZ-NOPE"],
            },
            "unknown_peer",
            "recipients",
        ),
    ],
)
async def test_every_validation_error_has_its_code_and_field(pair, payload, code, field):
    jpn, phl, cj, cp = pair
    if code == "invalid_field" and payload["kind"] == "LOST":
        payload = {**payload, "kind": "MISLAID"}
    status, body = await cj.post("/api/v1/notices", payload)
    assert status in (400, 404, 409, 422), body
    assert body["code"] == code, body
    if field is not None:
        assert body["field"] == field
    else:
        assert body["field"]


async def test_an_mrz_that_names_another_document_is_refused(pair):
    jpn, phl, cj, cp = pair
    doc = {"issuing_state": "PHL", "document_number": "X1", "mrz": TD3.replace("UTO", "PHL")}
    status, body = await cj.post(
        "/api/v1/notices", {"kind": "FORGED", "document": doc, "detection": DETECTION}
    )
    assert status == 422
    assert body["field"].startswith("document.mrz") or body["field"].startswith("mrz")


async def test_a_correction_supersedes_and_the_history_keeps_both(pair):
    jpn, phl, cj, cp = pair
    _, first = await cp.post(
        "/api/v1/notices", {"kind": "STOLEN", "document": DOC, "recipients": "all"}
    )
    status, second = await cp.post(
        "/api/v1/notices",
        {
            "kind": "LOST",
            "document": DOC,
            "supersedes": first["notice_id"],
            "reason": "found to be lost",
            "recipients": "all",
        },
    )
    assert status == 202, second
    _, answer = await cp.get("/api/v1/documents/PHL/P1234567A?type=P")
    (record,) = answer["records"]
    assert record["status"] == "LOST"
    history = {h["notice"]["notice_id"]: h for h in record["history"]}
    assert history[first["notice_id"]]["superseded_by"] == second["notice_id"]
    assert history[first["notice_id"]]["in_effect"] is False
    status, again = await cp.post(
        "/api/v1/notices",
        {"kind": "WITHDRAWAL", "supersedes": first["notice_id"], "recipients": "all"},
    )
    assert (status, again["code"]) == (409, "already_superseded")


async def test_two_corrections_of_one_notice_at_once_are_not_both_taken(pair):
    """Both requests read the index before either committed: the rule is checked again
    in the transaction, so one correction is taken and the other refused, with nothing
    of it indexed or queued."""
    jpn, phl, cj, cp = pair
    status, first = await cp.post(
        "/api/v1/notices", {"kind": "STOLEN", "document": DOC, "recipients": "all"}
    )
    assert status == 202, first
    corrections = [
        {"kind": kind, "document": DOC, "supersedes": first["notice_id"], "reason": "checked",
         "recipients": "all"}
        for kind in ("LOST", "REVOKED")
    ]  # fmt: skip
    answers = await asyncio.gather(*(cp.post("/api/v1/notices", c) for c in corrections))
    assert sorted(status for status, _ in answers) == [202, 409]
    [(_, taken)] = [a for a in answers if a[0] == 202]
    [(_, refused)] = [a for a in answers if a[0] == 409]
    assert refused["code"] == "already_superseded"
    assert phl.store.notice_superseded_by(first["notice_id"]) == taken["notice_id"]
    _, answer = await cp.get("/api/v1/documents/PHL/P1234567A?type=P")
    (record,) = answer["records"]
    assert {h["notice"]["notice_id"] for h in record["history"]} == {
        first["notice_id"],
        taken["notice_id"],
    }


async def test_two_batches_correcting_one_notice_at_once_name_the_item_refused(pair):
    jpn, phl, cj, cp = pair
    status, first = await cp.post(
        "/api/v1/notices", {"kind": "STOLEN", "document": DOC, "recipients": "all"}
    )
    assert status == 202, first
    other = {"issuing_state": "PHL", "document_number": "P7654321B", "document_type": "P"}
    batches = [
        {"notices": [
            {"kind": "STOLEN", "document": other, "recipients": "all"},
            {"kind": kind, "document": DOC, "supersedes": first["notice_id"],
             "reason": "checked", "recipients": "all"},
        ]}
        for kind in ("LOST", "REVOKED")
    ]  # fmt: skip
    answers = await asyncio.gather(*(cp.post("/api/v1/notice-batches", b) for b in batches))
    assert sorted(status for status, _ in answers) == [202, 409]
    [(_, refused)] = [a for a in answers if a[0] == 409]
    assert (refused["code"], refused["field"]) == ("already_superseded", "notices[1].supersedes")


async def test_a_peer_status_notice_not_from_the_issuing_state_is_rejected_on_receipt(pair):
    jpn, phl, cj, cp = pair
    from exchange_node.config import NOTICE_KINDS
    from exchange_node.pb.exchange.v1 import notice_pb2

    await phl.directory.set_policy("JPN-ISA", NOTICE_KINDS)
    body = notice_pb2.Body(
        status_notice=notice_pb2.TravelDocumentStatusNotice(
            notice_id=b"\x01" * 16,
            document=notice_pb2.DocumentRef(issuing_state="PHL", document_number="P1"),
            status=notice_pb2.DOCUMENT_STATUS_STOLEN,
        )
    )
    (sent,) = await jpn.submit(body, ["PHL-DFA"])

    def rejected():
        rows = jpn.store.message_status(sent.message_id)
        return rows and rows[0].state == "dead" and rows[0].reason

    assert await eventually(rejected) == "invalid_content"
    assert phl.services.index.count() == 0


async def test_every_lookup_is_audited_with_the_token_name_and_a_keyed_hash(pair):
    jpn, phl, cj, cp = pair
    status, answer = await cj.get("/api/v1/documents/PHL/P1234567A")
    assert status == 200 and answer["known"] is False
    status, batch = await cj.post(
        "/api/v1/documents/lookup",
        {
            "documents": [
                {"issuing_state": "PHL", "document_number": f"P{i:07d}"} for i in range(300)
            ]
        },
    )
    assert status == 200 and len(batch["results"]) == 300
    leaves = jpn.audit.query(kind="document.lookup", limit=1000)
    assert len(leaves) == 301
    assert {leaf.record.actor for leaf in leaves} == {"narita-desk"}
    subject = jpn.services.subject_hash("PHL", "P1234567A")
    assert leaves[0].record.subject_hash == subject
    assert b"P1234567A" not in leaves[0].data
    key = jpn.config.data_path / "keys" / "lookup-audit.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def test_a_batch_with_one_bad_document_is_refused_naming_it(pair):
    jpn, phl, cj, cp = pair
    docs = [
        {"issuing_state": "PHL", "document_number": "P1"},
        {"issuing_state": "PHL", "document_number": "P 2"},
    ]
    status, body = await cj.post("/api/v1/documents/lookup", {"documents": docs})
    assert (status, body["code"], body["field"]) == (
        422,
        "invalid_document_number",
        "documents[1].document_number",
    )


async def test_a_batch_of_more_than_1000_documents_is_refused(pair):
    jpn, phl, cj, cp = pair
    docs = [{"issuing_state": "PHL", "document_number": "P1"}] * 1001
    status, body = await cj.post("/api/v1/documents/lookup", {"documents": docs})
    assert (status, body["code"], body["field"]) == (422, "invalid_field", "documents")


async def test_the_inbox_long_poll_wakes_when_a_notice_arrives(pair):
    jpn, phl, cj, cp = pair
    _, page = await cp.get("/api/v1/inbox")
    assert page["items"] == []
    poll = asyncio.create_task(cp.get(f"/api/v1/inbox?after={page['next_cursor']}&wait=30"))
    await asyncio.sleep(0.05)
    await cj.post("/api/v1/notices", {"kind": "IMPOSTOR", "document": DOC, "detection": DETECTION})
    status, page = await asyncio.wait_for(poll, 10)
    assert status == 200
    (item,) = page["items"]
    assert item["sender"] == "JPN-ISA" and item["notice"]["kind"] == "IMPOSTOR"
    _, later = await cp.get(f"/api/v1/inbox?after={page['next_cursor']}")
    assert later["items"] == []


async def test_a_forged_cursor_is_refused(pair):
    jpn, phl, cj, cp = pair
    status, body = await cp.get("/api/v1/inbox?after=bm9wZQ")
    assert (status, body["code"], body["field"]) == (400, "invalid_cursor", "after")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/api/v1/nothing-here", {}, 404, "not_found"),
        ("DELETE", "/api/v1/notices", {}, 405, "method_not_allowed"),
        (
            "POST",
            "/api/v1/notices",
            {"data": "{", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            "POST",
            "/api/v1/notices",
            {"data": "kind=STOLEN", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/documents/lookup",
            {"data": b"x" * (2 * 1024 * 1024), "headers": {"Content-Type": "application/json"}},
            413,
            "payload_too_large",
        ),
        ("GET", "/api/v1/messages/zz", {}, 422, "invalid_message_id"),
        ("GET", "/api/v1/messages/" + "0" * 32, {}, 404, "message_not_found"),
    ],
)
async def test_http_errors_are_problem_details(pair, method, path, kwargs, status, code):
    jpn, phl, cj, cp = pair
    kwargs = dict(kwargs)  # the parameter is shared by every run of the test
    headers = {**cj.headers, **kwargs.pop("headers", {})}
    async with cj.session.request(method, cj.base + path, headers=headers, **kwargs) as resp:
        assert resp.status == status
        assert resp.content_type == "application/problem+json"
        body = await resp.json(content_type=None)
    assert body["code"] == code and body["status"] == status
    assert set(body) == {"type", "title", "status", "detail", "code", "field"}


async def test_the_served_openapi_document_is_the_one_in_the_repository(pair):
    jpn, phl, cj, cp = pair
    async with cj.session.get(cj.base + "/api/v1/openapi.json") as resp:
        served = await resp.read()
    kept = (Path(__file__).parent.parent / "docs" / "openapi.json").read_bytes()
    assert served == kept == openapi_bytes(), (
        "regenerate: python -m exchange_node.api.openapi > docs/openapi.json"
    )


def test_openapi_descriptions_do_not_depend_on_how_msgspec_renders_docstrings():
    """Every description is cleaned text: no continuation indent, no edge blank lines,
    whatever a msgspec release does with a Struct's docstring."""

    def descriptions(value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "description" and isinstance(v, str):
                    yield v
                else:
                    yield from descriptions(v)
        elif isinstance(value, list):
            for v in value:
                yield from descriptions(v)

    found = list(descriptions(openapi_document()))
    assert any("\n" in d for d in found)  # multi-line docstrings are there to be cleaned
    assert [d for d in found if d != inspect.cleandoc(d)] == []


def test_openapi_normalisation_dedents_descriptions_at_any_depth():
    from exchange_node.api.openapi import _normalised

    rendered = {"a": [{"description": "First line,\n    continued.\n"}], "title": "  kept  "}
    assert _normalised(rendered) == {
        "a": [{"description": "First line,\ncontinued."}],
        "title": "  kept  ",
    }


def test_every_schema_the_openapi_document_refers_to_is_in_it():
    import re

    document = openapi_document()
    refs = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(document)))
    assert refs and refs <= set(document["components"]["schemas"])


async def test_a_notice_with_an_empty_recipient_list_is_refused_not_accepted(pair):
    jpn, phl, cj, cp = pair
    status, body = await cp.post(
        "/api/v1/notices", {"kind": "STOLEN", "document": DOC, "recipients": []}
    )
    assert (status, body["code"], body["field"]) == (422, "recipients_empty", "recipients")
    _, answer = await cp.get("/api/v1/documents/PHL/P1234567A?type=P")
    assert answer["known"] is False
