"""The auditor's pages: the audit timeline and its filters (user story 13: who looked up
this passport), keyset pages, live verification, bundle export; the messages page."""

from __future__ import annotations

import threading

import aiohttp
import pytest
from console_support import browser
from node_helpers import fraud_notice, wait_for
from test_api_support import Client, make_node, pin_all, token

from exchange_node.audit.bundle import verify_bundle
from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.log import LeafFilter
from exchange_node.console.audit_pages import PAGE_SIZE
from exchange_node.evidence import verify_proof


@pytest.fixture
async def node(tmp_path):
    n = await make_node(tmp_path, "JPN-ISA", "JPN")
    yield n
    await n.stop()


@pytest.fixture
async def auditor(node):
    b = browser(node)
    async with b.session:
        await b.sign_in(await token(node, "auditor", "audit-office"))
        yield b


def seqs(page: str) -> list[int]:
    rows = page.split("<tbody>")[-1].split("</tbody>")[0].split('<tr><td class="n">')[1:]
    return [int(r.split("<")[0]) for r in rows]


async def _look_up(node, number: str, officer: str) -> None:
    secret = await token(node, "document_officer", officer)
    async with aiohttp.ClientSession() as session:
        status, _ = await Client(session, node, secret).get(f"/api/v1/documents/PHL/{number}")
        assert status == 200


async def test_who_looked_up_this_passport(node, auditor):
    await _look_up(node, "P1111111", "narita-1")
    await _look_up(node, "P2222222", "kansai-2")
    status, page, _ = await auditor.get("/console/audit?doc_state=PHL&doc_number=p1111111")
    assert status == 200
    (seq,) = seqs(page)
    assert node.audit.leaf(seq).record.actor == "narita-1"
    assert "P1111111" not in page.split("<table")[1]  # the entry has the keyed hash only


async def test_filters_by_kind_actor_and_date_newest_first(node, auditor):
    await _look_up(node, "P1111111", "narita-1")
    status, page, _ = await auditor.get("/console/audit?kind=document.lookup&actor=narita-1")
    assert [node.audit.leaf(s).record.kind for s in seqs(page)] == ["document.lookup"]
    status, page, _ = await auditor.get("/console/audit")
    assert seqs(page) == sorted(seqs(page), reverse=True) and seqs(page)[0] == node.audit.size - 1
    status, page, _ = await auditor.get("/console/audit?until=2000-01-01")
    assert seqs(page) == [] and "No entries match." in page
    status, page, _ = await auditor.get("/console/audit?since=31-12-2026")
    assert status == 400 and "YYYY-MM-DD" in page


async def test_older_entries_come_a_page_at_a_time(node, auditor):
    for i in range(PAGE_SIZE + 5):
        await _look_up(node, f"P{i:07d}", f"desk-{i}")
    status, page, _ = await auditor.get("/console/audit?kind=document.lookup")
    first = seqs(page)
    assert len(first) == PAGE_SIZE
    older = page.split('id="older" href="')[1].split('"')[0].replace("&amp;", "&")
    status, page, _ = await auditor.get("/console/audit" + older)
    second = seqs(page)
    assert len(second) == 5 and max(second) < min(first) and 'id="older"' not in page


async def test_verify_the_log_now_with_its_progress_then_its_report(node, auditor):
    status, _, resp = await auditor.post("/console/audit/verify")
    assert status == 303 and resp.headers["Location"] == "/console/audit/verification"

    async def reported():
        status, page, _ = await auditor.get("/console/audit/verification")
        assert status == 200
        return page if 'id="verify-result"' in page else None

    page = await wait_for(reported, what="the verification's report")
    assert 'class="status ok">Verified:' in page and "Started by audit-office" in page


async def test_a_log_that_does_not_verify_is_said_so(node, auditor):
    import sqlite3

    with sqlite3.connect(node.store.path) as db:  # an entry altered behind the log's back
        db.execute("UPDATE audit_leaves SET data = CAST(replace(CAST(data AS TEXT), "
                   "'operator', 'intruder') AS BLOB) WHERE seq = 0")  # fmt: skip
    await auditor.post("/console/audit/verify")

    async def reported():
        _, page, _ = await auditor.get("/console/audit/verification")
        return page if 'id="verify-result"' in page else None

    page = await wait_for(reported, what="the verification's report")
    assert "The log does NOT verify" in page and "seq 0: leaf_hash_mismatch" in page


async def test_export_a_bundle_of_the_filtered_entries_that_verifies(node, auditor):
    await _look_up(node, "P1111111", "narita-1")
    await _look_up(node, "P2222222", "kansai-2")
    status, _, resp = await auditor.post("/console/audit/bundle", {"actor": "narita-1"})
    assert status == 303 and resp.headers["Location"].startswith("/console/audit/bundles/")
    page = await _finished(auditor, resp.headers["Location"])
    assert "Ready: 1 entries" in page
    status, data, resp = await auditor.get(resp.headers["Location"] + "/file")
    assert status == 200 and "attachment" in resp.headers["Content-Disposition"]
    report = verify_bundle(data.encode())
    assert report.ok and len(report.leaves) == 1


async def _finished(auditor, location: str) -> str:
    async def done():
        status, page, _ = await auditor.get(location)
        assert status == 200
        return page if 'id="bundle-result"' in page else None

    return await wait_for(done, what="the bundle export")


async def test_a_large_export_shows_its_progress_then_offers_the_whole_bundle(
    node, auditor, monkeypatch
):
    """More entries than the old cap of one page (10,000) would matter for, held at the
    first progress step so the page is seen while the file is being written."""
    node.audit.append_many(
        AuditEvent(time=node.now_ms(), kind=LeafKind.DOCUMENT_LOOKUP, actor="desk-9")
        for _ in range(1_201)
    )
    gate = threading.Event()
    real = node.audit.iter_query

    def held(flt):
        for i, leaf in enumerate(real(flt)):
            if i == 1_000:
                gate.wait(30)
            yield leaf

    monkeypatch.setattr(node.audit, "iter_query", held)
    status, _, resp = await auditor.post("/console/audit/bundle", {"actor": "desk-9"})
    location = resp.headers["Location"]

    async def at_first_step():
        _, page, _ = await auditor.get(location)
        return page if "1000 of 1201 written" in page else None

    try:
        page = await wait_for(at_first_step, what="the export's progress")
        assert 'id="bundle-progress"' in page and 'http-equiv="refresh"' in page
        assert "bundle-download" not in page
        status, page, _ = await auditor.get(location + "/file")
        assert status == 409 and "has not finished" in page
        # The same auditor asking again is sent to the export under way.
        status, _, resp = await auditor.post("/console/audit/bundle", {"actor": "desk-9"})
        assert status == 303 and resp.headers["Location"] == location
    finally:
        gate.set()
    page = await _finished(auditor, location)
    assert "Ready: 1201 entries" in page and 'http-equiv="refresh"' not in page
    status, data, resp = await auditor.get(location + "/file")
    assert status == 200 and resp.headers["Content-Type"] == "application/json"
    report = verify_bundle(data.encode())
    assert report.ok
    expected = [leaf.seq for leaf in real(LeafFilter(actor="desk-9"))]
    assert [r.seq for r in report.leaves] == expected and len(expected) == 1_201
    # Another auditor cannot fetch it; a new export replaces the file.
    other = browser(node)
    async with other.session:
        await other.sign_in(await token(node, "auditor", "audit-office-2"))
        status, _, _ = await other.get(location + "/file")
        assert status == 404
    (path,) = (node.config.data_path / "exports").glob("audit-bundle-*.json")
    assert path.stat().st_mode & 0o777 == 0o600
    status, _, resp = await auditor.post("/console/audit/bundle", {"actor": "narita-1"})
    assert resp.headers["Location"] != location and not path.exists()
    status, _, _ = await auditor.get(location)
    assert status == 404


async def test_messages_page_shows_each_recipient_the_receipt_and_a_proof(tmp_path):
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL")
    try:
        await pin_all([jpn, phl])
        [sub] = await jpn.submit(fraud_notice(), ["PHL-DFA"], actor="test")
        await wait_for(lambda: jpn.store.message_status(sub.message_id)[0].receipt_id)
        mid = sub.message_id.hex()
        b = browser(jpn)
        async with b.session:
            await b.sign_in(await token(jpn, "operator"))
            status, page, _ = await b.get(f"/console/messages?message_id={mid}")
            assert status == 200 and "PHL-DFA" in page and "accepted" in page
            assert "receipt 1 (base64)" in page
            status, data, resp = await b.get(f"/console/messages/{mid}/PHL-DFA/proof")
            assert status == 200 and "attachment" in resp.headers["Content-Disposition"]
            report = verify_proof(data.encode(), recipient_fingerprint=phl.keys.fingerprint)
            assert report.established and report.message_id == mid
            status, page, _ = await b.get("/console/messages?message_id=" + "0" * 32)
            assert "This node sent no message" in page
            status, page, _ = await b.get("/console/messages?peer=PHL-DFA&state=delivered")
            assert mid in page
            status, page, _ = await b.get("/console/messages?state=dead")
            assert mid not in page and "No messages match." in page
    finally:
        await jpn.stop()
        await phl.stop()


async def test_who_read_this_case(node, auditor):
    secret = await token(node, "case_officer", "officer-tanaka")
    async with aiohttp.ClientSession() as session:
        status, _ = await Client(session, node, secret).get(
            "/api/v1/cases/JPN-2026-AAAAAAAA?purpose=oversight"
        )
        assert status == 404  # a read of an unknown case is audited too
    status, page, _ = await auditor.get("/console/audit?case=JPN-2026-AAAAAAAA")
    (seq,) = seqs(page)
    record = node.audit.leaf(seq).record
    assert (record.kind, record.actor) == ("case.accessed", "officer-tanaka")
    status, page, _ = await auditor.get("/console/audit?case=not-a-ref")
    assert status == 400 and "a case reference like" in page
