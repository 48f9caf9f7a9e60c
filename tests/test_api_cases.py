"""Repatriation cases through the local API across three real nodes on loopback."""

from __future__ import annotations

import secrets

import aiohttp
import pytest
from test_api_support import Client, eventually, make_node, pin_all, token

from exchange_node.domain.repatriation import EventType
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.services.cases import event_to_wire
from tests.pg_harness import stored_bytes

pytestmark = pytest.mark.usefixtures("node_store_backend")


@pytest.fixture
async def network(tmp_path):
    nodes = [
        await make_node(tmp_path, "JPN-ISA", "JPN"),
        await make_node(tmp_path, "PHL-DFA", "PHL"),
        await make_node(tmp_path, "IOM-MNL", "UNO"),
    ]
    await pin_all(nodes)
    async with aiohttp.ClientSession() as session:
        clients = [Client(session, n, await token(n, "case_officer")) for n in nodes]
        yield nodes, clients
    for n in nodes:
        await n.stop()


async def _open(jpn: Client) -> str:
    status, body = await jpn.post(
        "/api/v1/cases",
        {
            "participants": [
                {"node_id": "PHL-DFA", "role": "ORIGIN_STATE"},
                {"node_id": "IOM-MNL", "role": "IOM"},
            ],
            "personal_data": {"full_name": "Maria Santos", "nationality": "PHL", "sex": "F"},
            "note": "referred by shelter",
        },
    )
    assert status == 201, body
    return body["case_ref"]


async def _step(client: Client, ref: str, kind: str, others: list[Client]) -> dict:
    status, body = await client.post(f"/api/v1/cases/{ref}/events", {"type": kind})
    assert status == 202, body
    seq = body["sequence"]

    async def everyone_has_it():
        for other in others:
            st, case = await other.get(f"/api/v1/cases/{ref}?purpose=case_management")
            if st != 200 or len(case["timeline"]) < seq:
                return False
        return True

    await eventually(everyone_has_it)
    return body


async def test_a_full_case_reaches_closed_on_every_node_with_the_same_timeline(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)
    await eventually(lambda: nodes[1].services.cases.get(ref) and nodes[2].services.cases.get(ref))
    steps = [
        (jpn, "record_consent"),
        (iom, "record_assessment"),
        (phl, "accept_return"),
        (iom, "request_travel_document"),
        (phl, "issue_travel_document"),
        (iom, "plan_travel"),
        (iom, "depart"),
        (phl, "confirm_arrival"),
        (iom, "start_reintegration"),
        (iom, "report_reintegration"),
        (iom, "close_case"),
    ]
    everyone = [jpn, phl, iom]
    for client, kind in steps:
        await _step(client, ref, kind, [c for c in everyone if c is not client])
    views = [(await c.get(f"/api/v1/cases/{ref}?purpose=case_management"))[1] for c in everyone]
    assert {v["status"] for v in views} == {"CLOSED"}
    timelines = [[(e["sequence"], e["type"], e["actor"]) for e in v["timeline"]] for v in views]
    assert timelines[0] == timelines[1] == timelines[2]
    assert timelines[0][0] == (1, "open_case", "JPN-ISA")
    assert views[1]["personal_data"]["full_name"] == "Maria Santos"


async def test_own_steps_show_a_signed_receipt_per_participant(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)

    async def delivered():
        _, case = await jpn.get(f"/api/v1/cases/{ref}?purpose=case_management")
        d = case["timeline"][0]["deliveries"]
        return len(d) == 2 and all(x["state"] == "accepted" and x["receipt_id"] for x in d)

    await eventually(delivered)


async def test_consent_withdrawal_stops_the_case_and_refuses_travel_steps_everywhere(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)
    await eventually(lambda: nodes[1].services.cases.get(ref) and nodes[2].services.cases.get(ref))
    await _step(jpn, ref, "record_consent", [phl, iom])
    await _step(iom, ref, "record_assessment", [jpn, phl])
    await _step(phl, ref, "accept_return", [jpn, iom])
    await _step(iom, ref, "withdraw_consent", [jpn, phl])
    for client in (jpn, phl, iom):
        _, case = await client.get(f"/api/v1/cases/{ref}?purpose=case_management")
        assert case["status"] == "CONSENT_WITHDRAWN"
        assert case["allowed_events"] == []
    status, problem = await iom.post(f"/api/v1/cases/{ref}/events", {"type": "plan_travel"})
    assert status == 409
    assert problem["code"] == "illegal_transition"
    assert "consent was withdrawn" in problem["detail"]


async def test_an_out_of_order_step_is_refused_locally_with_a_reason(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)
    await eventually(lambda: nodes[2].services.cases.get(ref))
    status, problem = await iom.post(f"/api/v1/cases/{ref}/events", {"type": "depart"})
    assert status == 409
    assert problem["code"] == "illegal_transition"
    assert problem["field"] == "event"
    assert "REFERRED" in problem["detail"]


async def test_a_role_may_not_take_another_roles_step(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)
    await _step(jpn, ref, "record_consent", [phl, iom])
    await _step(jpn, ref, "record_assessment", [phl, iom])
    await eventually(lambda: nodes[2].services.cases.get(ref))
    status, problem = await iom.post(f"/api/v1/cases/{ref}/events", {"type": "accept_return"})
    assert (status, problem["code"]) == (409, "role_not_permitted")


def _crafted(ref: str, kind: EventType, seq: int) -> notice_pb2.Body:
    return notice_pb2.Body(
        case_event=notice_pb2.CaseEvent(
            event_id=secrets.token_bytes(16),
            case_ref=ref,
            type=event_to_wire(kind),
            sequence=seq,
            occurred_at_ms=nodes_now(),
        )
    )


def nodes_now() -> int:
    import time

    return int(time.time() * 1000)


async def test_a_peers_illegal_step_is_rejected_with_illegal_transition_in_the_receipt(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)
    await eventually(lambda: nodes[1].services.cases.get(ref))
    # PHL's node bypasses its own API and sends a step the table refuses.
    (sent,) = await nodes[1].submit(_crafted(ref, EventType.DEPART, 2), ["JPN-ISA"])

    def rejected():
        rows = nodes[1].store.message_status(sent.message_id)
        return rows and rows[0].state == "dead" and rows[0].reason

    assert await eventually(rejected) == "illegal_transition"
    assert len(nodes[0].services.cases.get(ref).events) == 1


async def test_a_step_from_a_node_outside_the_case_is_rejected_as_not_participant(tmp_path):
    nodes = [
        await make_node(tmp_path, "JPN-ISA", "JPN"),
        await make_node(tmp_path, "PHL-DFA", "PHL"),
        await make_node(tmp_path, "IOM-MNL", "UNO"),
    ]
    await pin_all(nodes)
    try:
        async with aiohttp.ClientSession() as session:
            jpn = Client(session, nodes[0], await token(nodes[0], "case_officer"))
            status, body = await jpn.post(
                "/api/v1/cases", {"participants": [{"node_id": "PHL-DFA", "role": "ORIGIN_STATE"}]}
            )
            assert status == 201
            ref = body["case_ref"]
            assert body["messages"] == [
                {"recipient": "PHL-DFA", "message_id": body["messages"][0]["message_id"]}
            ]
            (sent,) = await nodes[2].submit(_crafted(ref, EventType.CANCEL, 2), ["JPN-ISA"])

            def rejected():
                rows = nodes[2].store.message_status(sent.message_id)
                return rows and rows[0].state == "dead" and rows[0].reason

            assert await eventually(rejected) == "not_participant"
            assert nodes[2].services.cases.get(ref) is None
    finally:
        for n in nodes:
            await n.stop()


async def test_personal_data_is_encrypted_at_rest(network):
    nodes, (jpn, phl, iom) = network
    await _open(jpn)
    if nodes[0].config.store.url:
        raw = stored_bytes(nodes[0].store)
        assert b"JPN-ISA" in raw  # the check sees the rows
    else:
        raw = (nodes[0].config.data_path / "node.sqlite").read_bytes()
        wal = nodes[0].config.data_path / "node.sqlite-wal"
        raw += wal.read_bytes() if wal.exists() else b""
    assert b"Maria Santos" not in raw
    assert b"referred by shelter" not in raw


async def test_case_transitions_are_audited_without_personal_data(network):
    nodes, (jpn, phl, iom) = network
    ref = await _open(jpn)
    leaves = nodes[0].audit.query(kind="case.transition")
    assert [leaf.record.attrs["case"] for leaf in leaves] == [ref]
    assert leaves[0].record.actor == "case_officer-1"
    assert b"Maria" not in leaves[0].data


async def test_a_peers_open_case_naming_a_second_identifying_state_is_rejected(network):
    nodes, (jpn, phl, iom) = network
    # JPN's node bypasses its own API (which refuses this) and opens a case naming itself
    # and PHL as identifying states.
    ref = "JPN-2026-AAAAAAAA"
    body = notice_pb2.Body(
        case_event=notice_pb2.CaseEvent(
            event_id=secrets.token_bytes(16),
            case_ref=ref,
            type=event_to_wire(EventType.OPEN_CASE),
            sequence=1,
            occurred_at_ms=nodes_now(),
            participants=[
                notice_pb2.CaseParticipant(
                    node_id="JPN-ISA", role=notice_pb2.CASE_ROLE_IDENTIFYING_STATE
                ),
                notice_pb2.CaseParticipant(
                    node_id="PHL-DFA", role=notice_pb2.CASE_ROLE_IDENTIFYING_STATE
                ),
            ],
        )
    )
    (sent,) = await nodes[0].submit(body, ["PHL-DFA"])

    def rejected():
        rows = nodes[0].store.message_status(sent.message_id)
        return rows and rows[0].state == "dead" and rows[0].reason

    assert await eventually(rejected) == "invalid_content"
    assert nodes[1].services.cases.get(ref) is None


@pytest.mark.parametrize(
    ("participants", "code", "field"),
    [
        (
            [{"node_id": "PHL-DFA", "role": "ORIGIN_STATE"}, {"node_id": "THA-IMM", "role": "IOM"}],
            "unknown_peer",
            "participants[1].node_id",
        ),
        (
            [{"node_id": "PHL-DFA", "role": "ORIGIN_STATE"}, {"node_id": "PHL-DFA", "role": "IOM"}],
            "invalid_participants",
            "participants[1].node_id",
        ),
    ],
)
async def test_a_refused_participant_is_named_by_its_place_in_the_request(
    network, participants, code, field
):
    _, (jpn, _, _) = network
    status, body = await jpn.post("/api/v1/cases", {"participants": participants})
    assert (status, body["code"], body["field"]) == (422, code, field)
