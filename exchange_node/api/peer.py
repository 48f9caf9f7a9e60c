"""The peer API: what other nodes call, over mutual TLS.

    POST /exchange/v1/batch               a Batch in, a SignedReceipt out
    GET  /exchange/v1/card                this node's current SignedCard
    GET  /exchange/v1/audit/consistency   ?first=N&second=M: proof between two of our
                                          signed checkpoints (for peers witnessing us):
                                          404 only when no such proof can exist, 503
                                          when it cannot be given for now
    POST /exchange/v1/witness/add-checkpoint  C2SP tlog-witness: cosign a pinned
                                          peer's checkpoint (``audit/cosigner.py``)
    GET  /exchange/v1/witness/<sha256 of origin, hex>/checkpoint  the latest one
                                          cosigned for that log, with the cosignature

The peer is identified by the SHA-256 of its TLS client certificate, matched against
the pinned cards. A certificate on no pinned card never gets this far: the TLS
handshake refuses it (``peer_server.py`` records that); a connection opened before its
peer was removed is refused 403 before the body is read. Size and content type are checked from the headers before
reading the body, and the body must arrive within a deadline; overload answers 429 with
Retry-After instead of queueing without bound, and one peer gets only a share of the
slots. Every error answer is the JSON problem document, with no request bytes in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from exchange_node.api.peer_server import (
    IDLE_TIMEOUT,
    SERVER_HEADER,
    PeerRequestHandler,
    PeerSite,
    handshake_reason,
    remote_of,
)
from exchange_node.audit import leaves
from exchange_node.audit.tlog_witness import MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE, WitnessRefusal
from exchange_node.delivery.client import PROTOBUF, WITNESS_PATH
from exchange_node.delivery.receiver import BatchRefused
from exchange_node.errors import ExchangeError, NotFoundError

if TYPE_CHECKING:
    from exchange_node.node import Node

log = structlog.get_logger("exchange_node.peer_api")

NODE_KEY = web.AppKey("node", object)


def _problem(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"code": code, "detail": message, "status": status}, status=status, headers=headers
    )


class Refused(Exception):
    """A refusal already recorded; the middleware answers with its response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _tls_peer(request: web.BaseRequest, node: Node) -> tuple[bool, bytes, str | None]:
    """(over TLS, SHA-256 of the client certificate, pinned node id or None)."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    if ssl_object is None:
        return False, b"", None
    der = ssl_object.getpeercert(binary_form=True)
    fp = hashlib.sha256(der).digest() if der else b""
    return True, fp, node.directory.by_tls_fingerprint(fp) if der else None


def authenticated_peer(request: web.Request, node: Node) -> str | None:
    """Node id of the TLS client, None on plain HTTP; raises 403 for a certificate no
    pinned card has any more (its peer was removed after the connection was opened),
    audited with the certificate's hash."""
    tls, fp, peer = _tls_peer(request, node)
    if not tls:
        return None
    if peer is None:
        raise Refused(
            _refuse(
                node,
                None,
                403,
                "unknown_peer",
                "client certificate is not on a pinned card",
                tls_sha256=fp.hex(),
            )
        )
    return peer


def _remote(request: web.BaseRequest) -> tuple[str, str]:
    transport = request.transport
    return remote_of(transport.get_extra_info("peername") if transport else None)


def request_refused(node: Node, request: web.BaseRequest, status: int, code: str) -> None:
    """Record a request refused before a handler took it: counted, and audited within the
    refusal budget (``request.refused``, operation ``peer_api``)."""
    _, _, peer = _tls_peer(request, node)
    node.metrics.requests_refused.labels(code).inc()
    remote = _remote(request)
    if node.request_refusals.record(
        lambda: leaves.peer_request_refused(node.now_ms(), peer or "", code, remote, status)
    ):
        log.warning(
            "peer_api.request_refused", status=status, code=code, peer=peer, remote=remote[0]
        )


def handshake_refused(node: Node, remote: tuple[str, str], exc: BaseException) -> None:
    """Record a connection refused in the TLS handshake: counted by reason, logged and
    audited within the refusal budget (``auth.failed``, operation
    ``peer_api.handshake``)."""
    reason, tls_error = handshake_reason(exc)
    node.metrics.handshakes_refused.labels(reason).inc()
    if node.handshake_refusals.record(
        lambda: leaves.handshake_refused(node.now_ms(), reason, remote, tls_error)
    ):
        log.warning(
            "peer_api.handshake_refused", reason=reason, remote=remote[0], tls_error=tls_error
        )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


@web.middleware
async def _problems(request: web.Request, handler) -> web.StreamResponse:
    """Every refusal in the JSON error format: recorded ones as they are, aiohttp's own
    (no such path or method) recorded here."""
    try:
        return await handler(request)
    except Refused as exc:
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
        code = _HTTP_CODES.get(exc.status, "request_refused")
        request_refused(node, request, exc.status, code)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _problem(exc.status, code, exc.reason, headers)


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


def _refuse(
    node: Node, peer: str | None, status: int, code: str, message: str, **attrs: str
) -> web.Response:
    """Refuse a whole batch: audited (``envelope.rejected``, scope batch), then answered
    with a problem document. Nothing of the batch is stored."""
    node.inbound.audit_refusal(peer or "", code, attrs)
    return _problem(status, code, message)


async def post_batch(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    peer = authenticated_peer(request, node)
    if request.content_type != PROTOBUF:
        return _refuse(node, peer, 415, "unsupported_media_type", f"send the batch as {PROTOBUF}")
    limit = node.config.peer_api.max_batch_bytes
    if request.content_length is None:
        return _refuse(node, peer, 411, "length_required", "send Content-Length with the batch")
    if request.content_length > limit:
        return _refuse(node, peer, 413, "batch_oversized", f"batches are limited to {limit} bytes")
    # Back-pressure, not a refusal of content: counted, not audited (an overloaded node
    # must not write more per request), and the sender retries. One peer gets a share of
    # the slots, never all of them; on plain HTTP a remote address stands for the peer.
    key = peer or f"plain:{request.remote}"
    busy = node.inbound.admit(key)
    if busy == "peer_limit":
        node.metrics.peer_limit.labels(peer or "").inc()
        return _problem(
            429,
            "peer_limit",
            "this peer has as many batches in progress as it may; retry later",
            {"Retry-After": "1"},
        )
    if busy is not None:
        node.metrics.overload.inc()
        return _problem(
            429, "overloaded", "too many batches in progress; retry later", {"Retry-After": "1"}
        )
    try:
        async with node.inbound.slots:
            timeout = node.config.peer_api.body_timeout_seconds
            try:
                async with asyncio.timeout(timeout):
                    data = await request.read()
            except TimeoutError:
                # A body held back (or shorter than its Content-Length) must not hold
                # its slot: refused, and the connection closed.
                resp = _refuse(
                    node,
                    peer,
                    408,
                    "body_timeout",
                    f"the batch body did not arrive within {timeout:g} seconds of its headers",
                )
                resp.force_close()
                return resp
            except web.HTTPRequestEntityTooLarge:
                return _refuse(
                    node, peer, 413, "batch_oversized", f"batches are limited to {limit} bytes"
                )
            try:
                receipt = await node.receive_batch(data, peer)
            except BatchRefused as exc:
                return _refuse(node, peer, exc.status, exc.code, exc.message, **exc.attrs)
    finally:
        node.inbound.release(key)
    return web.Response(body=receipt, content_type=PROTOBUF)


async def get_card(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    return web.Response(body=node.keys.card_bytes, content_type=PROTOBUF)


async def get_consistency(request: web.Request) -> web.Response:
    """Answers, in docs/protocol.md 17.4 terms: 400 for a malformed request, 404 when the
    proof cannot exist (no checkpoint of size ``second`` was ever signed here, or the
    stored tree no longer matches what was signed), 503 when the audit log failed to
    give it for now. A witness raises its alarm on 404 only."""
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    authenticated_peer(request, node)
    first, second = (request.query.get(k, "") for k in ("first", "second"))
    if not (_SIZE.fullmatch(first) and _SIZE.fullmatch(second)):
        return _problem(400, "bad_query", "give first and second as tree sizes (decimal digits)")
    first_size, second_size = int(first), int(second)
    if not 0 < first_size <= second_size:
        return _problem(
            400, "consistency_size_invalid", "first must be at least 1 and at most second"
        )
    try:
        proof = await asyncio.get_running_loop().run_in_executor(
            None, node.audit.consistency_proof, first_size, second_size
        )
    except NotFoundError:
        return _problem(
            404,
            "checkpoint_not_found",
            f"this log has signed no checkpoint of size {second_size}: no proof to it can exist",
        )
    except ExchangeError as exc:
        if exc.code == "audit_log_corrupt":  # what was signed can no longer be proved
            return _problem(404, exc.code, exc.message)
        log.error("audit.consistency_failed", code=exc.code, error=exc.message)
        return _problem(503, "audit_unavailable", "the audit log could not give the proof now")
    except Exception as exc:  # the database failed (locked, I/O): not an answer
        log.error("audit.consistency_failed", error=f"{type(exc).__name__}: {exc}")
        return _problem(
            503, "audit_unavailable", "the audit log could not give the proof now; ask again later"
        )
    return web.json_response(
        {
            "first": proof.old_size,
            "second": proof.checkpoint.tree_size,
            "proof": [h.hex() for h in proof.hashes],
            "checkpoint": proof.checkpoint.note,
        }
    )


_SIZE = re.compile(r"[0-9]{1,18}")


async def post_add_checkpoint(request: web.Request) -> web.StreamResponse:
    """C2SP tlog-witness ``add-checkpoint`` (docs/protocol.md 17.6): 200 with this
    node's cosignature line, 409 ``text/x.tlog.size`` with the size it last cosigned,
    or the refusal's status (400, 403, 404, 422) with the JSON problem document. 404
    also when this node does not cosign (``[witness] cosign = false``)."""
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    peer = authenticated_peer(request, node)
    if not node.config.witness.cosign:
        return _problem(404, "witness_disabled", "this node does not cosign checkpoints")
    if request.content_length is None:
        return _problem(411, "length_required", "send Content-Length with the request")
    if request.content_length > MAX_REQUEST_BYTES:
        return _problem(413, "request_too_large", f"at most {MAX_REQUEST_BYTES} bytes")
    timeout = node.config.peer_api.body_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            data = await request.read()
    except TimeoutError:
        resp = _problem(408, "body_timeout", f"the body did not arrive within {timeout:g} s")
        resp.force_close()
        return resp
    try:
        cosigned = await node.cosigner.add_checkpoint(data, peer)
    except WitnessRefusal as refusal:
        node.metrics.witness_refused.labels(refusal.code).inc()
        log.warning(
            "witness.refused", peer=peer, code=refusal.code, status=refusal.status,
            origin=refusal.origin,
        )  # fmt: skip
        if refusal.status == 409:
            return web.Response(
                status=409,
                body=f"{refusal.latest_size}\n".encode(),
                headers={"Content-Type": SIZE_CONTENT_TYPE},
            )
        return _problem(refusal.status, refusal.code, refusal.message)
    except ExchangeError as exc:  # the store failed: nothing was cosigned, ask again
        log.error("witness.failed", code=exc.code, error=exc.message)
        return _problem(503, "witness_unavailable", "could not cosign now; ask again later")
    return web.Response(
        body=cosigned.cosignature.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
    )


async def serve_peer_api(
    node: Node, host: str, port: int, ssl_context
) -> tuple[web.AppRunner, PeerSite]:
    """Start the peer API on ``host:port``: its runner and its site (``bound_port``)."""
    runner = web.AppRunner(create_peer_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    server = runner.server
    assert server is not None
    loop = asyncio.get_running_loop()

    def handler() -> PeerRequestHandler:
        return PeerRequestHandler(
            server,
            loop=loop,
            access_log=None,
            keepalive_timeout=IDLE_TIMEOUT,
            on_refused=lambda request, status, code: request_refused(node, request, status, code),
        )

    site = PeerSite(
        runner,
        host,
        port,
        ssl_context=ssl_context,
        handler_factory=handler,
        on_handshake_refused=lambda remote, exc: handshake_refused(node, remote, exc),
    )
    await site.start()
    return runner, site


async def get_witnessed_checkpoint(request: web.Request) -> web.Response:
    """tlog-witness monitoring: the latest checkpoint cosigned for the log whose origin
    hashes (SHA-256, lowercase hex) to the path's, with the log's signature and this
    node's cosignature; 404 if none was cosigned."""
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    authenticated_peer(request, node)
    wanted = request.match_info["origin_hash"]
    for row in node.store.witness_logs():
        if hashlib.sha256(row.origin.encode()).hexdigest() == wanted:
            return web.Response(
                body=row.note.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
            )
    return _problem(404, "log_unknown", "no checkpoint of that log was cosigned here")


def create_peer_app(node: Node) -> web.Application:
    # client_max_size guards chunked bodies that lie about (or omit) their length.
    app = web.Application(
        client_max_size=node.config.peer_api.max_batch_bytes, middlewares=[_problems]
    )
    app[NODE_KEY] = node
    app.on_response_prepare.append(_server_header)
    app.router.add_post("/exchange/v1/batch", post_batch)
    app.router.add_get("/exchange/v1/card", get_card)
    app.router.add_get("/exchange/v1/audit/consistency", get_consistency)
    app.router.add_post(WITNESS_PATH, post_add_checkpoint)
    app.router.add_get(
        "/exchange/v1/witness/{origin_hash:[0-9a-f]{64}}/checkpoint", get_witnessed_checkpoint
    )
    return app
