"""Bearer tokens and roles for the local JSON API.

``Authorization: Bearer xn_...``: the secret is hashed (SHA-256) and looked up among the
active tokens in the store; the secret itself is never kept or logged. Every denial is
answered 401 (no, unknown or expired token) or 403 (a token without one of the endpoint's roles)
and audited as ``auth.failed`` with the token's name when it is known.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from exchange_node.api.problems import ApiProblem
from exchange_node.audit import leaves
from exchange_node.store.records import TokenRecord
from exchange_node.store.sqlite import hash_token_secret

if TYPE_CHECKING:
    from exchange_node.node import Node

TOKEN_KEY = (
    web.RequestKey("token", TokenRecord) if hasattr(web, "RequestKey") else "exchange_node.token"
)
_AUDITABLE_NAME = re.compile(r"[A-Za-z0-9._:@/+\-]{1,120}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenCache:
    """Active tokens by secret hash, each answer kept for at most ``ttl`` seconds.

    A lookup per request is a database read on the event loop; with the cache a busy
    border system costs one read a second. The price: a token revoked from the command
    line (another process) stops working within ``ttl`` seconds, not at once.
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._entries: dict[bytes, tuple[TokenRecord | None, float]] = {}

    def find(self, node: Node, secret_hash: bytes) -> TokenRecord | None:
        now = time.monotonic()
        hit = self._entries.get(secret_hash)
        if hit is not None and hit[1] > now:
            return hit[0]
        token = node.store.find_active_token(secret_hash)
        if len(self._entries) > 10_000:  # unknown secrets must not grow it without bound
            self._entries.clear()
        self._entries[secret_hash] = (token, now + self.ttl)
        return token

    def clear(self) -> None:
        self._entries.clear()


_CACHES: weakref.WeakKeyDictionary[Node, TokenCache] = weakref.WeakKeyDictionary()


def forget_tokens(node: Node) -> None:
    """Drop the node's cached token answers (another process changed the tokens)."""
    cache = _CACHES.get(node)
    if cache is not None:
        cache.clear()


def actor_name(token: TokenRecord) -> str:
    """The token's name as an audit actor (its id when the name has other characters)."""
    return token.name if _AUDITABLE_NAME.fullmatch(token.name) else f"token:{token.id}"


def current_token(request: web.Request) -> TokenRecord:
    return request[TOKEN_KEY]


async def _deny(node: Node, status: int, reason: str, actor: str, op: str, detail: str):
    await node.record_audit(leaves.auth_failed(node.now_ms(), actor, reason, op))
    headers = {"WWW-Authenticate": 'Bearer realm="exchange-node"'} if status == 401 else None
    raise ApiProblem(status, reason, detail, "Authorization" if status == 401 else None, headers)


async def check_role(node: Node, op: str, allowed: frozenset[str], token: TokenRecord) -> None:
    """Refuse (403 ``role_forbidden``, audited) a token without one of ``allowed``: the
    one role check of the JSON API and the console alike."""
    if token.role not in allowed:
        await _deny(
            node, 403, "role_forbidden", actor_name(token), op,
            f"a {token.role} token may not call this; it needs one of: "
            + ", ".join(sorted(allowed)),
        )  # fmt: skip


def require_roles(node: Node, op: str, roles: Sequence[str], handler: Handler) -> Handler:
    """Wrap ``handler`` so that it runs only for an active token with one of ``roles``."""
    allowed = frozenset(roles)
    tokens = _CACHES.setdefault(node, TokenCache())

    async def guarded(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            await _deny(
                node, 401, "token_missing", "anonymous", op,
                "send Authorization: Bearer <token> (create one with `exchange-node token create`)",
            )  # fmt: skip
        token = tokens.find(node, hash_token_secret(secret.strip()))
        if token is None:
            await _deny(
                node, 401, "token_invalid", "anonymous", op,
                "the token is unknown or revoked; ask the operator for a new one",
            )  # fmt: skip
        if token.expired(node.now_ms()):
            await _deny(
                node, 401, "token_expired", actor_name(token), op,
                "the token has expired; ask the operator for a new one"
                " (`exchange-node token create`)",
            )  # fmt: skip
        await check_role(node, op, allowed, token)
        request[TOKEN_KEY] = token
        return await handler(request)

    return guarded
