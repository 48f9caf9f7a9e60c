"""Every console page and action: refused to the roles the API refuses (audited), and
every form refused without its CSRF token or with a wrong one (audited)."""

from __future__ import annotations

import pytest
from console_support import browser
from test_api_support import make_node, token

from exchange_node.console.routes import PAGES

ROLES = ("document_officer", "case_officer", "auditor", "operator")


@pytest.fixture
async def node(tmp_path):
    n = await make_node(tmp_path, "JPN-ISA", "JPN")
    yield n
    await n.stop()


def _concrete(path: str) -> str:
    return (
        path.replace("{peer}", "PHL-DFA")
        .replace("{id}", "1")
        .replace("{ref}", "JPN-2026-AAAAAAAA")
        .replace("{message_id}", "0" * 32)
    )


def _failures(node) -> list:
    return [leaf.record for leaf in node.audit.query(kind="auth.failed", limit=1000)]


async def test_every_page_refuses_every_role_the_api_refuses_and_audits_it(node):
    expected = []
    for role in ROLES:
        b = browser(node)
        async with b.session:
            await b.sign_in(await token(node, role, f"{role}-desk"))
            for page in PAGES:
                if role in page.roles:
                    continue
                path = "/console" + _concrete(page.path)
                if page.method == "GET":
                    status, body, _ = await b.get(path)
                else:
                    status, body, _ = await b.post(path)
                assert status == 403, (page.name, role)
                assert f"a {role} token may not call this" in body
                expected.append((f"{role}-desk", f"console.{page.name}"))
    got = [(f.actor, f.attrs["operation"]) for f in _failures(node)]
    assert got == expected and {f.reason for f in _failures(node)} == {"role_forbidden"}


async def test_roles_follow_the_api_table():
    from exchange_node.api.v1 import roles_of

    by_name = {p.name: p.roles for p in PAGES}
    assert by_name["overview"] == roles_of("status") == {"operator"}
    assert by_name["audit"] == roles_of("auditEntries") == {"auditor"}
    assert by_name["messages"] == roles_of("getMessage")
    assert by_name["dead_letter_retry"] == roles_of("deadLetters")


@pytest.mark.parametrize("sent", [None, "", "not-the-token"])
async def test_every_form_needs_the_sessions_csrf_token(node, sent):
    b = browser(node)
    refused = []
    async with b.session:
        for role in ROLES:
            await b.sign_in(await token(node, role, f"{role}-{sent}"))
            for page in PAGES:
                if page.method != "POST" or role not in page.roles:
                    continue
                data = {} if sent is None else {"csrf": sent}
                status, body, _ = await b.post("/console" + _concrete(page.path), data, csrf="")
                assert status == 403 and "form token" in body, page.name
                refused.append(f"console.{page.name}")
            # The session is still there: a refused form is not a sign-out.
            assert (await b.get("/console/"))[0] == 303
    reason = "csrf_invalid" if sent else "csrf_missing"
    failures = _failures(node)
    assert sorted(f.attrs["operation"] for f in failures) == sorted(refused)
    assert {f.reason for f in failures} == {reason}
    assert {p.name for p in PAGES if p.method == "POST"} == {
        r.removeprefix("console.") for r in refused
    }
