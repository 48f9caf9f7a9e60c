"""The auditor's pages: the audit timeline, its verification and bundle export; messages.

The timeline is newest first, a page at a time by ``seq`` (keyset: ``before`` is the
lowest seq of the page shown), with every filter the API has plus a looked-up document
or case: "who looked up this passport last month" (user story 13) is the document's
keyed hash, never its number, looked up in the leaves' indexed ``subject_hash`` column.
Verification and bundle export run in a worker thread, each with a page that follows it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange_node.audit.bundle import write_bundle
from exchange_node.audit.leaf import KINDS
from exchange_node.audit.log import LeafFilter
from exchange_node.console.app import Refused, form, node_of, render, signed_in
from exchange_node.console.status import peer_states
from exchange_node.domain.documents import DocumentKey
from exchange_node.errors import ExchangeError, ValidationError
from exchange_node.evidence import proof_of_delivery
from exchange_node.identity import all_signing_public_keys
from exchange_node.store.records import OutboxState

PAGE_SIZE = 50
_CASE_REF = re.compile(r"[A-Za-z]{1,3}-[0-9]{4}-[A-Za-z2-7]{8}")


def _day_ms(text: str, name: str) -> int | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise Refused(400, f"{name}: a date as YYYY-MM-DD, e.g. 2026-11-01") from None
    return int(day.timestamp() * 1000)


def audit_filter(node, q) -> tuple[LeafFilter, dict[str, str]]:
    """The leaf filter of the audit form's fields (query string or POSTed form), and the
    fields as given, to fill the form again."""
    fields = {
        k: (q.get(k) or "").strip()
        for k in ("kind", "actor", "peer", "since", "until", "doc_state", "doc_number", "case")
    }
    kind = fields["kind"] or None
    if kind is not None and kind not in KINDS:
        raise Refused(400, f"kind: one of the listed kinds, not {kind!r}")
    since = _day_ms(fields["since"], "from")
    until = _day_ms(fields["until"], "to")
    if until is not None:
        until += 86_400_000  # the whole "to" day
    subject = None
    if fields["doc_number"] or fields["doc_state"]:
        try:
            key = DocumentKey(fields["doc_state"].upper(), "P", fields["doc_number"].upper())
        except ValidationError as exc:
            raise Refused(400, f"document: {exc.message}") from None
        subject = node.services.subject_hash(key.issuing_state, key.number)
    elif fields["case"]:
        if not _CASE_REF.fullmatch(fields["case"]):
            raise Refused(400, "case: a case reference like JPN-2026-ABCDEFGH")
        subject = node.services.case_subject_hash(fields["case"])
    flt = LeafFilter(
        since=since,
        until=until,
        peer=fields["peer"] or None,
        kind=kind,
        actor=fields["actor"] or None,
        subject_hash=subject,
    )
    return flt, fields


async def audit(request: web.Request) -> web.Response:
    node = node_of(request)
    q = request.query
    flt, fields = audit_filter(node, q)
    before = q.get("before", "")
    if before and not before.isdigit():
        raise Refused(400, "before must be an entry number")
    page_filter = dataclasses.replace(
        flt, before_seq=int(before) if before else None, newest_first=True, limit=PAGE_SIZE + 1
    )
    rows = await asyncio.get_running_loop().run_in_executor(None, node.audit.select, page_filter)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        entries=[r.record for r in rows],
        fields=fields,
        query={k: v for k, v in fields.items() if v},
        next_before=rows[-1].seq if more else None,
        kinds=sorted(KINDS),
        checkpoint=node.audit.latest_checkpoint(),
        size=node.audit.size,
        witnesses=_witnesses(node),
    )


def _witnesses(node) -> list[tuple[str, Any]]:
    """Each peer and the latest consistent checkpoint this node holds of its log."""
    return [
        (s.peer_id, node.audit.peer_checkpoint(s.peer_id)) for s in peer_states(node) if s.record
    ]


def _keys(node) -> list[bytes]:
    return all_signing_public_keys(node.config.data_path, node.identity.passphrase)


@dataclass
class Verification:
    """One run of the whole log's verification, in a worker thread: the page shows how
    far it got until the report is in. One at a time per node."""

    started_at: int
    total: int
    by: str
    checked: int = 0
    report: Any = None
    error: str = ""
    done: bool = False


VERIFICATION = web.AppKey("console_verification", dict)


async def audit_verify(request: web.Request) -> web.StreamResponse:
    """Start recomputing the whole log against every key this node has signed with
    (unless a run is under way), and go to the page that follows it."""
    node = node_of(request)
    slot = request.app[VERIFICATION]
    current: Verification | None = slot.get("current")
    if current is None or current.done:
        keys = [Ed25519PublicKey.from_public_bytes(k) for k in _keys(node)]
        job = Verification(node.now_ms(), node.audit.size, signed_in(request).actor)
        slot["current"] = job

        def progress(checked: int) -> None:
            job.checked = checked

        def finished(future: asyncio.Future) -> None:
            if future.exception() is not None:
                job.error = str(future.exception())
            else:
                job.report = future.result()
                job.checked = job.report.leaves_checked
            job.done = True

        future = asyncio.get_running_loop().run_in_executor(None, node.audit.verify, keys, progress)
        future.add_done_callback(finished)
    raise web.HTTPSeeOther("/console/audit/verification")


async def audit_verification(request: web.Request) -> web.Response:
    node = node_of(request)
    job: Verification | None = request.app[VERIFICATION].get("current")
    return render(
        request,
        "audit_verify.html",
        job=job,
        elapsed=(node.now_ms() - job.started_at) if job else 0,
        checkpoint=node.audit.latest_checkpoint(),
        witnesses=_witnesses(node),
    )


@dataclass
class BundleExport:
    """One bundle of the entries a filter selects, written in a worker thread a leaf at
    a time to a private file (any number of entries, the memory of one): its page shows
    how many are written until the file can be downloaded. One at a time per auditor."""

    id: str
    by: str
    started_at: int
    path: Path
    total: int = 0
    written: int = 0
    error: str = ""
    done: bool = False


BUNDLES = web.AppKey("console_bundles", dict)
EXPORTS_DIR = "exports"
"""Where, in the data directory, bundles being exported are written (0700; files 0600,
removed when their auditor starts another export and when the node stops)."""


async def audit_bundle(request: web.Request) -> web.StreamResponse:
    """Start exporting the entries the form's filters select (oldest first), each with
    its inclusion proof against a checkpoint signed now (`audit verify-bundle` checks
    it), unless this auditor's previous export is still running; go to its page."""
    node = node_of(request)
    flt, _ = audit_filter(node, await form(request))
    by = signed_in(request).actor
    jobs: dict[str, BundleExport] = request.app[BUNDLES]
    running = [j for j in jobs.values() if j.by == by and not j.done]
    if running:
        raise web.HTTPSeeOther(f"/console/audit/bundles/{running[0].id}")
    for old in [j for j in jobs.values() if j.by == by]:
        del jobs[old.id]
        old.path.unlink(missing_ok=True)
    await node.sign_checkpoint()
    folder = node.config.data_path / EXPORTS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="audit-bundle-", suffix=".json", dir=folder)  # 0600
    job = BundleExport(secrets.token_hex(16), by, node.now_ms(), Path(name))
    jobs[job.id] = job

    def write() -> int:
        with os.fdopen(fd, "wb") as out:
            checkpoint = node.audit.latest_checkpoint()
            if checkpoint is not None:  # else write_bundle says so
                covered = dataclasses.replace(flt, before_seq=checkpoint.tree_size)
                job.total = node.audit.count(covered)
            leaves = node.audit.iter_query(flt)
            return write_bundle(out, node.audit, leaves, _keys(node), progress=_set_written(job))

    def finished(future: asyncio.Future) -> None:
        exc = future.exception()
        if exc is not None:
            job.error = exc.message if isinstance(exc, ExchangeError) else str(exc)
            job.path.unlink(missing_ok=True)
        else:
            job.written = future.result()
        job.done = True

    future = asyncio.get_running_loop().run_in_executor(None, write)
    future.add_done_callback(finished)
    raise web.HTTPSeeOther(f"/console/audit/bundles/{job.id}")


def _set_written(job: BundleExport):
    def progress(written: int) -> None:
        job.written = written

    return progress


def _bundle_job(request: web.Request) -> BundleExport:
    """The export the path names, if the signed-in auditor started it."""
    job = request.app[BUNDLES].get(request.match_info["id"])
    if job is None or job.by != signed_in(request).actor:
        raise Refused(404, "no such export: start one from the audit page")
    return job


async def audit_bundle_export(request: web.Request) -> web.Response:
    node = node_of(request)
    job = _bundle_job(request)
    return render(request, "audit_bundle.html", job=job, elapsed=node.now_ms() - job.started_at)


async def audit_bundle_file(request: web.Request) -> web.StreamResponse:
    """The finished bundle, streamed from its file."""
    node = node_of(request)
    job = _bundle_job(request)
    if not job.done or job.error:
        raise Refused(409, "this export has not finished: its page says how far it got")
    return web.FileResponse(
        job.path,
        headers={
            "Content-Type": "application/json",
            "Content-Disposition": f'attachment; filename="audit-bundle-{node.node_id}.json"',
        },
    )


async def remove_bundle_files(app: web.Application) -> None:
    """When the console stops: the exported files go (they were offered for download)."""
    for job in app[BUNDLES].values():
        job.path.unlink(missing_ok=True)


# --- messages ----------------------------------------------------------------------------


async def messages(request: web.Request) -> web.Response:
    """Sent messages by id, or newest first filtered by recipient, state and dates; one
    message's delivery to each recipient with the signed receipt."""
    node = node_of(request)
    q = request.query
    raw = (q.get("message_id") or "").strip().lower()
    fields = {k: (q.get(k) or "").strip() for k in ("peer", "state", "since", "until")}
    deliveries, receipts, listed, next_before = [], {}, [], None
    if raw:
        if not re.fullmatch(r"[0-9a-f]{32}", raw):
            raise Refused(400, "a message id is 32 hex digits")
        deliveries = node.store.message_status(bytes.fromhex(raw))
        for d in deliveries:
            if d.receipt_id is not None:
                stored = node.store.get_receipt(d.receipt_id)
                if stored is not None:
                    receipts[d.receipt_id] = base64.b64encode(stored.receipt).decode()
    else:
        state = None
        if fields["state"]:
            try:
                state = OutboxState(fields["state"])
            except ValueError:
                raise Refused(400, "state: queued, delivered or dead") from None
        before = q.get("before", "")
        if before and not before.isdigit():
            raise Refused(400, "before must be a row number")
        until = _day_ms(fields["until"], "to")
        listed = node.store.delivery_page(
            peer_id=fields["peer"] or None,
            state=state,
            since=_day_ms(fields["since"], "from"),
            until=None if until is None else until + 86_400_000,
            before_id=int(before) if before else None,
            limit=PAGE_SIZE + 1,
        )
        if len(listed) > PAGE_SIZE:
            listed = listed[:PAGE_SIZE]
            next_before = listed[-1].outbox_id
    return render(
        request,
        "messages.html",
        message_id=raw,
        deliveries=deliveries,
        receipts=receipts,
        listed=listed,
        fields=fields,
        query={k: v for k, v in fields.items() if v},
        next_before=next_before,
        peers=[p.node_id for p in node.store.list_peers()],
    )


async def message_proof(request: web.Request) -> web.Response:
    """The proof of delivery file of one message to one recipient (as `proof export`),
    against a checkpoint signed now so it covers the receipt's entries."""
    node = node_of(request)
    raw, peer = request.match_info["message_id"], request.match_info["peer"]
    if not re.fullmatch(r"[0-9a-f]{32}", raw):
        raise Refused(404, "a message id is 32 hex digits")
    await node.sign_checkpoint()
    # On the loop: the store reads here are the store's (one message, a few leaves).
    data = proof_of_delivery(
        node.store, node.audit, _keys(node), node.node_id, bytes.fromhex(raw), peer
    )
    return web.Response(
        body=data,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="proof-{raw[:12]}-{peer}.json"'},
    )
