"""The local JSON API, ``/api/v1``: notices, document lookups, cases, audit, operations.

:data:`ROUTES` is the single table of endpoints: method, path, the roles allowed, the
request and response bodies. It drives the aiohttp routing, the role checks and the
OpenAPI document alike (``api/openapi.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from exchange_node.api import schemas as s
from exchange_node.api.auth import actor_name, current_token, require_roles
from exchange_node.api.idempotency import (
    KEY_PATTERN,
    LOCKS,
    KeyLocks,
    Remember,
    idempotently,
    key_of,
)
from exchange_node.api.problems import ApiProblem
from exchange_node.audit import leaves
from exchange_node.delivery.outbox import RecipientNotAllowed, UnknownRecipient
from exchange_node.domain.documents import Detection, DocumentKey, DocumentRecord, NoticeKind
from exchange_node.domain.repatriation import EventType, allowed_events
from exchange_node.errors import ExchangeError, ValidationError
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.services.cases import Participant, PersonalData, StepTaken
from exchange_node.services.documents import DOCUMENT_KINDS, IndexedNotice
from exchange_node.services.notices import BatchItemRefused, NoticeDraft
from exchange_node.store.records import DeliveryRow, HoldRow, OutboxState, PurgeRow, ReviewDue

if TYPE_CHECKING:
    from exchange_node.node import Node, Submitted

DOCUMENT_OFFICER = "document_officer"
CASE_OFFICER = "case_officer"
AUDITOR = "auditor"
OPERATOR = "operator"

MAX_BODY = 1024 * 1024
MAX_WAIT_SECONDS = 60
NODE = web.AppKey("node_v1", object)


def _node(request: web.Request) -> Node:
    return request.app[NODE]  # type: ignore[return-value]


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=s.encoder.encode(obj), status=status, content_type="application/json")


async def _body(request: web.Request, typ: type) -> Any:
    if request.content_type != "application/json":
        raise ApiProblem(
            415,
            "unsupported_media_type",
            f"send the body as application/json, not {request.content_type or 'nothing'}",
            "Content-Type",
        )
    data = await request.read()
    return msgspec.json.decode(data, type=typ)


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ApiProblem(400, "invalid_query", f"{name} must be an integer {lo} to {hi}", name)
    return value


# --- conversions ---------------------------------------------------------------------------


def notice_out(e: IndexedNotice) -> s.NoticeOut:
    n = e.notice
    d = n.detection
    return s.NoticeOut(
        notice_id=n.notice_id,
        kind=str(n.kind),
        sender_node=n.sender_node,
        sender_country=n.sender_country,
        document=s.DocumentOut(
            n.document.issuing_state, n.document.document_type, n.document.number
        ),
        issued_at_ms=n.issued_at_ms,
        effective_at_ms=e.effective_at_ms,
        supersedes=n.supersedes,
        detection=s.DetectionOut(d.place, d.detected_at_ms, d.authority) if d else None,
        remarks=e.remarks,
        reason=e.reason,
        message_id=e.message_id.hex() if e.message_id else None,
    )


def record_out(record: DocumentRecord, entries: tuple[IndexedNotice, ...]) -> s.DocumentRecordOut:
    by_id = {e.notice.notice_id: e for e in entries}
    history = [
        s.HistoryEntryOut(
            notice=notice_out(by_id[h.notice.notice_id]),
            in_effect=h.in_effect,
            superseded_by=h.superseded_by,
            withdrawn=h.withdrawn,
            anomaly=h.anomaly,
        )
        for h in record.history
    ]
    doc = record.document
    return s.DocumentRecordOut(
        document=s.DocumentOut(doc.issuing_state, doc.document_type, doc.number),
        status=str(record.status.kind) if record.status else None,
        status_notice_id=record.status.notice_id if record.status else None,
        fraud=[str(n.kind) for n in record.fraud],
        history=history,
        sources=sorted({h.notice.sender_node for h in record.history}),
        notice_ids=[h.notice.notice_id for h in record.history],
    )


def _delivery_state(row: DeliveryRow) -> str:
    if row.state == OutboxState.QUEUED:
        return "sent" if row.attempts else "queued"
    if row.outcome is not None:
        return str(row.outcome)
    return "dead"


# --- documents and notices -----------------------------------------------------------------


def _draft(req: s.NoticeRequest) -> tuple[NoticeDraft, list[str] | None]:
    """The service's draft and recipients (None: every allowed peer) of a request."""
    kind = NoticeKind(req.kind)
    document = None
    if req.document is not None:
        document = notice_pb2.DocumentRef(
            issuing_state=req.document.issuing_state,
            document_type=req.document.document_type,
            document_number=req.document.document_number,
            mrz=req.document.mrz,
        )
    elif kind != NoticeKind.WITHDRAWAL:
        raise ValidationError(
            "document_required", f"a {kind} notice names its document", "document"
        )
    if kind == NoticeKind.WITHDRAWAL and req.supersedes is None:
        raise ValidationError(
            "supersedes_required", "a withdrawal names the notice it withdraws", "supersedes"
        )
    detection = None
    if req.detection is not None:
        detection = Detection(
            req.detection.place, req.detection.detected_at_ms, req.detection.authority
        )
    draft = NoticeDraft(
        kind=kind,
        document=document,
        effective_at_ms=req.effective_at_ms,
        detection=detection,
        remarks=req.remarks,
        supersedes=bytes.fromhex(req.supersedes) if req.supersedes else None,
        reason=req.reason,
    )
    if req.recipients == "all":
        return draft, None
    if not req.recipients:
        raise ValidationError(
            "recipients_empty",
            'name at least one recipient, or "all" for every peer whose policy allows the'
            " kind (the default)",
            "recipients",
        )
    return draft, list(req.recipients)


def _notice_refusal(exc: Exception, where: str = "") -> Exception:
    """The problem for a refused notice; ``where`` prefixes the field (``notices[3].``)."""
    if isinstance(exc, RecipientNotAllowed):
        return ApiProblem(
            403,
            "policy_denied",
            f"the policy for {exc.peer} does not allow this kind of notice; leave it out or "
            "ask the operator to change the peer's policy",
            where + "recipients",
        )
    if isinstance(exc, UnknownRecipient):
        return ValidationError(
            "unknown_peer", f"{exc.peer} is not a pinned peer of this node", where + "recipients"
        )
    if isinstance(exc, ExchangeError) and where:
        field = where + exc.field if exc.field else where.removesuffix(".")
        return type(exc)(exc.code, exc.message, field)
    return exc


def _notice_accepted(entry: IndexedNotice, submitted: list[Submitted]) -> s.NoticeAccepted:
    return s.NoticeAccepted(
        notice_id=entry.notice.notice_id,
        kind=str(entry.notice.kind),
        messages=[s.MessageRef(x.peer_id, x.message_id.hex()) for x in submitted],
    )


def _keep(remember: Remember | None, build: Callable[..., msgspec.Struct]):
    """A service ``then`` hook keeping ``build(result)`` as the idempotent answer."""
    if remember is None:
        return None
    return lambda tx, result: remember(tx, build(result))


async def post_notice(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.NoticeRequest = await _body(request, s.NoticeRequest)
    draft, recipients = _draft(req)
    actor = actor_name(current_token(request))

    async def submit(remember: Remember | None) -> s.NoticeAccepted:
        then = _keep(remember, lambda results: _notice_accepted(*results[0]))
        try:
            entry, submitted = await node.services.notices.submit(
                draft, recipients, actor=actor, then=then
            )
        except (RecipientNotAllowed, UnknownRecipient) as exc:
            raise _notice_refusal(exc) from None
        return _notice_accepted(entry, submitted)

    return await idempotently(node, request, "submitNotice", 202, submit)


def _batch_accepted(results: list[tuple[IndexedNotice, list[Submitted]]]) -> s.NoticeBatchAccepted:
    return s.NoticeBatchAccepted([_notice_accepted(entry, sub) for entry, sub in results])


async def post_notice_batch(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.NoticeBatchRequest = await _body(request, s.NoticeBatchRequest)
    drafts = []
    for i, notice in enumerate(req.notices):
        try:
            drafts.append(_draft(notice))
        except ValidationError as exc:
            raise _notice_refusal(exc, f"notices[{i}].") from None
    actor = actor_name(current_token(request))

    async def submit(remember: Remember | None) -> s.NoticeBatchAccepted:
        try:
            results = await node.services.notices.submit_many(
                drafts, actor=actor, then=_keep(remember, _batch_accepted)
            )
        except BatchItemRefused as exc:
            raise _notice_refusal(exc.error, f"notices[{exc.index}].") from None
        return _batch_accepted(results)

    return await idempotently(node, request, "submitNoticeBatch", 202, submit)


async def get_message(request: web.Request) -> web.Response:
    node = _node(request)
    raw = request.match_info["message_id"]
    try:
        mid = bytes.fromhex(raw)
    except ValueError:
        mid = b""
    if len(mid) != 16:
        raise ValidationError("invalid_message_id", "a message id is 32 hex digits", "message_id")
    rows = node.store.message_status(mid)
    if not rows:
        raise ApiProblem(
            404, "message_not_found", f"no message {raw} was sent by this node", "message_id"
        )
    out = []
    for r in rows:
        receipt = None
        if r.receipt_id is not None:
            stored = node.store.get_receipt(r.receipt_id)
            if stored is not None:
                receipt = s.Receipt(
                    stored.id,
                    stored.peer_id,
                    stored.received_at,
                    base64.b64encode(stored.receipt).decode(),
                )
        out.append(
            s.RecipientDelivery(
                recipient=r.peer_id,
                state=_delivery_state(r),  # type: ignore[arg-type]
                attempts=r.attempts,
                created_at_ms=r.created_at,
                last_attempt_at_ms=r.last_attempt_at,
                last_error=r.last_error,
                delivered_at_ms=r.delivered_at,
                reason=r.reason,
                receipt=receipt,
            )
        )
    return _json(s.MessageStatus(mid.hex(), out))


def _encode_cursor(n: int) -> str:
    return base64.urlsafe_b64encode(f"inbox:{n}".encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        prefix, _, n = raw.partition(":")
        if prefix != "inbox" or not n.isdigit():
            raise ValueError
        return int(n)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiProblem(
            400, "invalid_cursor", "after must be a next_cursor this API returned", "after"
        ) from None


async def get_inbox(request: web.Request) -> web.Response:
    node = _node(request)
    after = _decode_cursor(request.query["after"]) if request.query.get("after") else 0
    limit = _query_int(request, "limit", 100, 1, 1000)
    wait = _query_int(request, "wait", 0, 0, MAX_WAIT_SECONDS)
    kinds = sorted(DOCUMENT_KINDS)
    rows = node.store.inbox_feed(after, limit, kinds)
    if not rows and wait:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not rows and (left := deadline - loop.time()) > 0:
            await node.services.notices.inbox_signal.wait(left)
            rows = node.store.inbox_feed(after, limit, kinds)
    items = []
    for r in rows:
        body = notice_pb2.Body.FromString(r.body)
        which = body.WhichOneof("content")
        inner = getattr(body, which) if which else None
        entry = node.services.index.get(inner.notice_id.hex()) if inner is not None else None
        items.append(
            s.InboxItem(
                cursor=_encode_cursor(r.cursor),
                sender=r.sender,
                message_id=r.message_id.hex(),
                received_at_ms=r.received_at,
                kind=r.kind,
                notice=notice_out(entry) if entry else None,
            )
        )
    last = rows[-1].cursor if rows else after
    return _json(s.InboxPage(items, _encode_cursor(last)))


async def _lookup(
    request: web.Request, queries: list[tuple[str, str, str]]
) -> list[s.LookupAnswer]:
    """Answer and audit each (state, number, type) query; keys are validated first so a
    bad batch is refused whole, naming the item."""
    node = _node(request)
    services = node.services
    keys = []
    for i, (state, number, doc_type) in enumerate(queries):
        try:
            keys.append(DocumentKey(state, doc_type, number))
        except ValidationError as exc:
            prefix = f"documents[{i}]." if len(queries) > 1 or request.method == "POST" else ""
            field = (exc.field or "").removeprefix("document.")
            raise ValidationError(exc.code, exc.message, prefix + field) from None
    answers = []
    events = []
    actor = actor_name(current_token(request))
    now = node.now_ms()
    for key in keys:
        answer = services.index.lookup(key.issuing_state, key.number, key.document_type)
        answers.append(
            s.LookupAnswer(
                issuing_state=key.issuing_state,
                document_number=key.number,
                document_type=key.document_type,
                known=bool(answer.records),
                records=[record_out(rec, entries) for rec, entries in answer.records],
            )
        )
        subject = services.subject_hash(key.issuing_state, key.number)
        events.append(leaves.document_lookup(now, actor, subject, bool(answer.records)))
    await node.record_audit(*events)
    return answers


async def get_document(request: web.Request) -> web.Response:
    state = request.match_info["state"]
    number = request.match_info["number"]
    doc_type = request.query.get("type", "")
    (answer,) = await _lookup(request, [(state, number, doc_type)])
    return _json(answer)


async def post_lookup(request: web.Request) -> web.Response:
    req: s.LookupRequest = await _body(request, s.LookupRequest)
    answers = await _lookup(
        request, [(q.issuing_state, q.document_number, q.document_type) for q in req.documents]
    )
    return _json(s.LookupBatchAnswer(answers))


# --- cases ---------------------------------------------------------------------------------


def case_out(node: Node, case) -> s.CaseOut:
    me = case.role_of(node.node_id)
    timeline = []
    for e, t in zip(case.events, case.state.timeline, strict=True):
        deliveries = []
        for peer, mid in sorted(e.message_ids.items()):
            rows = [r for r in node.store.message_status(bytes.fromhex(mid)) if r.peer_id == peer]
            if rows:
                deliveries.append(
                    s.StepDelivery(peer, mid, _delivery_state(rows[0]), rows[0].receipt_id)  # type: ignore[arg-type]
                )
        timeline.append(
            s.TimelineEntryOut(
                sequence=e.sequence,
                type=str(e.kind),
                actor=e.actor,
                actor_role=str(e.actor_role),
                at_ms=e.at_ms,
                from_status=str(t.from_status),
                to_status=str(t.to_status),
                performed_by=e.performed_by,
                note=e.note,
                received_message_id=e.received_message_id,
                deliveries=deliveries,
            )
        )
    p = case.personal
    return s.CaseOut(
        case_ref=case.case_ref,
        status=str(case.state.status),
        consent=case.state.consent,
        my_role=str(me),
        opened_by=case.opened_by,
        opened_at_ms=case.opened_at,
        participants=[s.ParticipantOut(x.node_id, str(x.role)) for x in case.participants],
        personal_data=s.PersonalDataIn(
            p.full_name, p.date_of_birth, p.nationality, p.sex, p.languages, p.special_needs
        )
        if p
        else None,
        allowed_events=(
            [str(x) for x in allowed_events(case.state, me)] if me and not case.purged else []
        ),
        timeline=timeline,
        purged=purge_out(node, case.purged) if case.purged else None,
    )


def purge_out(node: Node, p: PurgeRow) -> s.PurgeOut:
    confirmations = [
        s.StepDelivery(
            peer, mid, _delivery_state(row) if row else "queued", row.receipt_id if row else None
        )  # type: ignore[arg-type]
        for peer, mid, row in node.services.cases.confirmations(p)
    ]
    return s.PurgeOut(
        p.record_id,
        p.record_type,
        p.reason,  # type: ignore[arg-type]
        p.approver,
        p.purged_at,
        confirmations,
    )


def _step_out(step: StepTaken) -> s.CaseStepAccepted:
    return s.CaseStepAccepted(
        step.case_ref,
        step.sequence,
        step.status,
        [s.MessageRef(peer, mid.hex()) for peer, mid in sorted(step.message_ids.items())],
    )


def _policy_problem(exc: PermissionError) -> ApiProblem:
    peer = str(exc.args[0]) if exc.args else "a participant"
    return ApiProblem(
        403,
        "policy_denied",
        f"the policy for {peer} does not allow case events; ask the operator to allow "
        "case_event for that peer",
        "participants",
    )


async def post_case(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.CaseOpenRequest = await _body(request, s.CaseOpenRequest)
    personal = None
    if req.personal_data is not None:
        pd = req.personal_data
        personal = PersonalData(
            pd.full_name, pd.date_of_birth, pd.nationality, pd.sex, pd.languages, pd.special_needs
        )
    from exchange_node.domain.repatriation import Role

    participants = [Participant(p.node_id, Role(p.role)) for p in req.participants]
    actor = actor_name(current_token(request))

    async def submit(remember: Remember | None) -> s.CaseStepAccepted:
        try:
            case, ids = await node.services.cases.open_case(
                participants, personal, req.note, actor=actor, then=_keep(remember, _step_out)
            )
        except PermissionError as exc:
            raise _policy_problem(exc) from None
        return _step_out(StepTaken(case.case_ref, 1, str(case.state.status), ids))

    return await idempotently(node, request, "openCase", 201, submit)


async def post_case_event(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.CaseEventRequest = await _body(request, s.CaseEventRequest)
    actor = actor_name(current_token(request))

    async def submit(remember: Remember | None) -> s.CaseStepAccepted:
        try:
            case, ids = await node.services.cases.add_event(
                request.match_info["case_ref"],
                EventType(req.type),
                req.note,
                actor=actor,
                then=_keep(remember, _step_out),
            )
        except PermissionError as exc:
            raise _policy_problem(exc) from None
        return _step_out(StepTaken(case.case_ref, case.state.version, str(case.state.status), ids))

    return await idempotently(node, request, "addCaseEvent", 202, submit)


async def get_case(request: web.Request) -> web.Response:
    node = _node(request)
    services = node.services
    # Audited as case.accessed ("who accessed which cases"). The key hashes "case:<ref>";
    # no issuing state is lower case, so this never equals a document's hash.
    case = await services.cases.read(
        request.match_info["case_ref"],
        actor=actor_name(current_token(request)),
        purpose=request.query.get("purpose", ""),
    )
    return _json(case_out(node, case))


def _hold_target(case_ref: str | None, document: s.DocumentRefIn | None):
    """The case reference or the normalised (issuing state, number): exactly one."""
    if (case_ref is None) == (document is None):
        raise ValidationError(
            "hold_target_required", "name exactly one of case_ref or document", "case_ref"
        )
    if document is None:
        return case_ref, None
    key = DocumentKey(document.issuing_state, "", document.document_number)
    return None, (key.issuing_state, key.number)


def hold_out(h: HoldRow) -> s.HoldOut:
    return s.HoldOut(h.record_id, h.reason, h.placed_by, h.placed_at)


async def post_hold(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.HoldRequest = await _body(request, s.HoldRequest)
    case_ref, document = _hold_target(req.case_ref, req.document)
    hold = await node.services.retention.place_hold(
        case_ref, document, req.reason, actor=actor_name(current_token(request))
    )
    return _json(hold_out(hold), 201)


async def post_hold_release(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.HoldTarget = await _body(request, s.HoldTarget)
    case_ref, document = _hold_target(req.case_ref, req.document)
    hold = await node.services.retention.release_hold(
        case_ref, document, actor=actor_name(current_token(request))
    )
    return _json(hold_out(hold))


async def get_holds(request: web.Request) -> web.Response:
    return _json(s.HoldList([hold_out(h) for h in _node(request).store.holds()]))


def review_out(r: ReviewDue) -> s.ReviewOut:
    state, number = r.document or (None, None)
    return s.ReviewOut(r.record_id, r.record_type, r.since, r.due_at, state, number)


def review_list(node) -> s.ReviewList:
    retention = node.services.retention
    due = retention.reviews_due()
    return s.ReviewList([review_out(r) for r in due], retention.reviews_due_total())


async def get_reviews(request: web.Request) -> web.Response:
    return _json(review_list(_node(request)))


async def post_review_keep(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.KeepRequest = await _body(request, s.KeepRequest)
    await node.services.retention.keep(
        req.record, req.reason, actor=actor_name(current_token(request))
    )
    node.update_review_gauge()
    return _json(review_list(node))


async def post_subject_report(request: web.Request) -> web.Response:
    node = _node(request)
    req: s.SubjectReportRequest = await _body(request, s.SubjectReportRequest)
    case_ref, document = _hold_target(req.case_ref, req.document)
    refusal = (req.refusal.jurisdiction, req.refusal.basis) if req.refusal else None
    data, text = await node.services.reports.issue(
        case_ref=case_ref, document=document, purpose=req.purpose,
        actor=actor_name(current_token(request)), refusal=refusal,
    )  # fmt: skip
    doc = msgspec.json.decode(data)
    return _json(s.SubjectReportOut(**doc, text=text), 201)


async def post_case_erasure(request: web.Request) -> web.Response:
    """Crypto-shredding of one case's personal content, approved by the calling token
    (an operator: the officers who work a case do not erase it)."""
    node = _node(request)
    req: s.ErasureRequest = await _body(request, s.ErasureRequest)
    purge = await node.services.cases.erase(
        request.match_info["case_ref"], req.reason, approver=actor_name(current_token(request))
    )
    node.update_review_gauge()
    return _json(purge_out(node, purge))


# --- idempotency keys ----------------------------------------------------------------------


async def get_idempotency_key(request: web.Request) -> web.Response:
    node = _node(request)
    token = current_token(request)
    key = await key_of(node, request, "getIdempotencyKey", request.match_info["key"])
    record = node.store.idempotency_record(token.id, key)
    if record is None:
        raise ApiProblem(
            404,
            "idempotency_key_not_found",
            "this token made no request that succeeded with this Idempotency-Key within "
            f"the last {node.config.protocol.retention_days} days (a refused request "
            "stores nothing: send it again)",
            "key",
        )
    return _json(
        s.IdempotencyRecordOut(
            key=record.key,
            method=record.method,
            path=record.path,
            request_sha256=record.request_hash.hex(),
            status=record.status,
            created_at_ms=record.created_at,
            response=msgspec.Raw(record.response),
        )
    )


# --- audit ---------------------------------------------------------------------------------


def _checkpoint_out(cp) -> s.CheckpointOut:
    return s.CheckpointOut(cp.tree_size, cp.root_hash.hex(), cp.note)


async def get_audit_entries(request: web.Request) -> web.Response:
    node = _node(request)
    q = request.query
    limit = _query_int(request, "limit", 100, 1, 1000)
    after = _query_int(request, "after", -1, -1, 2**53) if "after" in q else None
    since = _query_int(request, "since", 0, 0, 2**53) if "since" in q else None
    until = _query_int(request, "until", 0, 0, 2**53) if "until" in q else None
    leaves = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: node.audit.query(
            since=since,
            until=until,
            peer=q.get("peer"),
            kind=q.get("kind"),
            message_id=q.get("message_id"),
            actor=q.get("actor"),
            limit=limit,
            after_seq=after,
        ),
    )
    entries = []
    for leaf in leaves:
        r = leaf.record
        entries.append(
            s.AuditEntry(
                r.seq,
                r.time,
                r.kind,
                r.actor,
                r.peer,
                r.message_id,
                r.reason,
                r.subject_hash,
                dict(r.attrs),
                leaf.data.decode(),
            )  # fmt: skip
        )
    next_after = leaves[-1].seq if len(leaves) == limit else None
    return _json(s.AuditPage(entries, next_after))


async def get_audit_proof(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        raise ApiProblem(400, "invalid_seq", "seq is a leaf number (0, 1, ...)", "seq") from None
    size = _query_int(request, "tree_size", 0, 1, 2**53) if "tree_size" in request.query else None
    proof = await asyncio.get_running_loop().run_in_executor(
        None, node.audit.inclusion_proof, seq, size
    )
    return _json(
        s.InclusionProofOut(
            proof.seq,
            proof.leaf.decode(),
            [h.hex() for h in proof.hashes],
            _checkpoint_out(proof.checkpoint),
        )
    )


async def get_audit_checkpoint(request: web.Request) -> web.Response:
    node = _node(request)
    cp = node.audit.latest_checkpoint()
    if cp is None:
        raise ApiProblem(404, "checkpoint_not_found", "no checkpoint has been signed yet")
    return _json(_checkpoint_out(cp))


# --- operator ------------------------------------------------------------------------------


async def get_peers(request: web.Request) -> web.Response:
    node = _node(request)
    return _json(
        s.PeerList(
            [
                s.PeerOut(
                    p.node_id,
                    p.fingerprint,
                    p.paused,
                    list(node.policy(p.node_id)),
                    p.last_contact_at,
                    p.last_error,
                )
                for p in node.store.list_peers()
            ]
        )
    )


async def get_queues(request: web.Request) -> web.Response:
    node = _node(request)
    return _json(
        s.QueueList(
            [
                s.QueueOut(
                    q.peer_id,
                    q.depth,
                    q.oldest_queued_at,
                    q.dead,
                    q.delivered,
                    q.paused,
                    q.last_contact_at,
                    q.last_error,
                )  # fmt: skip
                for q in node.store.queue_stats()
            ]
        )
    )


async def get_dead_letters(request: web.Request) -> web.Response:
    node = _node(request)
    limit = _query_int(request, "limit", 100, 1, 1000)
    return _json(
        s.DeadLetterList(
            [
                s.DeadLetterOut(
                    r.id,
                    r.peer_id,
                    r.message_id.hex(),
                    r.created_at,
                    r.attempts,
                    r.reason,
                    r.last_error,
                )  # fmt: skip
                for r in node.store.dead_letters(None, limit)
            ]
        )
    )


async def get_status(request: web.Request) -> web.Response:
    node = _node(request)
    stats = node.store.queue_stats()
    return _json(
        s.StatusOut(
            node_id=node.node_id,
            country=node.config.node.country,
            ready=node.ready and not node.health.reasons(),
            peers=len(node.keyring.peers),
            audit_size=node.audit.size,
            queued=sum(q.depth for q in stats),
            dead=sum(q.dead for q in stats),
            reviews_due=node.services.retention.reviews_due_total(),
            purges_unconfirmed=node.services.cases.unconfirmed_purges(),
        )
    )


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" | "query"
    description: str
    schema: dict
    required: bool = False


@dataclass(frozen=True)
class Route:
    op: str
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    roles: tuple[str, ...]
    tag: str
    summary: str
    status: int
    response: type
    request: type | None = None
    params: tuple[Param, ...] = ()
    idempotent: bool = False  # takes an Idempotency-Key (api/idempotency.py)


_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_HEX32 = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_CASE_REF = {"type": "string", "pattern": "^[A-Za-z]{1,3}-[0-9]{4}-[A-Za-z2-7]{8}$"}

ROUTES: tuple[Route, ...] = (
    Route("submitNotice", "POST", "/api/v1/notices", post_notice, (DOCUMENT_OFFICER,), "documents",
          "Send a status notice, fraud detection, correction or withdrawal", 202,
          s.NoticeAccepted, s.NoticeRequest, idempotent=True),
    Route("submitNoticeBatch", "POST", "/api/v1/notice-batches", post_notice_batch,
          (DOCUMENT_OFFICER,), "documents",
          f"Send up to {s.MAX_BATCH:,} notices in one transaction: all checked first, then all "
          "sent or none", 202, s.NoticeBatchAccepted, s.NoticeBatchRequest, idempotent=True),
    Route("getIdempotencyKey", "GET", "/api/v1/idempotency-keys/{key}", get_idempotency_key,
          (DOCUMENT_OFFICER, CASE_OFFICER), "documents",
          "What this token's request with this Idempotency-Key did: its stored answer", 200,
          s.IdempotencyRecordOut, None,
          (Param("key", "path", "the Idempotency-Key, without quotes",
                 {"type": "string", "pattern": KEY_PATTERN}, True),)),
    Route("getMessage", "GET", "/api/v1/messages/{message_id}", get_message,
          (DOCUMENT_OFFICER, CASE_OFFICER, OPERATOR), "documents",
          "Delivery state of a sent message per recipient, with the signed receipt", 200,
          s.MessageStatus, None,
          (Param("message_id", "path", "message id (hex)", _HEX32, True),)),
    Route("inbox", "GET", "/api/v1/inbox", get_inbox, (DOCUMENT_OFFICER,), "documents",
          "Received document notices after a cursor; long-polls up to `wait` seconds", 200,
          s.InboxPage, None,
          (Param("after", "query", "next_cursor of the previous page", _STR),
           Param("limit", "query", "at most this many items (1-1000)",
                 {"type": "integer", "minimum": 1, "maximum": 1000}),
           Param("wait", "query", "seconds to wait for new items (0-60)",
                 {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS}))),
    Route("getDocument", "GET", "/api/v1/documents/{state}/{number}", get_document,
          (DOCUMENT_OFFICER,), "documents",
          "Current status and history of one travel document (audited)", 200, s.LookupAnswer,
          None,
          (Param("state", "path", "ICAO issuing state code", _STR, True),
           Param("number", "path", "document number", _STR, True),
           Param("type", "query", "document type code", _STR))),
    Route("lookupDocuments", "POST", "/api/v1/documents/lookup", post_lookup,
          (DOCUMENT_OFFICER,), "documents",
          "Look up to 1,000 travel documents in one request (each audited)", 200,
          s.LookupBatchAnswer, s.LookupRequest),
    Route("openCase", "POST", "/api/v1/cases", post_case, (CASE_OFFICER,), "cases",
          "Open a repatriation case as the identifying state", 201, s.CaseStepAccepted,
          s.CaseOpenRequest, idempotent=True),
    Route("addCaseEvent", "POST", "/api/v1/cases/{case_ref}/events", post_case_event,
          (CASE_OFFICER,), "cases",
          "Record one step of a case; refused with 409 if the lifecycle does not allow it",
          202, s.CaseStepAccepted, s.CaseEventRequest,
          (Param("case_ref", "path", "case reference", _CASE_REF, True),), idempotent=True),
    Route("getCase", "GET", "/api/v1/cases/{case_ref}", get_case, (CASE_OFFICER,), "cases",
          "A case's state and timeline: who did what, when, with delivery receipts", 200,
          s.CaseOut, None,
          (Param("case_ref", "path", "case reference", _CASE_REF, True),
           Param("purpose", "query", "why the case is read: one of the node's configured "
                 "purpose codes (`[data_protection] purposes`), recorded in the audit entry",
                 {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"}, True))),
    Route("eraseCase", "POST", "/api/v1/cases/{case_ref}/erasure", post_case_erasure,
          (OPERATOR,), "cases",
          "Destroy a case's personal data and notes (its data key and ciphertext); its steps "
          "stay, and the erasure is audited as record.purged", 200, s.PurgeOut,
          s.ErasureRequest, (Param("case_ref", "path", "case reference", _CASE_REF, True),)),
    Route("placeHold", "POST", "/api/v1/holds", post_hold, (OPERATOR,), "operator",
          "Place a legal hold on a case or a document: nothing of it is purged, by the "
          "retention schedule or an erasure, until it is released (audited)", 201, s.HoldOut,
          s.HoldRequest),
    Route("releaseHold", "POST", "/api/v1/holds/release", post_hold_release, (OPERATOR,),
          "operator", "Release the legal hold on a case or a document (audited)", 200,
          s.HoldOut, s.HoldTarget),
    Route("holds", "GET", "/api/v1/holds", get_holds, (OPERATOR,), "operator",
          "Legal holds in force", 200, s.HoldList),
    Route("subjectReport", "POST", "/api/v1/subject-reports", post_subject_report,
          (OPERATOR,), "operator",
          "A signed subject access report on a case or a document: what is held, sources, "
          "purposes, recipients, every access, retention and holds; or a recorded refusal",
          201, s.SubjectReportOut, s.SubjectReportRequest),
    Route("reviews", "GET", "/api/v1/reviews", get_reviews, (OPERATOR,), "operator",
          "Records due for their periodic review: keep each (with a reason) or purge it",
          200, s.ReviewList),
    Route("keepRecord", "POST", "/api/v1/reviews/keep", post_review_keep, (OPERATOR,),
          "operator", "Keep a record at its periodic review, with a reason (audited); the "
          "records still due are answered", 200, s.ReviewList, s.KeepRequest),
    Route("auditEntries", "GET", "/api/v1/audit/entries", get_audit_entries, (AUDITOR,),
          "audit", "Audit log entries matching every given filter, in order", 200, s.AuditPage,
          None,
          (Param("kind", "query", "event kind, e.g. document.lookup", _STR),
           Param("actor", "query", "token name or node id", _STR),
           Param("peer", "query", "peer node id", _STR),
           Param("message_id", "query", "message id (hex)", _STR),
           Param("since", "query", "from this time (Unix ms, inclusive)", _INT),
           Param("until", "query", "before this time (Unix ms)", _INT),
           Param("after", "query", "continue after this seq", _INT),
           Param("limit", "query", "at most this many (1-1000)",
                 {"type": "integer", "minimum": 1, "maximum": 1000}))),
    Route("auditProof", "GET", "/api/v1/audit/entries/{seq}/proof", get_audit_proof,
          (AUDITOR,), "audit", "Inclusion proof of one entry with the checkpoint it is against",
          200, s.InclusionProofOut, None,
          (Param("seq", "path", "entry number", _INT, True),
           Param("tree_size", "query", "checkpoint size (default: latest)",
                 {"type": "integer", "minimum": 1}))),
    Route("auditCheckpoint", "GET", "/api/v1/audit/checkpoint", get_audit_checkpoint,
          (AUDITOR,), "audit", "The latest signed checkpoint", 200, s.CheckpointOut),
    Route("peers", "GET", "/api/v1/peers", get_peers, (OPERATOR,), "operator",
          "Pinned peers with their policy and last contact", 200, s.PeerList),
    Route("queues", "GET", "/api/v1/queues", get_queues, (OPERATOR,), "operator",
          "Outbox per peer: depth, age of the oldest, dead letters", 200, s.QueueList),
    Route("deadLetters", "GET", "/api/v1/dead-letters", get_dead_letters, (OPERATOR,),
          "operator", "Messages refused for good and not yet acknowledged, with their reason",
          200, s.DeadLetterList,
          None, (Param("limit", "query", "at most this many (1-1000)",
                       {"type": "integer", "minimum": 1, "maximum": 1000}),)),
    Route("status", "GET", "/api/v1/status", get_status, (OPERATOR,), "operator",
          "This node at a glance", 200, s.StatusOut),
)  # fmt: skip


def roles_of(op: str) -> frozenset[str]:
    """The roles the API allows for operation ``op`` (the console allows the same)."""
    for r in ROUTES:
        if r.op == op:
            return frozenset(r.roles)
    raise KeyError(op)


def add_routes(app: web.Application, node: Node) -> None:
    """Register every route of :data:`ROUTES` (and the OpenAPI document) on ``app``."""
    from exchange_node.api.openapi import openapi_bytes

    app[NODE] = node
    app[LOCKS] = KeyLocks()
    for r in ROUTES:
        app.router.add_route(r.method, r.path, require_roles(node, r.op, r.roles, r.handler))
    document = openapi_bytes()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get("/api/v1/openapi.json", openapi)
