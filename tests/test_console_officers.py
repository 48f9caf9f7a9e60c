"""The officers' console pages: document lookups (single and pasted, audited like the
API) and cases (list, timeline, next steps, recording a step through the service)."""

from __future__ import annotations

import aiohttp
import pytest
from console_support import browser
from test_api_support import Client, make_node, pin_all, token


@pytest.fixture
async def node(tmp_path):
    n = await make_node(tmp_path, "JPN-ISA", "JPN")
    yield n
    await n.stop()


def leaves_of(node, kind):
    return [leaf.record for leaf in node.audit.query(kind=kind, limit=1000)]


async def test_a_lookup_is_answered_and_audited_with_the_token_name(node):
    b = browser(node)
    async with b.session:
        await b.sign_in(await token(node, "document_officer", "narita-1"))
        status, page, _ = await b.get("/console/documents?state=phl&number=P1234567")
        assert status == 200 and "PHL P1234567" in page
        assert "Nothing is known about this document." in page
    (leaf,) = leaves_of(node, "document.lookup")
    assert (leaf.actor, leaf.attrs["found"]) == ("narita-1", "false")
    assert leaf.subject_hash == node.services.subject_hash("PHL", "P1234567")


async def test_a_pasted_batch_is_one_leaf_a_document_and_a_bad_line_refuses_it_whole(node):
    b = browser(node)
    async with b.session:
        await b.sign_in(await token(node, "document_officer", "narita-1"))
        status, page, _ = await b.post(
            "/console/documents", {"batch": "PHL P1234567\n\nTHA, AA1234567, P\n"}
        )
        assert status == 200 and page.count('class="card answer"') == 2
        assert len(leaves_of(node, "document.lookup")) == 2
        status, page, _ = await b.post("/console/documents", {"batch": "PHL P1\nZZ9 P2"})
        assert status == 422 and "line 2:" in page
        assert len(leaves_of(node, "document.lookup")) == 2


async def _open_case(jpn) -> str:
    async with aiohttp.ClientSession() as session:
        client = Client(session, jpn, await token(jpn, "case_officer", "case-system"))
        status, body = await client.post(
            "/api/v1/cases",
            {
                "participants": [
                    {"node_id": "PHL-DFA", "role": "ORIGIN_STATE"},
                    {"node_id": "IOM-MNL", "role": "IOM"},
                ],
                "personal_data": {"full_name": "Maria Santos", "nationality": "PHL"},
                "note": "referred by shelter",
            },
        )
    assert status == 201, body
    return body["case_ref"]


async def test_a_case_is_listed_read_audited_and_a_step_recorded(tmp_path):
    nodes = [
        await make_node(tmp_path, "JPN-ISA", "JPN"),
        await make_node(tmp_path, "PHL-DFA", "PHL"),
        await make_node(tmp_path, "IOM-MNL", "UNO"),
    ]
    jpn = nodes[0]
    try:
        await pin_all(nodes)
        ref = await _open_case(jpn)
        b = browser(jpn)
        async with b.session:
            await b.sign_in(await token(jpn, "case_officer", "officer-tanaka"))
            status, page, _ = await b.get("/console/cases")
            assert status == 200 and f'href="/console/cases/{ref}"' in page
            assert "Maria" not in page  # the list has no personal data
            assert not leaves_of(jpn, "case.accessed")
            status, page, _ = await b.get(f"/console/cases/{ref}")
            assert status == 200 and 'name="purpose"' in page and "Maria" not in page
            assert not leaves_of(jpn, "case.accessed")  # asking why reads nothing
            status, page, _ = await b.get(f"/console/cases/{ref}?purpose=case_management")
            assert status == 200 and "referred by shelter" in page
            steps = page.split('<select id="type" name="type">')[1].split("</select>")[0]
            first = steps.split("<option>")[1].split("</option>")[0]
            status, _, resp = await b.post(
                f"/console/cases/{ref}/events",
                {"type": first, "note": "screened", "purpose": "case_management"},
            )
            assert status == 303, _
            status, page, _ = await b.get(resp.headers["Location"])
            assert f"recorded {first}" in page and "screened" in page
            status, page, _ = await b.post(f"/console/cases/{ref}/events", {"type": "nonsense"})
            assert status == 422
        accessed = leaves_of(jpn, "case.accessed")
        assert {x.actor for x in accessed} == {"officer-tanaka"}
        assert {x.attrs["purpose"] for x in accessed} == {"case_management"}
        assert accessed[0].subject_hash == jpn.services.case_subject_hash(ref)
        transitions = [x for x in leaves_of(jpn, "case.transition") if x.actor == "officer-tanaka"]
        assert len(transitions) == 1
        assert jpn.services.cases.get(ref).events[-1].performed_by == "officer-tanaka"
    finally:
        for n in nodes:
            await n.stop()


async def test_an_unknown_case_is_a_404_page_and_the_read_is_audited(node):
    b = browser(node)
    async with b.session:
        await b.sign_in(await token(node, "case_officer", "officer-tanaka"))
        status, page, _ = await b.get("/console/cases/JPN-2026-AAAAAAAA?purpose=oversight")
        assert status == 404 and "no case JPN-2026-AAAAAAAA" in page
        status, page, _ = await b.get("/console/cases/JPN-2026-AAAAAAAA?purpose=curiosity")
        assert status == 422 and "purpose is one of" in page
        status, _, resp = await b.get("/console/cases/open?ref=JPN-2026-AAAAAAAA")
        assert resp.headers["Location"] == "/console/cases/JPN-2026-AAAAAAAA"
    (leaf,) = leaves_of(node, "case.accessed")
    assert leaf.attrs["found"] == "false" and leaf.attrs["purpose"] == "oversight"
    (refused,) = [x for x in leaves_of(node, "request.refused") if x.reason == "purpose_unknown"]
    assert refused.attrs["operation"] == "console.case"
