"""Tokens and roles on the local API: every role is refused outside its scope, audited."""

from __future__ import annotations

import aiohttp
import pytest
from test_api_support import Client, make_node, token

from exchange_node.api.v1 import ROUTES

pytestmark = pytest.mark.usefixtures("node_store_backend")

ROLES = ("document_officer", "case_officer", "auditor", "operator")


@pytest.fixture
async def node(tmp_path):
    n = await make_node(tmp_path, "JPN-ISA", "JPN")
    yield n
    await n.stop()


def _concrete(path: str) -> str:
    return (
        path.replace("{message_id}", "0" * 32)
        .replace("{state}", "PHL")
        .replace("{number}", "P1234567")
        .replace("{case_ref}", "JPN-2026-AAAAAAAA")
        .replace("{seq}", "0")
        .replace("{key}", "k-1")
    )


async def test_every_endpoint_refuses_every_role_it_does_not_name(node):
    secrets_by_role = {r: await token(node, r, f"{r}-desk") for r in ROLES}
    async with aiohttp.ClientSession() as session:
        for route in ROUTES:
            for role in ROLES:
                if role in route.roles:
                    continue
                client = Client(session, node, secrets_by_role[role])
                status, body = await client.call(route.method, _concrete(route.path), json={})
                assert (status, body["code"]) == (403, "role_forbidden"), (route.op, role)
    failures = node.audit.query(kind="auth.failed", limit=1000)
    denied = sum(len(set(ROLES) - set(r.roles)) for r in ROUTES)
    assert len(failures) == denied
    assert {f.record.reason for f in failures} == {"role_forbidden"}


async def test_a_request_without_a_token_is_401_and_audited_as_anonymous(node):
    async with aiohttp.ClientSession() as session:
        status, body = await Client(session, node, None).get("/api/v1/status")
    assert (status, body["code"], body["field"]) == (401, "token_missing", "Authorization")
    (leaf,) = node.audit.query(kind="auth.failed")
    assert (leaf.record.actor, leaf.record.reason) == ("anonymous", "token_missing")


async def test_an_unknown_token_is_401_and_its_secret_is_not_audited(node):
    secret = "xn_thisisnotarealtokenbutlongenough"
    async with aiohttp.ClientSession() as session:
        status, body = await Client(session, node, secret).get("/api/v1/status")
    assert (status, body["code"]) == (401, "token_invalid")
    (leaf,) = node.audit.query(kind="auth.failed")
    assert secret.encode() not in leaf.data


async def test_a_revoked_token_is_refused(node):
    secret = await token(node, "operator", "ops")
    await node.store.revoke_token("ops", node.now_ms())
    async with aiohttp.ClientSession() as session:
        status, body = await Client(session, node, secret).get("/api/v1/status")
    assert (status, body["code"]) == (401, "token_invalid")


async def test_a_wrong_role_denial_names_the_token_in_the_audit_log(node):
    secret = await token(node, "auditor", "dpo-anna")
    async with aiohttp.ClientSession() as session:
        status, _ = await Client(session, node, secret).get("/api/v1/documents/PHL/P1234567")
    assert status == 403
    (leaf,) = node.audit.query(kind="auth.failed")
    assert (leaf.record.actor, leaf.record.attrs["operation"]) == ("dpo-anna", "getDocument")


async def test_each_role_reaches_its_own_endpoints(node):
    async with aiohttp.ClientSession() as session:
        ops = Client(session, node, await token(node, "operator"))
        aud = Client(session, node, await token(node, "auditor"))
        assert (await ops.get("/api/v1/status"))[0] == 200
        assert (await ops.get("/api/v1/peers"))[0] == 200
        assert (await ops.get("/api/v1/queues"))[0] == 200
        assert (await ops.get("/api/v1/dead-letters"))[0] == 200
        assert (await aud.get("/api/v1/audit/checkpoint"))[0] == 200
        status, page = await aud.get("/api/v1/audit/entries?kind=config.loaded")
        assert status == 200 and page["entries"][0]["kind"] == "config.loaded"
        status, proof = await aud.get("/api/v1/audit/entries/0/proof")
        assert status == 200 and proof["checkpoint"]["tree_size"] >= 1
