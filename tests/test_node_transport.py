"""Mutual TLS by pinned certificates: delivery works, and a certificate that is not the
pinned one is refused on either side."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.protocol.envelope import seal
from exchange_node.store.records import OutboxState, Outcome
from exchange_node.tls import client_context, trust_peers
from tests.node_helpers import (
    audit_leaves,
    batch_bytes,
    fraud_notice,
    make_net,
    make_node_dir,
    now_ms,
    pin,
    settled,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL, IOM = "JPN-ISA", "PHL-DFA", "IOM-MNL"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL], tls=True)
    yield net
    await net.stop_all()


async def test_notices_are_delivered_over_mutual_tls(net):
    await net[PHL].start()
    jpn = await net[JPN].start()

    [sub] = await jpn.submit(fraud_notice(), [PHL])
    await wait_for(lambda: settled(jpn.store, [sub.message_id]), what="delivery")

    [row] = jpn.store.message_status(sub.message_id)
    assert (row.state, row.outcome) == (OutboxState.DELIVERED, Outcome.ACCEPTED)


async def post_as(nd, server_nd, server_card, data: bytes):
    """POST a batch to ``server_nd`` presenting ``nd``'s TLS certificate."""
    keys = nd.keys()
    ctx = client_context(keys.tls_cert_der, keys.tls_key_path, server_card.tls_certificate)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server_nd.endpoint + "/exchange/v1/batch",
            data=data,
            headers={"Content-Type": "application/x-protobuf"},
            ssl=ctx,
        ) as resp,
    ):
        return resp.status, await resp.read()


async def test_a_client_certificate_on_no_pinned_card_fails_the_handshake(net, tmp_path):
    phl = await net[PHL].start()
    stranger = make_node_dir(tmp_path / "elsewhere", IOM, tls=True)
    keys = stranger.keys()
    card = phl.keys.card
    envelope = seal(
        fraud_notice().SerializeToString(), sender=keys.local, recipient=card, now_ms=now_ms()
    )

    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await post_as(stranger, net[PHL], card, batch_bytes(IOM, [envelope.data]))
    assert phl.store.inbox_feed(0, 10) == []


async def test_a_peer_removed_while_the_node_runs_is_refused_in_the_next_handshake(net, tmp_path):
    # IOM was pinned when PHL started (so its certificate was a trust anchor), then
    # removed: new connections no longer complete the handshake.
    iom_dir = make_node_dir(tmp_path / "elsewhere", IOM, tls=True)
    iom_keys = iom_dir.keys()
    await pin(net[PHL], iom_keys.card_bytes, iom_keys.fingerprint, IOM)
    phl = await net[PHL].start()
    assert (await talk(iom_dir, phl.keys.card, net[PHL].peer_port)).startswith(b"HTTP/1.1 200")
    await phl.store.remove_peer(IOM)
    phl.reload_peers()

    assert await talk(iom_dir, phl.keys.card, net[PHL].peer_port) == b""

    await wait_for(
        lambda: handshake_refusals(phl, "tls_certificate_unknown"), what="the refusal's leaf"
    )
    assert (await talk(net[JPN], phl.keys.card, net[PHL].peer_port)).startswith(b"HTTP/1.1 200")


async def test_a_connection_open_when_its_peer_is_removed_is_refused_403(net, tmp_path):
    iom_dir = make_node_dir(tmp_path / "elsewhere", IOM, tls=True)
    iom_keys = iom_dir.keys()
    await pin(net[PHL], iom_keys.card_bytes, iom_keys.fingerprint, IOM)
    phl = await net[PHL].start()
    envelope = seal(
        fraud_notice().SerializeToString(),
        sender=iom_keys.local,
        recipient=phl.keys.card,
        now_ms=now_ms(),
    )
    data = batch_bytes(IOM, [envelope.data])
    ctx = client_context(
        iom_keys.tls_cert_der, iom_keys.tls_key_path, phl.keys.card.tls_certificate
    )
    # One connection, kept alive: a request before the removal, a batch after it.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async with session.get(net[PHL].endpoint + "/exchange/v1/card", ssl=ctx) as resp:
            assert resp.status == 200
            await resp.read()
        await phl.store.remove_peer(IOM)
        phl.reload_peers()
        async with session.post(
            net[PHL].endpoint + "/exchange/v1/batch",
            data=data,
            headers={"Content-Type": "application/x-protobuf"},
            ssl=ctx,
        ) as resp:
            status, body = resp.status, await resp.read()

    assert status == 403
    assert json.loads(body)["code"] == "unknown_peer"
    assert phl.store.inbox_feed(0, 10) == []


async def test_a_server_certificate_other_than_the_pinned_one_is_refused_by_the_sender(
    net, tmp_path
):
    # JPN pins a card for PHL-DFA whose TLS certificate is not the one PHL's server uses
    # (an impostor's card, or a stale one): delivery must fail, not fall back.
    impostor = make_node_dir(tmp_path / "impostor", PHL, tls=True, peer_port=net[PHL].peer_port)
    wrong = impostor.keys()
    await pin(net[JPN], wrong.card_bytes, wrong.fingerprint, PHL)
    phl = await net[PHL].start()
    jpn = await net[JPN].start()

    [sub] = await jpn.submit(fraud_notice(), [PHL])

    row = await wait_for(
        lambda: next((r for r in jpn.store.message_status(sub.message_id) if r.last_error), None),
        what="a recorded delivery error",
    )
    assert row.state is OutboxState.QUEUED
    assert row.delivered_at is None and row.receipt_id is None
    assert "certificate" in row.last_error.lower() or "ssl" in row.last_error.lower()
    assert phl.store.inbox_feed(0, 10) == []


def handshake_refusals(node, reason: str) -> list:
    return [
        r
        for r in audit_leaves(node.audit, LeafKind.AUTH_FAILED)
        if r.reason == reason and r.attrs.get("operation") == "peer_api.handshake"
    ]


def refused_count(node, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "exchange_peer_handshakes_refused_total", {"reason": reason}
    )
    return value or 0


async def talk(nd, server_card, port: int, *, with_cert: bool = True) -> bytes:
    """Open a TLS connection as ``nd`` (or with no client certificate), send a request
    head and read what comes back; b"" when the server ends the connection."""
    if with_cert:
        keys = nd.keys()
        ctx = client_context(keys.tls_cert_der, keys.tls_key_path, server_card.tls_certificate)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        trust_peers(ctx, [server_card.tls_certificate])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except (ssl.SSLError, ConnectionError):
        return b""
    try:
        writer.write(b"GET /exchange/v1/card HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=15)
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        writer.close()


async def test_a_handshake_with_an_unpinned_certificate_is_audited_and_counted(net, tmp_path):
    phl = await net[PHL].start()
    stranger = make_node_dir(tmp_path / "elsewhere", IOM, tls=True)

    assert await talk(stranger, phl.keys.card, net[PHL].peer_port) == b""

    [leaf] = await wait_for(
        lambda: handshake_refusals(phl, "tls_certificate_unknown"), what="the refusal's leaf"
    )
    assert leaf.actor == "unknown" and leaf.peer == ""
    assert leaf.attrs["remote_addr"] == "127.0.0.1"
    assert leaf.attrs["remote_port"].isdigit()
    assert leaf.attrs["tls_error"] == "certificate_verify_failed"
    assert refused_count(phl, "tls_certificate_unknown") == 1


async def test_a_handshake_without_a_client_certificate_is_audited(net):
    phl = await net[PHL].start()

    assert await talk(None, phl.keys.card, net[PHL].peer_port, with_cert=False) == b""

    [leaf] = await wait_for(
        lambda: handshake_refusals(phl, "tls_certificate_missing"), what="the refusal's leaf"
    )
    assert leaf.attrs["remote_addr"] == "127.0.0.1"
    assert refused_count(phl, "tls_certificate_missing") == 1


async def test_a_pinned_peer_still_gets_through_after_refused_handshakes(net, tmp_path):
    phl = await net[PHL].start()
    stranger = make_node_dir(tmp_path / "elsewhere", IOM, tls=True)
    await talk(stranger, phl.keys.card, net[PHL].peer_port)

    answer = await talk(net[JPN], phl.keys.card, net[PHL].peer_port)

    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_flood_of_refused_handshakes_is_audited_within_its_budget(net, tmp_path):
    phl = await net[PHL].start()
    phl.handshake_refusals.budget = 3
    stranger = make_node_dir(tmp_path / "elsewhere", IOM, tls=True)

    await asyncio.gather(*(talk(stranger, phl.keys.card, net[PHL].peer_port) for _ in range(12)))

    await wait_for(lambda: refused_count(phl, "tls_certificate_unknown") == 12, what="12 refusals")
    await wait_for(
        lambda: len(handshake_refusals(phl, "tls_certificate_unknown")) == 3, what="three leaves"
    )
    # The window ends: the nine past the budget are counted in one entry.
    later = time.monotonic() + phl.handshake_refusals.window_seconds
    phl.handshake_refusals.monotonic = lambda: later
    phl.handshake_refusals.flush()
    [summary] = await wait_for(
        lambda: handshake_refusals(phl, "refusals_suppressed"), what="the summary leaf"
    )
    assert summary.attrs["suppressed"] == "9"
    assert len(handshake_refusals(phl, "tls_certificate_unknown")) == 3


async def held_batch(nd, server_card, port: int, length: int) -> tuple[int, dict]:
    """A batch request whose headers and first bytes arrive and whose rest never does:
    the status and JSON body of the answer."""
    keys = nd.keys()
    ctx = client_context(keys.tls_cert_der, keys.tls_key_path, server_card.tls_certificate)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(
            f"POST /exchange/v1/batch HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/x-protobuf\r\nContent-Length: {length}\r\n\r\n".encode()
            + b"\x0a\x10"
        )
        await writer.drain()
        status = int((await asyncio.wait_for(reader.readline(), timeout=60)).split()[1])
        headers = {}
        while (line := await asyncio.wait_for(reader.readline(), timeout=15)) != b"\r\n":
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        return status, json.loads(body)
    finally:
        writer.close()


async def test_one_peer_holding_its_connections_open_does_not_lock_the_others_out(tmp_path):
    net = await make_net(
        tmp_path,
        [JPN, PHL, IOM],
        tls=True,
        options={PHL: {"body_timeout_seconds": 5}},
        pins=[(PHL, JPN), (PHL, IOM), (JPN, PHL), (IOM, PHL)],
    )
    try:
        phl = await net[PHL].start()
        iom = await net[IOM].open()
        port, card = net[PHL].peer_port, phl.keys.card
        assert phl.config.peer_api.max_concurrent_batches == 8
        assert phl.inbound.max_per_peer == 2

        # JPN opens eight batches and sends none of them in full.
        held = [asyncio.create_task(held_batch(net[JPN], card, port, 4096)) for _ in range(8)]
        await wait_for(lambda: sum(t.done() for t in held) == 6, what="six answers")
        assert [t.result()[0] for t in held if t.done()] == [429] * 6
        assert {t.result()[1]["code"] for t in held if t.done()} == {"peer_limit"}
        assert phl.inbound.held == {JPN: 2}

        # IOM is served meanwhile.
        envelope = seal(
            fraud_notice().SerializeToString(),
            sender=iom.keys.local,
            recipient=card,
            now_ms=now_ms(),
        )
        status, _ = await post_as(net[IOM], net[PHL], card, batch_bytes(IOM, [envelope.data]))
        assert status == 200

        # The two held bodies are refused at their deadline and free their slots.
        rest = await asyncio.gather(*(t for t in held if not t.done()))
        assert [(s, b["code"]) for s, b in rest] == [(408, "body_timeout")] * 2
        assert not phl.inbound.held

        def timeouts() -> list:
            leaves = audit_leaves(phl.audit, LeafKind.ENVELOPE_REJECTED)
            return [r.peer for r in leaves if r.reason == "body_timeout"]

        await wait_for(lambda: len(timeouts()) == 2, what="the two refusals' leaves")
        assert timeouts() == [JPN, JPN]
        assert [r.message_id for r in phl.store.inbox_feed(0, 10)] == [envelope.message_id]
    finally:
        await net.stop_all()


async def test_plain_http_and_tls_1_2_on_the_tls_port_are_refused_in_the_handshake(net):
    phl = await net[PHL].start()
    port = net[PHL].peer_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /exchange/v1/card HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert not (await asyncio.wait_for(reader.read(), timeout=15)).startswith(b"HTTP")
    writer.close()
    keys = net[JPN].keys()
    old = client_context(keys.tls_cert_der, keys.tls_key_path, phl.keys.card.tls_certificate)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection("127.0.0.1", port, ssl=old)

    await wait_for(
        lambda: len(handshake_refusals(phl, "tls_handshake_failed")) == 2, what="two leaves"
    )
    errors = {r.attrs["tls_error"] for r in handshake_refusals(phl, "tls_handshake_failed")}
    assert errors == {"http_request", "unsupported_protocol"}
    assert refused_count(phl, "tls_handshake_failed") == 2
