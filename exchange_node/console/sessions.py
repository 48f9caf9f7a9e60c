"""Console sessions: signed in with an API token's secret, kept server-side.

The browser holds only a random session secret in an HttpOnly, SameSite=Strict cookie
(Secure when the console is served over TLS); the store keeps its SHA-256, the token it
was opened with, the form token every POST must carry (CSRF) and two bounds: an idle
timeout, renewed while the operator works, and an absolute one that no activity extends.
A session ends at sign-out, at either bound, or when its token is revoked (the store
deletes the token's sessions with it, and every request checks the token is active).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from exchange_node.api.auth import actor_name
from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.store.records import ConsoleSession, TokenRecord
from exchange_node.store.sqlite import hash_token_secret

if TYPE_CHECKING:
    from exchange_node.node import Node

COOKIE = "xn_console"
SIGNIN_COOKIE = "xn_console_signin"  # double-submit form token of the sign-in form
IDLE_MS = 15 * 60 * 1000
ABSOLUTE_MS = 8 * 60 * 60 * 1000
TOUCH_MS = 10 * 1000  # last_seen_at is written at most this often


@dataclass(frozen=True)
class SignedIn:
    """The session of a request and the active token behind it."""

    session: ConsoleSession
    token: TokenRecord

    @property
    def actor(self) -> str:
        return actor_name(self.token)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Sessions:
    def __init__(self, node: Node, idle_ms: int = IDLE_MS, absolute_ms: int = ABSOLUTE_MS):
        self.node = node
        self.idle_ms = idle_ms
        self.absolute_ms = absolute_ms

    async def sign_in(self, token_secret: str) -> tuple[str, SignedIn] | None:
        """A new session for the active token with this secret, or None (audited as
        ``auth.failed`` ``token_invalid``, like the API)."""
        node = self.node
        now = node.now_ms()
        token = node.store.find_active_token(hash_token_secret(token_secret.strip()))
        if token is None:
            await node.record_audit(
                leaves.auth_failed(now, "anonymous", "token_invalid", "console.sign_in")
            )
            return None
        if token.expired(now):
            await node.record_audit(
                leaves.auth_failed(now, actor_name(token), "token_expired", "console.sign_in")
            )
            return None
        secret = secrets.token_urlsafe(32)
        session = ConsoleSession(
            id_hash=_hash(secret),
            token_id=token.id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.absolute_ms,
        )
        leaf = leaves.console_session(
            now, LeafKind.CONSOLE_SIGNED_IN, actor_name(token), "signed_in"
        )
        await node.store.create_console_session(session, audit=[leaf])
        return secret, SignedIn(session, token)

    async def current(self, request: web.Request) -> SignedIn | None:
        """The live session the request's cookie names; an expired one is ended here."""
        secret = request.cookies.get(COOKIE)
        if not secret:
            return None
        node = self.node
        session = node.store.console_session(_hash(secret))
        if session is None:
            return None
        now = node.now_ms()
        token = node.store.get_token(session.token_id)
        why = None
        if token is None or not token.active:
            why = "token_revoked"
        elif token.expired(now):
            why = "token_expired"
        elif now >= session.expires_at or now >= session.last_seen_at + self.idle_ms:
            why = "expired"
        if why is not None:
            actor = actor_name(token) if token else f"token:{session.token_id}"
            await self._end(session, actor, why)
            return None
        if now - session.last_seen_at >= TOUCH_MS:
            await node.store.touch_console_session(session.id_hash, now)
        return SignedIn(session, token)  # type: ignore[arg-type]

    async def sign_out(self, signed_in: SignedIn) -> None:
        await self._end(signed_in.session, signed_in.actor, "signed_out")

    async def _end(self, session: ConsoleSession, actor: str, why: str) -> None:
        leaf = leaves.console_session(self.node.now_ms(), LeafKind.CONSOLE_SIGNED_OUT, actor, why)
        await self.node.store.delete_console_session(
            session.id_hash, audit=lambda gone: [leaf] if gone else []
        )


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, path="/console", httponly=True, secure=request.secure, samesite="Strict"
    )
