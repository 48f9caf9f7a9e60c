"""Helpers for the console tests: a real node, a cookie-keeping HTTP client, forms.

Not a test module of its own; the ``test_console_*`` files import from it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import aiohttp

from exchange_node.node import Node

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "the page has no form with a CSRF token"
    return html.unescape(match.group(1))


@dataclass
class Browser:
    """One browser's cookies against one node's console at ``base`` (redirects not
    followed)."""

    session: aiohttp.ClientSession
    base: str
    csrf: str = ""

    async def get(self, path: str, **kw) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def post(
        self, path: str, data: dict | aiohttp.FormData | None = None, *, csrf: str | None = None
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        if data is None:
            data = {}
        if isinstance(data, dict):
            data = dict(data)
            token = self.csrf if csrf is None else csrf
            if token:
                data["csrf"] = token
        async with self.session.post(self.base + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def sign_in(self, secret: str) -> tuple[int, aiohttp.ClientResponse]:
        _, page, _ = await self.get("/console/sign-in")
        status, _, resp = await self.post("/console/sign-in", {"token": secret}, csrf=csrf_of(page))
        if status == 303:
            _, page, _ = await self.get(resp.headers["Location"].removeprefix(self.base))
            self.csrf = csrf_of(page)
        return status, resp


def browser(node: Node | int) -> Browser:
    """A browser for a node in this process, or for the local API port of one that runs
    in another."""
    port = node if isinstance(node, int) else node.local_port
    # unsafe: keep cookies of an IP address host (127.0.0.1), as a real browser does.
    jar = aiohttp.CookieJar(unsafe=True)
    return Browser(aiohttp.ClientSession(cookie_jar=jar), f"http://127.0.0.1:{port}")
