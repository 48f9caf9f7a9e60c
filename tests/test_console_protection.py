"""The console's data protection pages: erasure, periodic review, legal holds, purge
notices and subject access reports. Real nodes on loopback; each action goes through the
service the API calls and is checked in the audit log (kind, actor = the token's name),
refused to the roles the API refuses (403 page, ``auth.failed``) and without the form's
CSRF token."""

from __future__ import annotations

import pytest
from console_support import browser
from test_api_support import eventually, make_node, pin_all, token

from exchange_node.domain.repatriation import Role
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.record_keys import case_record_id
from exchange_node.services.cases import Participant, PersonalData
from exchange_node.subject_report import report_digest, verify_report
from tests.node_helpers import settled

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def nodes(tmp_path):
    jpn = await make_node(tmp_path, JPN, "JPN")
    phl = await make_node(tmp_path, PHL, "PHL")
    await pin_all([jpn, phl])
    yield jpn, phl
    for n in (jpn, phl):
        await n.stop()


def leaves_of(node, kind):
    return [leaf.record for leaf in node.audit.query(kind=kind, limit=1000)]


def refusals(node, operation: str, reason: str = "role_forbidden") -> list:
    return [
        f
        for f in leaves_of(node, "auth.failed")
        if f.attrs["operation"] == operation and f.reason == reason
    ]


async def _case(jpn) -> str:
    """A case this node sent to PHL-DFA (delivered), so an erasure tells PHL-DFA."""
    case, ids = await jpn.services.cases.open_case(
        [Participant(PHL, Role.ORIGIN_STATE)], PersonalData(full_name="Maria Santos"),
        "referred by shelter", actor="case-system",
    )  # fmt: skip
    await eventually(lambda: settled(jpn.store, list(ids.values())))
    return case.case_ref


async def _signed_in(node, role: str, name: str):
    b = browser(node)
    await b.sign_in(await token(node, role, name))
    return b


async def test_an_operator_erases_a_case_and_sees_each_peer_confirm(nodes):
    jpn, phl = nodes
    ref = await _case(jpn)
    ops = await _signed_in(jpn, "operator", "dpo-ana")
    officer = await _signed_in(jpn, "case_officer", "officer-tanaka")
    async with ops.session, officer.session:
        # An officer works the case but does not erase it (the API's eraseCase roles).
        status, page, _ = await officer.post(
            f"/console/cases/{ref}/erasure", {"reason": "rectified"}
        )
        assert status == 403 and "a case_officer token may not call this" in page
        assert [f.actor for f in refusals(jpn, "console.case_erase")] == ["officer-tanaka"]
        # A form without the session's CSRF token erases nothing.
        status, page, _ = await ops.post(
            f"/console/cases/{ref}/erasure", {"reason": "erasure_request"}, csrf=""
        )
        assert status == 403 and "form token" in page
        assert refusals(jpn, "console.case_erase", "csrf_missing")
        assert jpn.store.record_purge(case_record_id(ref)) is None

        # Delivery to PHL-DFA paused: the purge notice waits, unconfirmed.
        await ops.post(f"/console/peers/{PHL}/pause")
        status, page, _ = await ops.get(f"/console/cases/{ref}/erasure")
        assert status == 200 and "<option>erasure_request</option>" in page
        assert "Maria" not in page  # the erasure page reads no personal data
        status, _, resp = await ops.post(
            f"/console/cases/{ref}/erasure", {"reason": "erasure_request"}
        )
        assert status == 303
        status, page, _ = await ops.get(resp.headers["Location"].removeprefix(ops.base))
        assert f"case {ref} erased (erasure_request); purge notice sent to 1 peer(s)" in page
        assert "approved by dpo-ana" in page and 'data-peer="PHL-DFA"' in page
        (purged,) = leaves_of(jpn, "record.purged")
        assert (purged.actor, purged.attrs["reason"], purged.attrs["record"]) == (
            "dpo-ana", "erasure_request", "",
        )  # fmt: skip
        assert purged.subject_hash == jpn.services.case_subject_hash(ref)
        assert jpn.services.cases.get(ref).personal is None

        _, page, _ = await ops.get("/console/overview")
        assert "1 purge notice(s) not confirmed by a peer yet" in page
        _, page, _ = await ops.get("/console/protection")
        unconfirmed = page.split('id="unconfirmed"')[1]
        assert f"case:{ref}" in unconfirmed and "<td>PHL-DFA</td>" in unconfirmed

        # Resumed: PHL-DFA obeys and its receipt confirms.
        await ops.post(f"/console/peers/{PHL}/resume")
        await eventually(lambda: jpn.services.cases.unconfirmed_purges() == 0)
        _, page, _ = await ops.get("/console/overview")
        assert "not confirmed by a peer" not in page
        _, page, _ = await ops.get("/console/protection")
        assert "Every peer told of a purge has confirmed it." in page

        # The officer's case page shows the erased state and the confirmation.
        status, page, _ = await officer.get(f"/console/cases/{ref}?purpose=case_management")
        assert status == 200 and "Personal data and notes ERASED" in page
        assert "(erasure_request), approved by dpo-ana" in page
        row = page.split('<tr data-peer="PHL-DFA">')[1].split("</tr>")[0]
        assert '<td class="state">accepted</td>' in row and "<td>yes</td>" in row
        assert "Maria" not in page and 'id="step"' not in page
    assert [x.actor for x in leaves_of(phl, "record.purged")] == [JPN]


async def test_a_held_case_is_not_erased_and_holds_are_placed_and_released(nodes):
    jpn, _ = nodes
    ref = await _case(jpn)
    ops = await _signed_in(jpn, "operator", "dpo-ana")
    clerk = await _signed_in(jpn, "document_officer", "narita-1")
    async with ops.session, clerk.session:
        status, page, _ = await clerk.post(
            "/console/protection/holds", {"case_ref": ref, "reason": "x"}
        )
        assert status == 403 and refusals(jpn, "console.hold_place")[0].actor == "narita-1"
        status, page, _ = await ops.post(
            "/console/protection/holds", {"case_ref": ref, "reason": "court order 2026/17"}, csrf=""
        )
        assert status == 403 and not jpn.store.holds()

        status, _, resp = await ops.post(
            "/console/protection/holds", {"case_ref": ref, "reason": "court order 2026/17"}
        )
        assert status == 303
        _, page, _ = await ops.get(resp.headers["Location"].removeprefix(ops.base))
        assert f"case {ref} is held: court order 2026/17" in page
        assert f'<tr data-record="case:{ref}">' in page
        status, _, _ = await ops.post(
            "/console/protection/holds",
            {"issuing_state": "phl", "document_number": "p1234567a", "reason": "investigation 88"},
        )
        assert status == 303
        status, page, _ = await ops.post(
            "/console/protection/holds",
            {"case_ref": ref, "issuing_state": "PHL", "document_number": "P1", "reason": "x"},
        )
        assert status == 422 and "not both" in page

        _, page, _ = await ops.get(f"/console/cases/{ref}/erasure")
        assert "Under a legal hold" in page and "court order 2026/17" in page
        status, page, _ = await ops.post(
            f"/console/cases/{ref}/erasure", {"reason": "erasure_request"}
        )
        assert status == 409 and f"case {ref} is under a legal hold; release the hold first" in page
        assert jpn.store.record_purge(case_record_id(ref)) is None
        assert not leaves_of(jpn, "record.purged")
        assert jpn.services.cases.get(ref).personal is not None  # nothing purged

        status, _, _ = await ops.post("/console/protection/holds/release", {"case_ref": ref})
        assert status == 303
        status, _, _ = await ops.post(
            "/console/protection/holds/release",
            {"issuing_state": "PHL", "document_number": "P1234567A"},
        )
        assert status == 303 and jpn.store.holds() == []
        status, page, _ = await ops.post("/console/protection/holds/release", {"case_ref": ref})
        assert status == 404 and "not under a legal hold" in page
    holds = leaves_of(jpn, "record.hold")
    assert [
        (h.actor, h.attrs["action"], h.attrs["record_type"], h.attrs["record"]) for h in holds
    ] == [
        ("dpo-ana", "placed", "case", ""),
        ("dpo-ana", "placed", "document", ""),
        ("dpo-ana", "released", "case", ""),
        ("dpo-ana", "released", "document", ""),
    ]
    assert holds[1].subject_hash == jpn.services.subject_hash("PHL", "P1234567A")


async def test_a_record_due_for_review_is_kept_with_a_reason(nodes):
    jpn, _ = nodes
    ref = await _case(jpn)
    later = jpn.now_ms() + jpn.config.retention.case_review_days * DAY_MS
    jpn.clock = lambda: later
    ops = await _signed_in(jpn, "operator", "dpo-ana")
    auditor = await _signed_in(jpn, "auditor", "audit-1")
    async with ops.session, auditor.session:
        _, page, _ = await ops.get("/console/overview")
        assert "1 record(s) due for periodic review: keep or purge each" in page
        status, page, _ = await ops.get("/console/protection")
        assert status == 200 and f'<tr data-record="case:{ref}">' in page
        assert f'href="/console/cases/{ref}/erasure?reason=retention"' in page
        assert 'href="/console/protection"' in page  # in the navigation bar

        status, _, _ = await auditor.get("/console/protection")
        assert status == 403 and refusals(jpn, "console.protection")[0].actor == "audit-1"
        status, _, _ = await auditor.post(
            "/console/protection/keep", {"record": f"case:{ref}", "reason": "x"}
        )
        assert status == 403 and refusals(jpn, "console.review_keep")
        status, _, _ = await ops.post(
            "/console/protection/keep", {"record": f"case:{ref}", "reason": "x"}, csrf="wrong"
        )
        assert status == 403 and refusals(jpn, "console.review_keep", "csrf_invalid")
        status, page, _ = await ops.post(
            "/console/protection/keep", {"record": f"case:{ref}", "reason": "  "}
        )
        assert status == 422 and "say why the record is kept" in page
        assert not leaves_of(jpn, "record.reviewed")

        status, _, resp = await ops.post(
            "/console/protection/keep",
            {"record": f"case:{ref}", "reason": "monitoring continues until June"},
        )
        assert status == 303
        _, page, _ = await ops.get(resp.headers["Location"].removeprefix(ops.base))
        assert f"case:{ref} kept; next review" in page and "No record is due for review." in page
        _, page, _ = await ops.get("/console/overview")
        assert "due for periodic review" not in page
    (reviewed,) = leaves_of(jpn, "record.reviewed")
    assert (reviewed.actor, reviewed.attrs["record"]) == ("dpo-ana", "")
    assert reviewed.subject_hash == jpn.services.case_subject_hash(ref)
    assert jpn.services.retention.reviews_due() == []


async def test_a_subject_access_report_is_issued_signed_and_downloaded(nodes):
    jpn, _ = nodes
    ref = await _case(jpn)
    ops = await _signed_in(jpn, "operator", "dpo-ana")
    other = await _signed_in(jpn, "operator", "dpo-ben")
    officer = await _signed_in(jpn, "case_officer", "officer-tanaka")
    async with ops.session, other.session, officer.session:
        status, page, _ = await ops.get("/console/subject-reports")
        assert status == 200 and "<option selected>subject_access</option>" in page
        status, _, _ = await officer.get("/console/subject-reports")
        assert status == 403
        status, _, _ = await officer.post(
            "/console/subject-reports", {"case_ref": ref, "purpose": "oversight"}
        )
        assert status == 403
        assert refusals(jpn, "console.subject_reports") and refusals(jpn, "console.subject_report")
        status, _, _ = await ops.post(
            "/console/subject-reports", {"case_ref": ref, "purpose": "subject_access"}, csrf=""
        )
        assert status == 403 and not leaves_of(jpn, "subject.report")

        status, page, _ = await ops.post(
            "/console/subject-reports", {"case_ref": ref, "purpose": "subject_access"}
        )
        assert status == 201 and "Maria Santos" in page and "referred by shelter" in page
        link = page.split('id="report-json" href="')[1].split('"')[0]
        status, data, resp = await ops.get(link)
        assert status == 200 and resp.headers["Content-Disposition"].endswith('"report.json"')
        status, text, _ = await ops.get(link.replace("report.json", "report.txt"))
        assert status == 200 and "Maria Santos" in text
        key = jpn.keys.local.signing_key.private.public_key().public_bytes_raw()
        check = verify_report(data.encode(), [key], text.encode())
        assert check.ok, check.problems
        assert check.report["subject"] == {"type": "case", "case_ref": ref}
        # Another session, even an operator's, does not get this one's report.
        status, page, _ = await other.get(link)
        assert status == 404 and "Maria" not in page

        status, page, _ = await ops.post(
            "/console/subject-reports",
            {"case_ref": ref, "purpose": "subject_access", "jurisdiction": "jpn",
             "basis": "APPI Art. 33(2)(ii)"},
        )  # fmt: skip
        assert status == 201 and "Maria" not in page
    issued, refused = leaves_of(jpn, "subject.report")
    assert (issued.actor, issued.attrs["outcome"]) == ("dpo-ana", "issued")
    assert issued.attrs["report_sha256"] == report_digest(check.report)  # the file handed out
    assert (refused.actor, refused.attrs["outcome"], refused.attrs["jurisdiction"]) == (
        "dpo-ana", "refused", "JPN",
    )  # fmt: skip
    assert issued.subject_hash == jpn.services.case_subject_hash(ref)
    reads = [
        x for x in leaves_of(jpn, "case.accessed") if x.attrs.get("operation") == "subject_report"
    ]
    assert [(x.actor, x.attrs["purpose"]) for x in reads] == [("dpo-ana", "subject_access")]
