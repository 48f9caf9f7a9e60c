"""Routing, sign-in and the checks every console page and action goes through.

:data:`PAGES` lists each page and action with the roles allowed. The guard around a
handler finds the session (else: to the sign-in page), applies the API's role check
(``api/auth.check_role``, audited), and for a POST compares the form's ``csrf`` field
with the session's (a refusal is audited as ``auth.failed``, ``csrf_missing`` or
``csrf_invalid``). The middleware sets the security headers on every answer and turns
errors into a page saying what went wrong in words.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp_jinja2
import structlog
from aiohttp import web

from exchange_node.api.auth import check_role
from exchange_node.api.problems import ApiProblem
from exchange_node.audit import leaves
from exchange_node.console.sessions import (
    COOKIE,
    SIGNIN_COOKIE,
    Sessions,
    SignedIn,
    same,
    set_cookie,
)
from exchange_node.errors import ExchangeError

if TYPE_CHECKING:
    from exchange_node.node import Node

log = structlog.get_logger("exchange_node.console")

CONSOLE = web.AppKey("console_node", object)
SESSIONS = web.AppKey("console_sessions", Sessions)
PAGE_TABLE = web.AppKey("console_pages", tuple)
SIGNED_IN = (
    web.RequestKey("console_signed_in", SignedIn)
    if hasattr(web, "RequestKey")
    else "exchange_node.console.signed_in"
)

CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refused(Exception):
    """An answer that is a page of its own: ``status`` and a sentence to act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Page:
    name: str  # attrs.operation of refusals: console.<name>
    method: str
    path: str
    handler: Handler
    roles: frozenset[str]
    nav: str = ""  # its title in the navigation bar (pages only)


def node_of(request: web.Request) -> Node:
    return request.app[CONSOLE]  # type: ignore[return-value]


def signed_in(request: web.Request) -> SignedIn:
    return request[SIGNED_IN]


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    me: SignedIn | None = request.get(SIGNED_IN)
    nav = []
    if me is not None:
        nav = [
            (p.nav, "/console" + p.path)
            for p in request.app[PAGE_TABLE]
            if p.nav and me.token.role in p.roles
        ]
    context.update(me=me, nav=nav, path=request.path, now=node_of(request).now_ms())
    return aiohttp_jinja2.render_template(template, request, context, status=status)


async def form(request: web.Request) -> dict[str, str]:
    """The POSTed form (checked against CSRF by the guard already)."""
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _note_mac(request: web.Request, note: str) -> str:
    key = signed_in(request).session.csrf.encode()
    return hmac.new(key, note.encode(), hashlib.sha256).hexdigest()[:32]


def back(request: web.Request, path: str, note: str = "") -> web.HTTPSeeOther:
    """Post/redirect/get: to ``path`` with a one-line note of what was done, MACed
    with the session's secret so that a link from elsewhere cannot put words on a
    console page (:func:`done_note`)."""
    glue = "&" if "?" in path else "?"
    query = glue + urlencode({"done": note, "mac": _note_mac(request, note)}) if note else ""
    return web.HTTPSeeOther("/console" + path + query)


def done_note(request: web.Request) -> str:
    """The note :func:`back` passed, if this session's MAC vouches for it."""
    note = request.query.get("done", "")
    if note and hmac.compare_digest(request.query.get("mac", ""), _note_mac(request, note)):
        return note
    return ""


# --- the guard ---------------------------------------------------------------------------


def guarded(page: Page) -> Handler:
    op = f"console.{page.name}"

    async def handler(request: web.Request) -> web.StreamResponse:
        node = node_of(request)
        me = await request.app[SESSIONS].current(request)
        if me is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/console/sign-in")
            # A form sent without a live session (expired, or from another site, whose
            # requests carry no SameSite=Strict cookie): refused and audited.
            await node.record_audit(
                leaves.auth_failed(node.now_ms(), "anonymous", "session_missing", op)
            )
            raise Refused(401, "your session has ended; sign in again")
        request[SIGNED_IN] = me
        await check_role(node, op, page.roles, me.token)
        if request.method == "POST":
            data = await request.post()
            sent = data.get("csrf")
            if not isinstance(sent, str) or not sent:
                await _csrf_refused(node, me, op, "csrf_missing")
            elif not same(sent, me.session.csrf):
                await _csrf_refused(node, me, op, "csrf_invalid")
        return await page.handler(request)

    return handler


async def _csrf_refused(node: Node, me: SignedIn | None, op: str, reason: str) -> None:
    actor = me.actor if me else "anonymous"
    await node.record_audit(leaves.auth_failed(node.now_ms(), actor, reason, op))
    raise Refused(
        403,
        "this form was not sent from a page of this console (its form token is missing or "
        "wrong); open the page again and repeat",
    )


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.status != 405:
            response = _error(request, exc.status, "there is no such page in the console")
        else:
            exc.headers.update(SECURITY_HEADERS)
            raise
    except Refused as exc:
        response = _error(request, exc.status, exc.message)
    except ApiProblem as exc:
        response = _error(request, exc.status, exc.detail)
    except ExchangeError as exc:
        response = _error(request, exc.status, exc.message)
    response.headers.update(SECURITY_HEADERS)
    if request.path != "/console/console.css":
        response.headers["Cache-Control"] = "no-store"
    return response


def _error(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


# --- sign-in, sign-out, the style sheet ---------------------------------------------------


async def sign_in_form(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "sign_in.html", csrf=token, error="")
    set_cookie(response, request, SIGNIN_COOKIE, token)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    data = await request.post()
    sent = data.get("csrf")
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not isinstance(sent, str) or not sent:
        await _csrf_refused(node, None, "console.sign_in", "csrf_missing")
    elif not expected or not same(sent, expected):
        await _csrf_refused(node, None, "console.sign_in", "csrf_invalid")
    secret = data.get("token")
    opened = await request.app[SESSIONS].sign_in(secret) if isinstance(secret, str) else None
    if opened is None:
        token = secrets.token_urlsafe(32)
        response = render(
            request, "sign_in.html", status=401, csrf=token,
            error="that token is unknown or revoked; paste the whole secret (xn_...)",
        )  # fmt: skip
        set_cookie(response, request, SIGNIN_COOKIE, token)
        return response
    cookie, me = opened
    response = web.HTTPSeeOther("/console/" + _home(request, me))
    set_cookie(response, request, COOKIE, cookie)
    response.del_cookie(SIGNIN_COOKIE, path="/console")
    raise response


def _home(request: web.Request, me: SignedIn) -> str:
    for p in request.app[PAGE_TABLE]:
        if p.nav and me.token.role in p.roles:
            return p.path.lstrip("/")
    return ""


async def home(request: web.Request) -> web.StreamResponse:
    me = await request.app[SESSIONS].current(request)
    raise web.HTTPSeeOther("/console/" + _home(request, me) if me else "/console/sign-in")


async def sign_out(request: web.Request) -> web.StreamResponse:
    await request.app[SESSIONS].sign_out(signed_in(request))
    response = web.HTTPSeeOther("/console/sign-in")
    response.del_cookie(COOKIE, path="/console")
    raise response


_CSS = resources.files("exchange_node.console").joinpath("static/console.css").read_bytes()


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=_CSS,
        content_type="text/css",
        headers={"Cache-Control": "max-age=3600"},
    )
