"""The peer API: what other nodes call, over mutual TLS.

    POST /exchange/v1/batch               a Batch in, a SignedReceipt out
    GET  /exchange/v1/card                this node's current SignedCard
    GET  /exchange/v1/audit/consistency   ?first=N&second=M: proof between two of our
                                          signed checkpoints (for peers witnessing us)

The peer is identified by the SHA-256 of its TLS client certificate, matched against
the pinned cards; an unknown certificate is refused (403) before the body is read.
Size and content type are checked from the headers before reading the body; overload
answers 429 with Retry-After instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from exchange_node.delivery.receiver import BatchRefused

if TYPE_CHECKING:
    from exchange_node.node import Node

log = structlog.get_logger("exchange_node.peer_api")

PROTOBUF = "application/x-protobuf"
NODE_KEY = web.AppKey("node", object)


def _problem(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"code": code, "detail": message, "status": status}, status=status, headers=headers
    )


def authenticated_peer(request: web.Request, node: Node) -> str | None:
    """Node id of the TLS client, None on plain HTTP; raises 403 for an unknown cert
    (audited with the certificate's hash)."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    fp = hashlib.sha256(der).digest() if der else b""
    peer = node.peer_by_tls_fingerprint(fp) if der else None
    if peer is None:
        node.audit_rejection("", "unknown_peer", {"tls_sha256": fp.hex()})
        raise web.HTTPForbidden(
            text='{"code":"unknown_peer","detail":"client certificate is not on a pinned card"}',
            content_type="application/json",
        )
    return peer


def _refuse(
    node: Node, peer: str | None, status: int, code: str, message: str, **attrs: str
) -> web.Response:
    """Refuse a whole batch: audited (``envelope.rejected``, scope batch), then answered
    with a problem document. Nothing of the batch is stored."""
    node.audit_rejection(peer or "", code, attrs)
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
    if node.inbound_slots.locked():
        # Back-pressure, not a refusal of content: counted, not audited (an overloaded
        # node must not write more per request), and the sender retries.
        node.metrics.overload.inc()
        return _problem(
            429, "overloaded", "too many batches in progress; retry later", {"Retry-After": "1"}
        )
    async with node.inbound_slots:
        data = await request.read()
        try:
            receipt = await node.receive_batch(data, peer)
        except BatchRefused as exc:
            return _refuse(node, peer, exc.status, exc.code, exc.message, **exc.attrs)
    return web.Response(body=receipt, content_type=PROTOBUF)


async def get_card(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    return web.Response(body=node.keys.card_bytes, content_type=PROTOBUF)


async def get_consistency(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    authenticated_peer(request, node)
    try:
        first = int(request.query["first"])
        second = int(request.query["second"])
    except (KeyError, ValueError):
        return _problem(400, "bad_query", "give first and second as tree sizes")
    try:
        proof = await asyncio.get_running_loop().run_in_executor(
            None, node.audit.consistency_proof, first, second
        )
    except Exception as exc:
        code = getattr(exc, "code", "proof_unavailable")
        return _problem(404, code, getattr(exc, "message", str(exc)))
    return web.json_response(
        {
            "first": proof.old_size,
            "second": proof.checkpoint.tree_size,
            "proof": [h.hex() for h in proof.hashes],
            "checkpoint": proof.checkpoint.note,
        }
    )


def create_peer_app(node: Node) -> web.Application:
    # client_max_size guards chunked bodies that lie about (or omit) their length.
    app = web.Application(client_max_size=node.config.peer_api.max_batch_bytes)
    app[NODE_KEY] = node
    app.router.add_post("/exchange/v1/batch", post_batch)
    app.router.add_get("/exchange/v1/card", get_card)
    app.router.add_get("/exchange/v1/audit/consistency", get_consistency)
    return app
