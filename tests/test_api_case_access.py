"""Reads of a case through the local API are audited: who accessed which case."""

from __future__ import annotations

import aiohttp
import pytest
from test_api_support import Client, make_node, pin_all, token

pytestmark = pytest.mark.usefixtures("node_store_backend")


@pytest.fixture
async def pair(tmp_path):
    nodes = [
        await make_node(tmp_path, "JPN-ISA", "JPN"),
        await make_node(tmp_path, "PHL-DFA", "PHL"),
    ]
    await pin_all(nodes)
    async with aiohttp.ClientSession() as session:
        client = Client(session, nodes[0], await token(nodes[0], "case_officer", "desk-7"))
        yield nodes[0], client
    for n in nodes:
        await n.stop()


async def _open(client: Client) -> str:
    status, body = await client.post(
        "/api/v1/cases",
        {
            "participants": [{"node_id": "PHL-DFA", "role": "ORIGIN_STATE"}],
            "personal_data": {"full_name": "Maria Santos", "nationality": "PHL"},
        },
    )
    assert status == 201, body
    return body["case_ref"]


async def test_each_case_read_is_one_case_accessed_leaf_with_the_token_and_a_keyed_hash(pair):
    node, client = pair
    ref = await _open(client)
    for _ in range(2):
        status, _ = await client.get(f"/api/v1/cases/{ref}?purpose=case_management")
        assert status == 200
    leaves = node.audit.query(kind="case.accessed")
    assert len(leaves) == 2
    record = leaves[0].record
    assert record.actor == "desk-7"
    assert record.subject_hash == node.services.subject_hash("case", ref)
    assert record.attrs == {"found": "true", "purpose": "case_management", "operation": "read"}


async def test_a_case_access_leaf_names_neither_the_case_nor_its_person(pair):
    node, client = pair
    ref = await _open(client)
    await client.get(f"/api/v1/cases/{ref}?purpose=case_management")
    (leaf,) = node.audit.query(kind="case.accessed")
    assert ref.encode() not in leaf.data
    assert b"Maria" not in leaf.data


async def test_a_read_of_an_unknown_case_is_404_and_audited_as_not_found(pair):
    node, client = pair
    status, body = await client.get("/api/v1/cases/JPN-2026-AAAAAAAA?purpose=case_management")
    assert (status, body["code"]) == (404, "case_not_found")
    (leaf,) = node.audit.query(kind="case.accessed")
    assert leaf.record.attrs == {
        "found": "false",
        "purpose": "case_management",
        "operation": "read",
    }
    assert leaf.record.subject_hash == node.services.subject_hash("case", "JPN-2026-AAAAAAAA")


async def test_a_malformed_case_reference_is_refused_and_records_no_access(pair):
    node, client = pair
    status, body = await client.get("/api/v1/cases/not-a-ref?purpose=case_management")
    assert (status, body["code"], body["field"]) == (422, "invalid_case_reference", "case_ref")
    assert node.audit.query(kind="case.accessed") == []


async def test_a_lower_case_reference_is_hashed_in_its_canonical_form(pair):
    node, client = pair
    ref = await _open(client)
    status, _ = await client.get(f"/api/v1/cases/{ref.lower()}?purpose=case_management")
    assert status == 200
    (leaf,) = node.audit.query(kind="case.accessed")
    assert leaf.record.subject_hash == node.services.subject_hash("case", ref)


async def test_a_read_without_a_purpose_is_refused_and_the_refusal_audited(pair):
    node, client = pair
    ref = await _open(client)
    status, body = await client.get(f"/api/v1/cases/{ref}")
    assert (status, body["code"], body["field"]) == (422, "purpose_required", "purpose")
    assert "case_management" in body["detail"]  # says which purposes there are
    status, body = await client.get(f"/api/v1/cases/{ref}?purpose=curiosity")
    assert (status, body["code"]) == (422, "purpose_unknown")
    assert node.audit.query(kind="case.accessed") == []  # nothing was read
    refused = [leaf.record for leaf in node.audit.query(kind="request.refused")]
    assert [(r.actor, r.reason, r.attrs) for r in refused] == [
        ("desk-7", "purpose_required", {"operation": "getCase"}),
        ("desk-7", "purpose_unknown", {"operation": "getCase"}),
    ]


async def test_each_purpose_is_recorded_with_the_actor_and_the_time_of_the_read(pair):
    node, client = pair
    ref = await _open(client)
    before = node.now_ms()
    for purpose in ("return_coordination", "oversight"):
        status, _ = await client.get(f"/api/v1/cases/{ref}?purpose={purpose}")
        assert status == 200
    reads = [leaf.record for leaf in node.audit.query(kind="case.accessed")]
    assert [(r.actor, r.attrs["purpose"]) for r in reads] == [
        ("desk-7", "return_coordination"),
        ("desk-7", "oversight"),
    ]
    assert all(before <= r.time <= node.now_ms() for r in reads)
