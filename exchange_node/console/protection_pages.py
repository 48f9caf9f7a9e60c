"""The operator's data protection pages: erasure, periodic review, legal holds, purge
notices and subject access reports.

Each action calls the service the JSON API's handler calls (``api/v1.py``), so it is
checked, stored and audited exactly as there, with the signed-in token's name as actor:
an erasure is ``CaseService.erase`` (``record.purged``), keeping a record at its review
``RetentionService.keep`` (``record.reviewed``), a hold ``place_hold`` / ``release_hold``
(``record.hold``), a report ``SubjectReports.issue`` (``subject.report``, and the read it
makes, ``case.accessed``). Pages that only list show references, record ids and keyed
hashes, never a case's personal data: they are not reads of a case.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from exchange_node.api.v1 import purge_out
from exchange_node.console.app import (
    Refused,
    back,
    done_note,
    form,
    node_of,
    render,
    signed_in,
)
from exchange_node.console.sessions import IDLE_MS
from exchange_node.console.words import when
from exchange_node.domain.documents import DocumentKey
from exchange_node.domain.repatriation import validate_case_reference
from exchange_node.errors import NotFoundError
from exchange_node.record_keys import case_record_id
from exchange_node.store.records import PURGE_REASONS, Outcome

REPORTS = web.AppKey("console_reports", dict)
CONFIRMED = (str(Outcome.ACCEPTED), str(Outcome.DUPLICATE))  # in the peer's receipt
REPORTS_KEPT = 20  # issued reports held for download at once, the oldest dropped first


# --- erasure -----------------------------------------------------------------------------


def _case_ref(request: web.Request) -> str:
    """The path's case reference, of a case this node holds."""
    ref = validate_case_reference(request.match_info["ref"], "case_ref")
    if node_of(request).store.case(ref) is None:
        raise NotFoundError("case_not_found", f"no case {ref} is known on this node", "case_ref")
    return ref


async def case_erasure(request: web.Request) -> web.Response:
    """A case as its erasure needs it: held or not, erased or not and the peers'
    confirmations, and the form. No personal data is read for it."""
    node = node_of(request)
    ref = _case_ref(request)
    purge = node.store.record_purge(case_record_id(ref))
    return render(
        request,
        "case_erasure.html",
        ref=ref,
        hold=node.store.hold(case_record_id(ref)),
        purged=purge_out(node, purge) if purge else None,
        reasons=PURGE_REASONS,
        chosen=request.query.get("reason", ""),
        done=done_note(request),
    )


async def case_erase(request: web.Request) -> web.StreamResponse:
    """The API's ``eraseCase``: the signed-in operator is the approver. Under a legal
    hold the service refuses (``record_on_hold``) and nothing is purged."""
    node = node_of(request)
    ref = _case_ref(request)
    reason = (await form(request)).get("reason", "")
    purge = await node.services.cases.erase(ref, reason, approver=signed_in(request).actor)
    node.update_review_gauge()
    told = len(purge_out(node, purge).confirmations)
    raise back(
        request,
        f"/cases/{quote(ref, safe='')}/erasure",
        f"case {ref} erased ({reason})"
        + (f"; purge notice sent to {told} peer(s)" if told else ""),
    )


# --- review, holds, purge notices --------------------------------------------------------


@dataclass(frozen=True)
class Unconfirmed:
    record_id: str
    purged_at: int
    peer: str
    message_id: str
    state: str


def _unconfirmed(request: web.Request) -> list[Unconfirmed]:
    """Each purge notice a peer has not confirmed, as ``status`` counts them
    (``CaseService.unconfirmed_purges``)."""
    node = node_of(request)
    out = []
    for purge in node.store.purges_with_notices():
        for c in purge_out(node, purge).confirmations:
            if c.state not in CONFIRMED:
                out.append(
                    Unconfirmed(
                        purge.record_id, purge.purged_at, c.recipient, c.message_id, c.state
                    )
                )
    return out


async def protection(request: web.Request) -> web.Response:
    node = node_of(request)
    return render(
        request,
        "protection.html",
        reviews=node.services.retention.reviews_due(),
        reviews_total=node.services.retention.reviews_due_total(),
        holds=node.store.holds(),
        unconfirmed=_unconfirmed(request),
        done=done_note(request),
    )


async def review_keep(request: web.Request) -> web.StreamResponse:
    """The API's ``keepRecord``: kept with a reason, the next review a period away."""
    node = node_of(request)
    data = await form(request)
    record = data.get("record", "")
    after = await node.services.retention.keep(
        record, data.get("reason", ""), actor=signed_in(request).actor
    )
    node.update_review_gauge()
    due = node.services.retention.review_due_at(record)
    note = f"{record} kept" + (" (still due)" if after else "")
    raise back(request, "/protection", note + (f"; next review {_day(due)}" if due else ""))


def _day(ms: int) -> str:
    return when(ms)[:10]


def _target(data: dict[str, str]) -> tuple[str | None, tuple[str, str] | None]:
    """The form's case reference or document (issuing state and number): exactly one,
    as the API's ``_hold_target``."""
    ref = data.get("case_ref", "").strip()
    state, number = data.get("issuing_state", "").strip(), data.get("document_number", "").strip()
    if bool(ref) == bool(state or number):
        raise Refused(
            422, "name either a case reference or a document (issuing state and number), not both"
        )
    if ref:
        return ref, None
    key = DocumentKey(state.upper(), "", number.upper())
    return None, (key.issuing_state, key.number)


def _named(case_ref: str | None, document: tuple[str, str] | None) -> str:
    return f"case {case_ref}" if case_ref else f"document {document[0]} {document[1]}"  # type: ignore[index]


async def hold_place(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    data = await form(request)
    case_ref, document = _target(data)
    reason = data.get("reason", "").strip()
    if not reason:
        raise Refused(422, "say why the record is held (e.g. court order 2026/17)")
    await node.services.retention.place_hold(
        case_ref, document, reason, actor=signed_in(request).actor
    )
    raise back(request, "/protection", f"{_named(case_ref, document)} is held: {reason}")


async def hold_release(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    case_ref, document = _target(await form(request))
    await node.services.retention.release_hold(case_ref, document, actor=signed_in(request).actor)
    raise back(request, "/protection", f"the hold on {_named(case_ref, document)} is released")


# --- subject access reports ----------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A report just issued, kept in memory for this session's downloads only."""

    session: bytes
    at: int
    subject: str
    data: bytes
    text: str


def _page(request: web.Request, status: int = 200, **extra) -> web.Response:
    node = node_of(request)
    context = {
        "purposes": node.config.data_protection.purposes,
        "issued": None,
        "report_id": "",
        "sent": {},
    }
    context.update(extra)
    return render(request, "subject_report.html", status=status, **context)


async def subject_report_form(request: web.Request) -> web.Response:
    return _page(request)


async def subject_report(request: web.Request) -> web.Response:
    """The API's ``subjectReport``; the page shows the text and offers both files."""
    node = node_of(request)
    data = await form(request)
    case_ref, document = _target(data)
    jurisdiction, basis = data.get("jurisdiction", "").strip(), data.get("basis", "").strip()
    refusal = (jurisdiction.upper(), basis) if jurisdiction or basis else None
    signed, text = await node.services.reports.issue(
        case_ref=case_ref, document=document, purpose=data.get("purpose", ""),
        actor=signed_in(request).actor, refusal=refusal,
    )  # fmt: skip
    me = signed_in(request)
    now = node.now_ms()
    kept = request.app[REPORTS]
    for key in [k for k, v in kept.items() if now - v.at > IDLE_MS]:
        del kept[key]
    while len(kept) >= REPORTS_KEPT:
        del kept[next(iter(kept))]
    report_id = secrets.token_urlsafe(16)
    issued = Issued(me.session.id_hash, now, _named(case_ref, document), signed, text)
    kept[report_id] = issued
    return _page(request, 201, issued=issued, report_id=report_id, sent=data)


def _issued(request: web.Request) -> Issued:
    issued: Issued | None = request.app[REPORTS].get(request.match_info["id"])
    if (
        issued is None
        or issued.session != signed_in(request).session.id_hash
        or node_of(request).now_ms() - issued.at > IDLE_MS
    ):
        raise Refused(
            404, "that report is no longer here (it is kept 15 minutes, for the session that "
            "issued it); issue it again",
        )  # fmt: skip
    return issued


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


async def subject_report_file(request: web.Request) -> web.Response:
    """The signed file, as ``data report --out`` writes it (check: ``data verify-report``)."""
    issued = _issued(request)
    return web.Response(
        body=issued.data, content_type="application/json", headers=_attachment("report.json")
    )


async def subject_report_text(request: web.Request) -> web.Response:
    issued = _issued(request)
    return web.Response(
        text=issued.text, content_type="text/plain", charset="utf-8",
        headers=_attachment("report.txt"),
    )  # fmt: skip
