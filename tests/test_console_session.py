"""Console sign-in, sessions, CSRF and security headers, on a real node."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
import yarl
from console_support import browser, csrf_of
from test_api_support import make_node, token

from exchange_node.console.sessions import ABSOLUTE_MS, IDLE_MS


@pytest.fixture
async def node(tmp_path):
    n = await make_node(tmp_path, "JPN-ISA", "JPN")
    yield n
    await n.stop()


def leaves_of(node, kind):
    return [leaf.record for leaf in node.audit.query(kind=kind, limit=1000)]


async def test_sign_in_opens_a_server_side_session_with_a_strict_http_only_cookie(node):
    secret = await token(node, "operator", "ops-desk")
    b = browser(node)
    async with b.session:
        status, resp = await b.sign_in(secret)
        assert status == 303 and resp.headers["Location"] == "/console/overview"
        cookie = resp.cookies["xn_console"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console" and not cookie["secure"]  # plain http here
        stored = node.store.console_session(hashlib.sha256(cookie.value.encode()).digest())
        assert stored is not None and stored.token_id == node.store.list_tokens()[0].id
        status, page, resp = await b.get("/console/overview")
        assert status == 200 and "ops-desk" in page
    (leaf,) = leaves_of(node, "console.signed_in")
    assert (leaf.actor, leaf.attrs["why"]) == ("ops-desk", "signed_in")


async def test_a_wrong_token_is_refused_audited_and_opens_no_session(node):
    b = browser(node)
    async with b.session:
        status, _ = await b.sign_in("xn_" + "x" * 43)
        assert status == 401
        status, _, resp = await b.get("/console/overview")
        assert status == 303 and resp.headers["Location"] == "/console/sign-in"
    (leaf,) = leaves_of(node, "auth.failed")
    assert (leaf.actor, leaf.reason, leaf.attrs["operation"]) == (
        "anonymous", "token_invalid", "console.sign_in",
    )  # fmt: skip
    assert "x" * 43 not in node.audit.leaf(leaf.seq).data.decode()


async def test_the_sign_in_form_needs_its_own_form_token(node):
    secret = await token(node, "operator")
    b = browser(node)
    async with b.session:
        await b.get("/console/sign-in")
        status, page, _ = await b.post("/console/sign-in", {"token": secret}, csrf="forged")
        assert status == 403 and "form token" in page
        assert "xn_console" not in {c.key for c in b.session.cookie_jar}
    (leaf,) = leaves_of(node, "auth.failed")
    assert (leaf.reason, leaf.attrs["operation"]) == ("csrf_invalid", "console.sign_in")


async def test_sign_out_ends_the_session_on_the_server(node):
    secret = await token(node, "operator", "ops-desk")
    b = browser(node)
    async with b.session:
        await b.sign_in(secret)
        stolen = b.session.cookie_jar.filter_cookies(yarl.URL(b.base + "/console/"))[
            "xn_console"
        ].value
        status, _, resp = await b.post("/console/sign-out")
        assert status == 303 and resp.headers["Location"] == "/console/sign-in"
        assert node.store.console_session(hashlib.sha256(stolen.encode()).digest()) is None
        # The old cookie, replayed, opens nothing.
        b.session.cookie_jar.update_cookies({"xn_console": stolen})
        status, _, resp = await b.get("/console/overview")
        assert status == 303 and resp.headers["Location"] == "/console/sign-in"
    (leaf,) = leaves_of(node, "console.signed_out")
    assert (leaf.actor, leaf.attrs["why"]) == ("ops-desk", "signed_out")


async def test_an_idle_session_expires_and_so_does_an_old_one_in_use(node):
    secret = await token(node, "operator", "ops-desk")
    idle, absolute = IDLE_MS, ABSOLUTE_MS
    clock = [node.now_ms()]
    node.clock = lambda: clock[0]
    b = browser(node)
    async with b.session:
        await b.sign_in(secret)
        clock[0] += idle - 1000
        assert (await b.get("/console/overview"))[0] == 200  # renews the idle bound
        clock[0] += idle - 1000
        assert (await b.get("/console/overview"))[0] == 200
        clock[0] += idle + 1
        status, _, resp = await b.get("/console/overview")
        assert status == 303 and resp.headers["Location"] == "/console/sign-in"
        # Activity never stretches the absolute bound.
        await b.sign_in(secret)
        for _ in range(absolute // (idle // 2)):
            clock[0] += idle // 2
            status, _, _ = await b.get("/console/overview")
            if status != 200:
                break
        assert status == 303
    assert [x.attrs["why"] for x in leaves_of(node, "console.signed_out")] == [
        "expired", "expired",
    ]  # fmt: skip


async def test_revoking_the_token_ends_its_sessions(node):
    secret = await token(node, "operator", "ops-desk")
    b = browser(node)
    async with b.session:
        await b.sign_in(secret)
        await node.store.revoke_token("ops-desk", node.now_ms())
        status, _, resp = await b.get("/console/overview")
        assert status == 303 and resp.headers["Location"] == "/console/sign-in"


async def test_every_page_carries_the_security_headers(node):
    secret = await token(node, "operator")
    b = browser(node)
    async with b.session:
        await b.sign_in(secret)
        for path in ("/console/sign-in", "/console/overview", "/console/peers"):
            status, _, resp = await b.get(path)
            assert status == 200
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["Cache-Control"] == "no-store"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        status, css, resp = await b.get("/console/console.css")
        assert status == 200 and resp.content_type == "text/css" and "body" in css


async def test_pages_have_no_script_and_name_nothing_off_the_node(node):
    secret = await token(node, "operator")
    b = browser(node)
    async with b.session:
        await b.sign_in(secret)
        for path in ("/console/overview", "/console/peers", "/console/dead-letters",
                     "/console/tokens"):  # fmt: skip
            status, page, _ = await b.get(path)
            assert status == 200, path
            assert "<script" not in page and "http://" not in page and "https://" not in page
            csrf_of(page)


async def test_a_note_in_a_link_from_elsewhere_is_not_shown(node):
    secret = await token(node, "operator")
    b = browser(node)
    async with b.session:
        await b.sign_in(secret)
        status, page, _ = await b.get("/console/peers?done=Call+us+at+555-0100&mac=00")
        assert status == 200 and "555-0100" not in page


async def test_a_form_sent_without_a_session_is_refused_and_audited(node):
    b = browser(node)
    async with b.session:
        status, page, _ = await b.post("/console/peers/PHL-DFA/pause", {"csrf": "x"})
        assert status == 401 and "sign in again" in page
    (leaf,) = leaves_of(node, "auth.failed")
    assert (leaf.actor, leaf.reason, leaf.attrs["operation"]) == (
        "anonymous", "session_missing", "console.peer_pause",
    )  # fmt: skip


async def test_over_tls_the_session_cookie_is_secure(node):
    """Served over TLS (the console behind its own TLS listener), the cookies are Secure."""
    import ssl

    from aiohttp import web

    from exchange_node.console import create_console_app
    from exchange_node.tls import server_context

    ctx = server_context(node.keys.tls_cert_der, node.keys.tls_key_path, [])
    ctx.verify_mode = ssl.CERT_NONE  # a browser, not a peer: no client certificate
    app = web.Application()
    app.add_subapp("/console", create_console_app(node))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    secret = await token(node, "operator")
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(
            cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=False)
        ) as s:
            base = f"https://127.0.0.1:{port}/console"
            async with s.get(base + "/sign-in") as r:
                assert r.cookies["xn_console_signin"]["secure"]
                form_token = csrf_of(await r.text())
            async with s.post(
                base + "/sign-in", data={"csrf": form_token, "token": secret}, allow_redirects=False
            ) as r:
                assert r.status == 303 and r.cookies["xn_console"]["secure"]
    finally:
        await runner.cleanup()
