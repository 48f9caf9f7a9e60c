"""``Idempotency-Key`` for the local API's submissions (draft-ietf-httpapi-idempotency-key-header).

A ``POST`` that submits something (a notice, a batch of notices, a case, a case step)
may carry ``Idempotency-Key: "<key>"``. The first request with a key is processed as
usual, and its answer (status and JSON body) is stored with the key, the calling token
and a hash of the request IN THE SAME TRANSACTION as the submission itself
(``tx.remember_idempotency`` from the service's ``then`` hook): after a crash either both
exist or neither, so a client that never got an answer retries with the same key and
the work is done exactly once.

- The same token, key and request again: the stored answer, same status and body, with
  ``Idempotent-Replayed: true``; nothing is submitted.
- The same token and key with another request (method, path or canonical body): 422
  ``idempotency_key_reused``.
- A key another token used is another key (keys are scoped per token).
- A duplicate still in flight is not refused: requests with the same token and key are
  serialised in this process, so the second waits for the first and then gets its
  stored answer (or, if the first failed and stored nothing, is processed itself).
- A request that fails stores nothing: a retry is processed afresh.
- Malformed keys are 400 ``idempotency_key_invalid``. Both refusals are audited as
  ``request.refused``.

Records are kept for the protocol's retention window and purged with the rest
(``store.purge_before``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
from aiohttp import web

from exchange_node.api.auth import actor_name, current_token
from exchange_node.api.problems import ApiProblem
from exchange_node.api.schemas import encoder
from exchange_node.audit import leaves
from exchange_node.errors import ConflictError
from exchange_node.store.records import IdempotencyRecord

if TYPE_CHECKING:
    from exchange_node.node import Node
    from exchange_node.store.sqlite import SqliteTransaction

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
KEY_CHARS = "A-Z a-z 0-9 . _ ~ : + = -"
_CHARS = "[A-Za-z0-9._~:+=-]"
_KEY = re.compile(f"{_CHARS}{{1,{MAX_KEY}}}")
KEY_PATTERN = f'^("{_CHARS}{{1,{MAX_KEY}}}"|{_CHARS}{{1,{MAX_KEY}}})$'
"""The header as the OpenAPI document declares it: a Structured Fields string (quoted,
as the draft says) or the bare key (as many clients send it)."""

Remember = Callable[["SqliteTransaction", msgspec.Struct], None]
"""Given to a submission: writes its answer with the key, inside its transaction."""


def parse_key(raw: str) -> str:
    """The key of an ``Idempotency-Key`` header value or path segment; ValueError if
    malformed."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not _KEY.fullmatch(text):
        raise ValueError(text)
    return text


def request_hash(method: str, path: str, body: bytes) -> bytes:
    """SHA-256 of the method, the path and the body as canonical JSON (keys sorted, no
    insignificant whitespace): the same request sent with other spacing or key order
    is the same request."""
    canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted") if body else b""
    return hashlib.sha256(b"\n".join((method.encode(), path.encode(), canonical))).digest()


class KeyLocks:
    """One lock per (token, key) while requests hold or wait for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, token_id: int, key: str) -> AsyncIterator[None]:
        k = (token_id, key)
        lock, users = self._locks.get(k, (asyncio.Lock(), 0))
        self._locks[k] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[k]
            if users == 1:
                del self._locks[k]
            else:
                self._locks[k] = (lock, users - 1)


async def refuse(
    node: Node, request: web.Request, op: str, status: int, code: str, detail: str
) -> NoReturn:
    """Audit the refusal as ``request.refused`` and raise it as a problem."""
    actor = actor_name(current_token(request))
    await node.record_audit(leaves.request_refused(node.now_ms(), actor, op, code))
    raise ApiProblem(status, code, detail, HEADER)


async def key_of(node: Node, request: web.Request, op: str, raw: str) -> str:
    """The key of ``raw``, or a refusal (audited) if it is malformed."""
    try:
        return parse_key(raw)
    except ValueError:
        pass
    await refuse(
        node, request, op, 400, "idempotency_key_invalid",
        f"an Idempotency-Key is 1 to {MAX_KEY} of {KEY_CHARS}, optionally in double "
        'quotes (Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324")',
    )  # fmt: skip


def replayed(record: IdempotencyRecord) -> web.Response:
    return web.Response(
        body=record.response,
        status=record.status,
        content_type="application/json",
        headers={REPLAYED: "true"},
    )


async def _answer_stored(
    node: Node, request: web.Request, op: str, record: IdempotencyRecord, digest: bytes
) -> web.Response:
    if record.request_hash == digest:
        return replayed(record)
    await refuse(
        node, request, op, 422, "idempotency_key_reused",
        f"this token already used this Idempotency-Key for another request "
        f"({record.method} {record.path}); use a fresh key for every new request",
    )  # fmt: skip


LOCKS = web.AppKey("idempotency_locks", KeyLocks)


async def idempotently(
    node: Node,
    request: web.Request,
    op: str,
    status: int,
    submit: Callable[[Remember | None], Awaitable[Any]],
) -> web.Response:
    """Answer a submission, once per token and ``Idempotency-Key`` when one is sent.

    ``submit(remember)`` does the work and returns the answer (a msgspec Struct);
    with a key, ``remember`` is not None and the submission must call
    ``remember(tx, answer)`` inside its own transaction (the services' ``then`` hooks).
    The body must already have been read and checked.
    """
    sent = request.headers.getall(HEADER, [])
    if not sent:
        return _json(await submit(None), status)
    key = await key_of(node, request, op, sent[0] if len(sent) == 1 else "")
    token = current_token(request)
    method, path = request.method, request.path
    digest = request_hash(method, path, await request.read())
    async with request.app[LOCKS].hold(token.id, key):
        stored = node.store.idempotency_record(token.id, key)
        if stored is not None:
            return await _answer_stored(node, request, op, stored, digest)
        now = node.now_ms()

        def remember(tx: SqliteTransaction, answer: msgspec.Struct) -> None:
            tx.remember_idempotency(
                IdempotencyRecord(
                    token.id, key, digest, method, path, status, encoder.encode(answer), now
                )
            )

        try:
            answer = await submit(remember)
        except ConflictError as exc:
            # Another writer recorded the key first (the lock is per process); this
            # submission was rolled back whole. Answer as that one was answered.
            stored = node.store.idempotency_record(token.id, key)
            if exc.code != "idempotency_key_exists" or stored is None:
                raise
            return await _answer_stored(node, request, op, stored, digest)
        stored = node.store.idempotency_record(token.id, key)
        if stored is None:  # the submission did not keep its answer: still answer it
            return _json(answer, status)
        return web.Response(body=stored.response, status=stored.status,
                            content_type="application/json")  # fmt: skip


def _json(obj: Any, status: int) -> web.Response:
    return web.Response(body=encoder.encode(obj), status=status, content_type="application/json")
