"""The console in a real browser: Debian's headless Chromium driven by Playwright.

Sign in, walk through a peer outage on two real nodes (the overview shows the backlog
and the backoff, and clears once the peer is back), pause and resume a catch-up, clear
a dead letter, filter the audit log. Chromium is the system's (``/usr/bin/chromium``, installed by ``make
setup``); without it these tests fail, they do not skip. With ``CONSOLE_SCREENSHOTS``
set to a folder they save the main pages there (``make screenshots``: docs/console/).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import aiohttp
import pytest
from node_helpers import fraud_notice, wait_for
from test_api_support import Client, make_node, pin_all, token

from exchange_node.domain.documents import NoticeKind
from exchange_node.node import Node
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.services.notices import NoticeDraft

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


@pytest.fixture
async def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser tests need Debian's chromium "
            "(`make setup` installs it, or `apt-get install -y chromium`)",
            pytrace=False,
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await chromium.new_context(viewport={"width": 1280, "height": 900})
        yield context
        await context.close()
        await chromium.close()


async def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def sign_in(page, node: Node, secret: str) -> None:
    await page.goto(f"http://127.0.0.1:{node.local_port}/console/")
    assert page.url.endswith("/console/sign-in")
    await page.fill("#token", secret)
    await page.click("button[type=submit]")


async def row_text(page, peer: str) -> str:
    return await page.inner_text(f'#queues tr[data-peer="{peer}"]')


async def until_row(page, peer: str, pattern: str) -> str:
    """Reload the overview until the peer's row matches (the page reloads itself too)."""

    async def check():
        await page.reload()
        text = await row_text(page, peer)
        return text if re.search(pattern, text) else None

    return await wait_for(check, what=f"{peer}'s row to match {pattern!r}")


async def test_sign_in_and_walk_through_a_peer_outage(browser, tmp_path):
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL")
    try:
        await pin_all([jpn, phl])
        page = await browser.new_page()
        await sign_in(page, jpn, await token(jpn, "operator", "ops-desk"))
        assert page.url.endswith("/console/overview")
        assert await page.inner_text("#readiness") == "Ready"
        assert "delivering" in await row_text(page, "PHL-DFA")
        assert await page.inner_text("#alerts") == "No alerts."

        await phl.stop()
        await jpn.submit(fraud_notice(), ["PHL-DFA"], actor="test")
        row = await until_row(page, "PHL-DFA", r"backoff.*nothing answered at the peer's address")
        assert re.search(r"backoff \(\d+ failed\)\s+1\s", row), row
        assert "PHL-DFA is in backoff" in await page.inner_text("#alerts")
        await shot(page, "overview-outage")
        await page.click('#queues a[href="/console/peers/PHL-DFA"]')
        assert "in backoff after" in await page.inner_text("#peer-state")
        await shot(page, "peer")

        restarted = await Node.open(phl.config)
        await restarted.start()
        try:
            await page.goto(f"http://127.0.0.1:{jpn.local_port}/console/overview")
            row = await until_row(page, "PHL-DFA", r"delivering")
            assert re.search(r"delivering\s+0\s", row), row
            assert await page.inner_text("#alerts") == "No alerts."
            await shot(page, "overview")
            await page.click("nav >> text=Peers")
            await shot(page, "peers")
        finally:
            await restarted.stop()
    finally:
        await jpn.stop()
        await phl.stop()


async def test_pause_and_resume_a_catch_up_from_the_overview(browser, tmp_path):
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL")
    try:
        await pin_all([jpn, phl])
        await wait_for(
            lambda: getattr(jpn.store.catchup("PHL-DFA"), "state", "") == "done",
            what="the catch-up",
        )
        # PHL-DFA goes down; JPN-ISA has more notices in effect than two chunks, so a
        # catch-up restarted now stays running.
        await phl.stop()
        drafts = [
            (NoticeDraft(NoticeKind.STOLEN, _document(f"TR{i:07d}")), None)
            for i in range(2 * jpn.config.delivery.batch_size + 50)
        ]
        await jpn.services.notices.submit_many(drafts, actor="test")
        page = await browser.new_page()
        await sign_in(page, jpn, await token(jpn, "operator", "ops-desk"))
        row = '#catchups tr[data-peer="PHL-DFA"]'
        assert "done" in await page.inner_text(row)

        await page.click(f"{row} >> text=Restart")
        assert page.url.split("?")[0].endswith("/console/overview")
        assert "restarted: 450 notice(s) in effect to send" in await page.inner_text(".done")
        assert "running" in await page.inner_text(f"{row} .state")
        await page.click(f"{row} >> text=Pause")
        assert "catch-up of PHL-DFA paused at" in await page.inner_text(".done")
        assert await page.inner_text(f"{row} .state") == "paused"
        assert await page.inner_text(f"{row} .eta") == "paused"
        await shot(page, "overview-catchup-paused")
        await page.click(f"{row} >> text=Resume")
        assert "running" in await page.inner_text(f"{row} .state")
        assert jpn.store.catchup("PHL-DFA").state == "running"
        actions = [
            (leaf.record.actor, leaf.record.attrs["action"])
            for leaf in jpn.audit.query(kind="peer.catchup", limit=100)
        ]
        assert actions[-3:] == [
            ("ops-desk", "restarted"), ("ops-desk", "paused"), ("ops-desk", "resumed"),
        ]  # fmt: skip
    finally:
        await jpn.stop()
        await phl.stop()


def _document(number: str) -> notice_pb2.DocumentRef:
    return notice_pb2.DocumentRef(issuing_state="JPN", document_type="P", document_number=number)


async def test_clear_a_dead_letter(browser, tmp_path):
    jpn = await make_node(tmp_path, "JPN-ISA", "JPN")
    phl = await make_node(tmp_path, "PHL-DFA", "PHL", {"JPN-ISA": ["status_notice"]})
    try:
        await pin_all([jpn, phl])
        [sub] = await jpn.submit(fraud_notice(), ["PHL-DFA"], actor="test")
        await wait_for(lambda: jpn.store.queue_stats()[0].dead == 1, what="a dead letter")
        page = await browser.new_page()
        await sign_in(page, jpn, await token(jpn, "operator", "ops-desk"))
        await page.click("#alerts >> text=1 dead letter(s) wait for a person")
        assert page.url.endswith("/console/dead-letters")
        row = await page.inner_text("#dead-letters tbody tr")
        assert sub.message_id.hex() in row and "policy_denied" in row
        await shot(page, "dead-letters")
        await page.click("#dead-letters >> text=Acknowledge")
        assert "acknowledged" in await page.inner_text("p.done")
        assert "No dead letters waiting for a person" in await page.inner_text("#none")
        await page.click("nav >> text=Overview")
        assert await page.inner_text("#alerts") == "No alerts."
        (leaf,) = jpn.audit.query(kind="dead_letter.acknowledged")
        assert leaf.record.actor == "ops-desk"
        await page.click("nav >> text=Messages")
        await page.select_option("#mstate", "dead")
        await page.click("#message-search button[type=submit]")
        assert sub.message_id.hex() in await page.inner_text("#messages")
        await shot(page, "messages")
        await page.click("nav >> text=Tokens and keys")
        await page.fill("#name", "narita-border-system")
        await page.select_option("#role", "document_officer")
        await page.click("#tokens ~ form button[type=submit]")
        assert (await page.inner_text("#secret")).startswith("xn_")
        await shot(page, "tokens")
    finally:
        await jpn.stop()
        await phl.stop()


async def test_filter_the_audit_log(browser, tmp_path):
    node = await make_node(tmp_path, "JPN-ISA", "JPN")
    try:
        async with aiohttp.ClientSession() as session:
            for officer, number in (("narita-1", "P1111111"), ("kansai-2", "P2222222")):
                client = Client(session, node, await token(node, "document_officer", officer))
                status, _ = await client.get(f"/api/v1/documents/PHL/{number}")
                assert status == 200
        page = await browser.new_page()
        await sign_in(page, node, await token(node, "auditor", "audit-office"))
        assert page.url.endswith("/console/audit")
        await page.fill("#doc_state", "PHL")
        await page.fill("#doc_number", "P2222222")
        await page.click("#audit-filters button[type=submit]")
        rows = await page.locator("#audit tbody tr").all_inner_texts()
        assert len(rows) == 1 and "document.lookup" in rows[0] and "kansai-2" in rows[0]
        await page.click("#audit-filters >> text=Clear")
        await page.select_option("#kind", "console.signed_in")
        await page.click("#audit-filters button[type=submit]")
        rows = await page.locator("#audit tbody tr").all_inner_texts()
        assert len(rows) == 1 and "audit-office" in rows[0]
        await shot(page, "audit")
        await page.click("text=Verify the whole log now")
        assert page.url.endswith("/console/audit/verification")
        # The page reloads itself every second until the report is in.
        await page.wait_for_selector("#verify-result", timeout=30_000)
        assert (await page.inner_text("#verify-result")).startswith("Verified:")
    finally:
        await node.stop()


async def test_look_up_a_pasted_list_of_documents(browser, tmp_path):
    node = await make_node(tmp_path, "JPN-ISA", "JPN")
    try:
        page = await browser.new_page()
        await sign_in(page, node, await token(node, "document_officer", "narita-1"))
        assert page.url.endswith("/console/documents")
        await page.fill("#batch", "PHL P1234567\nTHA AA7654321\n")
        await page.click("text=Look up all")
        answers = await page.locator("section.answer h2").all_inner_texts()
        assert answers == ["PHL P1234567", "THA AA7654321"]
        assert len(node.audit.query(kind="document.lookup")) == 2
        await shot(page, "documents")
    finally:
        await node.stop()


def test_chromium_is_where_make_setup_puts_it():
    """Spelled out on its own so a machine without it says so plainly in the summary."""
    assert shutil.which(CHROMIUM), f"{CHROMIUM} missing: run `make setup`"
