"""Subject access reports: what a node holds about a case or a document, signed, found
through keyed hashes, with every access and recipient; refusals recorded. Real nodes."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.domain.repatriation import Role
from exchange_node.services.cases import Participant, PersonalData
from exchange_node.subject_report import report_digest
from tests.node_helpers import make_net, run_cli, settled, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"
NAME = "Maria Santos Dela Cruz"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    await net[PHL].start()
    await net[JPN].start()
    yield net
    await net.stop_all()


async def _post(node, token: str, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{node.local_port}{path}", json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:  # fmt: skip
        return resp.status, await resp.json()


async def _operator(node) -> str:
    secret = "xn_" + "o" * 40
    await node.store.create_token("dpo-1", "operator", secret, int(time.time() * 1000))
    return secret


async def test_a_case_report_lists_what_is_held_who_read_it_and_who_received_it(net, tmp_path):
    jpn = net[JPN].running
    case, ids = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name=NAME, nationality="PHL"),
        "referred by the shelter", actor="officer-1",
    )  # fmt: skip
    ref = case.case_ref
    await wait_for(lambda: settled(jpn.store, list(ids.values())), what="delivery")
    await jpn.services.cases.read(ref, actor="officer-1", purpose="case_management")
    await jpn.services.retention.place_hold(ref, None, "court order", actor="dpo-1")
    token = await _operator(jpn)

    status, answer = await _post(
        jpn, token, "/api/v1/subject-reports", {"case_ref": ref, "purpose": "subject_access"}
    )
    assert status == 201, answer
    report = answer["report"]
    assert report["subject"] == {"type": "case", "case_ref": ref}
    [personal] = [h for h in report["held"] if h["category"] == "identity and personal data"]
    assert personal == {
        "category": "identity and personal data",
        "source": JPN,
        "content": {"full_name": NAME, "nationality": "PHL"},
    }
    [step] = [h for h in report["held"] if h["category"] == "case step"]
    assert step["content"]["note"] == "referred by the shelter"
    [recipient] = report["recipients"]
    assert recipient["peer"] == PHL and recipient["outcome"] == "accepted"
    assert recipient["message_id"] == ids[PHL].hex() and len(recipient["receipt_sha256"]) == 64
    reads = [(a["actor"], a["purpose"], a["operation"]) for a in report["accesses"]]
    assert reads == [
        ("officer-1", "case_management", "read"),
        ("dpo-1", "subject_access", "subject_report"),  # this report's own read
    ]
    assert report["purposes"] == ["case_management", "subject_access"]
    assert report["holds"][0]["placed_by"] == "dpo-1"
    assert report["retention"]["due_at_ms"] is None  # the case runs
    assert report["retention"]["review_due_at_ms"] > case.opened_at
    assert NAME in answer["text"] and "officer-1" in answer["text"]

    [leaf] = jpn.audit.query(kind=LeafKind.SUBJECT_REPORT)
    assert leaf.record.attrs["outcome"] == "issued"
    assert leaf.record.attrs["report_sha256"] == report_digest(report)
    assert leaf.record.subject_hash == jpn.services.case_subject_hash(ref)
    assert NAME.encode() not in leaf.data and ref.encode() not in leaf.data

    # Verified offline against the node's key; any change shows.
    out, text = tmp_path / "report.json", tmp_path / "report.txt"
    doc = {k: answer[k] for k in ("format", "report", "signature", "signing_key")}
    out.write_text(json.dumps(doc))
    text.write_text(answer["text"])
    key = jpn.keys.local.signing_key.public.hex()
    verify = ["data", "verify-report", str(out), "--key", key, "--text", str(text)]
    assert await asyncio.to_thread(run_cli, verify) == 0
    assert await asyncio.to_thread(run_cli, [*verify[:3], "--key", "00" * 32]) == 1
    text.write_text(answer["text"].replace(NAME, "Someone Else"))
    assert await asyncio.to_thread(run_cli, verify) == 1
    doc["report"]["held"][0]["content"]["full_name"] = "Someone Else"
    out.write_text(json.dumps(doc))
    assert await asyncio.to_thread(run_cli, verify[:3]) == 1


async def test_a_document_report_is_found_through_its_keyed_hash(net, capsys):
    jpn = net[JPN].running
    officer = "xn_" + "d" * 40
    await jpn.store.create_token("narita", "document_officer", officer, int(time.time() * 1000))
    status, notice = await _post(jpn, officer, "/api/v1/notices", {
        "kind": "COUNTERFEIT",
        "document": {"issuing_state": "PHL", "document_number": "P7654321"},
        "detection": {"place": "JPNRT", "detected_at_ms": int(time.time() * 1000) - 60_000},
    })  # fmt: skip
    assert status == 202
    await wait_for(lambda: settled(jpn.store, [bytes.fromhex(notice["messages"][0]["message_id"])]))
    assert (await _post(jpn, officer, "/api/v1/documents/lookup", {"documents": [
        {"issuing_state": "PHL", "document_number": "P7654321"}]}))[0] == 200  # fmt: skip
    token = await _operator(jpn)
    status, answer = await _post(jpn, token, "/api/v1/subject-reports", {
        "document": {"issuing_state": "PHL", "document_number": "P7654321"},
        "purpose": "oversight",
    })  # fmt: skip
    assert status == 201, answer
    report = answer["report"]
    [held] = report["held"]
    assert held["source"] == JPN and held["content"]["kind"] == "COUNTERFEIT"
    assert [a["actor"] for a in report["accesses"]] == ["narita"]
    assert [r["peer"] for r in report["recipients"]] == [PHL]

    status, problem = await _post(jpn, token, "/api/v1/subject-reports", {
        "document": {"issuing_state": "PHL", "document_number": "P0000000"},
        "purpose": "oversight",
    })  # fmt: skip
    assert (status, problem["code"]) == (404, "document_not_found")


async def test_a_refusal_under_a_jurisdictions_law_is_signed_and_recorded(net, tmp_path):
    jpn = net[JPN].running
    case, _ = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name=NAME), "", actor="o-1"
    )
    out = tmp_path / "refusal.json"
    args = ["--config", str(net[JPN].config_path), "data", "report", "--case", case.case_ref,
            "--purpose", "subject_access", "--out", str(out),
            "--refuse", "JPN", "APPI Art. 33(2)(ii): an investigation would be impeded"]  # fmt: skip
    await net[JPN].stop()
    assert await asyncio.to_thread(run_cli, args) == 0
    assert out.stat().st_mode & 0o777 == 0o600  # what it holds is personal data
    assert await asyncio.to_thread(run_cli, args) == 2  # never over an existing file
    doc = json.loads(out.read_bytes())
    assert doc["report"]["refused"]["jurisdiction"] == "JPN"
    assert "held" not in doc["report"] and NAME not in out.read_text()
    jpn = await net[JPN].open()
    [leaf] = jpn.audit.query(kind=LeafKind.SUBJECT_REPORT)
    assert (leaf.record.attrs["outcome"], leaf.record.attrs["jurisdiction"]) == ("refused", "JPN")
    assert jpn.audit.query(kind=LeafKind.CASE_ACCESSED) == []  # nothing was read
    assert await asyncio.to_thread(run_cli, ["data", "verify-report", str(out)]) == 0
