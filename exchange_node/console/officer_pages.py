"""The officers' pages: document lookups and repatriation cases.

A lookup here is a lookup like the API's: each document asked about is one
``document.lookup`` leaf with the signed-in token's name and the document's keyed hash,
found or not. Opening a case is a read like ``GET /api/v1/cases/{ref}`` (one
``case.accessed`` leaf); recording a step is the API's ``addCaseEvent``, through the
same service. An erased case shows what is left: who erased it, when, why, and each
peer's confirmation of the purge notice (the API's ``purged``). The case list shows references, participants and dates only: no personal
data, and it is not a read of any one case.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

from aiohttp import web

from exchange_node.api.v1 import purge_out
from exchange_node.audit import leaves
from exchange_node.console.app import (
    Refused,
    back,
    done_note,
    form,
    node_of,
    render,
    signed_in,
)
from exchange_node.domain.documents import DocumentKey
from exchange_node.domain.repatriation import EventType, allowed_events
from exchange_node.errors import ValidationError

BATCH_MAX = 100
CASES_PAGE = 50


async def _look_up(request: web.Request, queries: list[tuple[str, str, str]]) -> list:
    """Each (state, number, type) answered and audited; a bad line refuses the batch,
    naming it, before anything is looked up."""
    node = node_of(request)
    keys = []
    for i, (state, number, doc_type) in enumerate(queries, 1):
        try:
            keys.append(DocumentKey(state.upper(), doc_type.upper(), number.upper()))
        except ValidationError as exc:
            where = f"line {i}: " if len(queries) > 1 else ""
            raise Refused(422, f"{where}{exc.message}") from None
    actor = signed_in(request).actor
    now = node.now_ms()
    answers, events = [], []
    for key in keys:
        answer = node.services.index.lookup(key.issuing_state, key.number, key.document_type)
        answers.append(answer)
        subject = node.services.subject_hash(key.issuing_state, key.number)
        events.append(leaves.document_lookup(now, actor, subject, bool(answer.records)))
    await node.record_audit(*events)
    return answers


async def documents(request: web.Request) -> web.Response:
    q = request.query
    state, number = q.get("state", "").strip(), q.get("number", "").strip()
    answers = []
    if state or number:
        answers = await _look_up(request, [(state, number, q.get("type", "").strip())])
    return render(request, "documents.html", answers=answers, state=state, number=number, batch="")


async def documents_batch(request: web.Request) -> web.Response:
    """A pasted list: one document a line, ``STATE NUMBER`` or ``STATE NUMBER TYPE``."""
    text = (await form(request)).get("batch", "")
    queries = []
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.replace(",", " ").replace(";", " ").split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise Refused(
                422, f"line {i}: write the issuing state and the number, e.g. PHL P1234567"
            )
        queries.append((parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
    if not queries:
        raise Refused(422, "paste at least one document, one a line: issuing state and number")
    if len(queries) > BATCH_MAX:
        raise Refused(422, f"at most {BATCH_MAX} documents at a time; got {len(queries)}")
    answers = await _look_up(request, queries)
    return render(request, "documents.html", answers=answers, state="", number="", batch=text)


# --- cases -------------------------------------------------------------------------------


async def cases(request: web.Request) -> web.Response:
    node = node_of(request)
    before = None
    if request.query.get("before_at") and request.query.get("before_ref"):
        raw = request.query["before_at"]
        if not raw.isdigit():
            raise Refused(400, "before_at must be a time in ms")
        before = (int(raw), request.query["before_ref"])
    rows = node.store.case_page(before=before, limit=CASES_PAGE + 1)
    more = len(rows) > CASES_PAGE
    rows = rows[:CASES_PAGE]
    listed = [(r, json.loads(r.participants)) for r in rows]
    return render(request, "cases.html", cases=listed, next=rows[-1] if more else None)


async def case_open(request: web.Request) -> web.StreamResponse:
    """The reference typed in the list page's box, as the case's own address."""
    ref = request.query.get("ref", "").strip()
    if not ref:
        raise Refused(400, "type a case reference, e.g. JPN-2026-ABCDEFGH")
    raise web.HTTPSeeOther("/console/cases/" + quote(ref, safe=""))


async def case(request: web.Request) -> web.Response:
    """A case's page. Reading it is a consultation of personal data, so the page first
    asks why (one of ``[data_protection] purposes``; nothing is read or recorded until
    one is chosen), then reads it as the API does: one ``case.accessed`` leaf with the
    token's name and that purpose."""
    node = node_of(request)
    ref = request.match_info["ref"]
    purpose = request.query.get("purpose", "")
    if not purpose:
        return render(
            request, "case_purpose.html", ref=ref, purposes=node.config.data_protection.purposes
        )
    found = await node.services.cases.read(
        ref, actor=signed_in(request).actor, purpose=purpose, operation_id="console.case"
    )
    me = found.role_of(node.node_id)
    steps = [str(x) for x in allowed_events(found.state, me)] if me and not found.purged else []
    return render(
        request,
        "case.html",
        case=found,
        timeline=list(zip(found.events, found.state.timeline, strict=True)),
        steps=steps,
        my_role=str(me) if me else "",
        purpose=purpose,
        purged=purge_out(node, found.purged) if found.purged else None,
        done=done_note(request),
    )


async def case_step(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    data = await form(request)
    ref = request.match_info["ref"]
    try:
        kind = EventType(data.get("type", ""))
    except ValueError:
        raise Refused(422, "choose one of the steps the page offers") from None
    try:
        found, _ = await node.services.cases.add_event(
            ref, kind, data.get("note", ""), actor=signed_in(request).actor
        )
    except PermissionError as exc:
        raise Refused(
            403,
            f"the policy for {exc.args[0] if exc.args else 'a participant'} does not allow "
            "case events; ask the operator to allow case_event for that peer",
        ) from None
    purpose = data.get("purpose", "")
    raise back(
        request,
        f"/cases/{found.case_ref}" + ("?" + urlencode({"purpose": purpose}) if purpose else ""),
        f"recorded {kind}: the case is now {found.state.status}",
    )
