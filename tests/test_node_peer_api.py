"""The peer API's refusals: unknown senders, mismatched senders, oversized, mistyped and
malformed bodies, overload. Each refusal is audited and stores nothing."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from exchange_node.audit.leaf import LeafKind
from exchange_node.pb.exchange.v1 import envelope_pb2, types_pb2
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.receipts import verify_receipt
from tests.node_helpers import (
    audit_leaves,
    batch_bytes,
    fraud_notice,
    make_net,
    now_ms,
    sha256,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("node_store_backend")

JPN, PHL, IOM = "JPN-ISA", "PHL-DFA", "IOM-MNL"
LIMIT = 64 * 1024
PROTOBUF = "application/x-protobuf"


@pytest.fixture
async def net(tmp_path):
    # PHL pins JPN and IOM; IOM pins nobody and is unknown to... nobody but itself.
    net = await make_net(
        tmp_path,
        [JPN, PHL, IOM],
        options={
            PHL: {
                "max_batch_bytes": LIMIT,
                "max_concurrent_batches": 2,
                "max_concurrent_batches_per_peer": 1,
            }
        },
        pins=[(PHL, JPN), (JPN, PHL), (IOM, PHL)],
    )
    yield net
    await net.stop_all()


def sealed_for(sender_node, recipient: str, n: int = 1):
    return [
        seal(
            fraud_notice(f"P{i:07d}").SerializeToString(),
            sender=sender_node.keys.local,
            recipient=sender_node.keyring.require(recipient),
            now_ms=now_ms(),
        )
        for i in range(n)
    ]


async def post(url: str, data: bytes, content_type: str = PROTOBUF) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/exchange/v1/batch", data=data, headers={"Content-Type": content_type}
        ) as resp,
    ):
        return resp.status, await resp.read()


async def batch_rejections(node, code: str) -> list:
    return await wait_for(
        lambda: [
            r
            for r in audit_leaves(node.audit, LeafKind.ENVELOPE_REJECTED)
            if r.reason == code and r.attrs.get("scope") == "batch"
        ],
        what=f"an envelope.rejected leaf for {code}",
    )


async def test_a_batch_from_an_unpinned_sender_is_refused_403_and_audited(net):
    phl = await net[PHL].start()
    iom = await net[IOM].open()
    data = batch_bytes(IOM, [e.data for e in sealed_for(iom, PHL)])

    status, body = await post(net[PHL].url, data)

    assert status == 403
    assert json.loads(body)["code"] == "unknown_peer"
    await batch_rejections(phl, "unknown_peer")
    assert phl.store.inbox_feed(0, 10) == []


async def test_an_envelope_from_another_sender_than_the_batch_is_rejected_sender_mismatch(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].open()
    iom = await net[IOM].open()
    own, foreign = sealed_for(jpn, PHL)[0], sealed_for(iom, PHL)[0]
    batch_id = bytes(16)
    data = batch_bytes(JPN, [own.data, foreign.data], batch_id)

    status, receipt = await post(net[PHL].url, data)

    assert status == 200
    verified = verify_receipt(
        receipt,
        keyring=jpn.keyring,
        receiver=PHL,
        sender=JPN,
        batch_id=batch_id,
        envelope_hashes=[sha256(own.data), sha256(foreign.data)],
    )
    accepted, rejected = verified.outcomes
    assert accepted.outcome == envelope_pb2.OUTCOME_ACCEPTED
    assert rejected.outcome == envelope_pb2.OUTCOME_REJECTED
    assert rejected.reason == types_pb2.REASON_SENDER_MISMATCH
    assert [r.message_id for r in phl.store.inbox_feed(0, 10)] == [own.message_id]


async def raw_request(port: int, head: str, body: bytes) -> tuple[asyncio.StreamReader, object]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def read_status(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await asyncio.wait_for(reader.readline(), timeout=10)
    headers = {}
    while (line := await asyncio.wait_for(reader.readline(), timeout=10)) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), headers


def batch_head(port: int, length: int, content_type: str = PROTOBUF) -> str:
    return (
        f"POST /exchange/v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )


async def test_an_oversized_batch_is_refused_413_before_its_body_is_read(net):
    phl = await net[PHL].start()
    port = net[PHL].peer_port
    # Announce 100 times the limit, send 10 bytes, and wait: the answer must come
    # without the server waiting for (or reading) the rest.
    reader, writer = await raw_request(port, batch_head(port, 100 * LIMIT), b"0123456789")
    try:
        status, _ = await read_status(reader)
    finally:
        writer.close()

    assert status == 413
    await batch_rejections(phl, "batch_oversized")
    assert phl.store.inbox_feed(0, 10) == []


async def test_a_batch_with_the_wrong_content_type_leaves_an_audit_leaf(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].open()
    data = batch_bytes(JPN, [e.data for e in sealed_for(jpn, PHL)])

    status, _ = await post(net[PHL].url, data, content_type="application/json")
    assert status == 415
    # A later audited refusal: once its leaf is there, an earlier one would be too.
    assert (await post(net[PHL].url, b"\xff not protobuf"))[0] == 400
    await batch_rejections(phl, "batch_malformed")

    reasons = [r.reason for r in audit_leaves(phl.audit, LeafKind.ENVELOPE_REJECTED)]
    assert "unsupported_media_type" in reasons


async def test_a_batch_with_the_wrong_content_type_is_refused_415_and_stores_nothing(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].open()
    data = batch_bytes(JPN, [e.data for e in sealed_for(jpn, PHL)])

    status, body = await post(net[PHL].url, data, content_type="application/json")

    assert status == 415
    assert json.loads(body)["code"] == "unsupported_media_type"
    assert phl.store.inbox_feed(0, 10) == []


async def test_a_malformed_batch_is_refused_400_and_audited(net):
    phl = await net[PHL].start()

    status, body = await post(net[PHL].url, b"\xff\xff\xff not protobuf")

    assert status == 400
    assert json.loads(body)["code"] == "batch_malformed"
    await batch_rejections(phl, "batch_malformed")
    assert phl.store.inbox_feed(0, 10) == []


async def test_a_second_batch_while_one_is_in_progress_gets_429_with_retry_after(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].open()
    port = net[PHL].peer_port
    data = batch_bytes(JPN, [e.data for e in sealed_for(jpn, PHL)])
    # The first batch holds its peer's only slot while its body is still arriving.
    reader, writer = await raw_request(port, batch_head(port, len(data)), data[:10])
    try:
        await wait_for(lambda: phl.inbound.held, what="the first batch to take a slot")

        async with (
            aiohttp.ClientSession() as session,
            session.post(
                net[PHL].url + "/exchange/v1/batch",
                data=data,
                headers={"Content-Type": PROTOBUF},
            ) as resp,
        ):
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1

        writer.write(data[10:])
        await writer.drain()
        status, _ = await read_status(reader)
    finally:
        writer.close()
    assert status == 200
    assert len(phl.store.inbox_feed(0, 10)) == 1


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := await asyncio.wait_for(reader.read(65536), timeout=15):
        chunks.append(chunk)
    return b"".join(chunks)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a stream of HTTP/1.1 responses with Content-Length bodies."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        length = int(headers.get("content-length", "0"))
        out.append((int(status_line.split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


async def request_rejections(node, code: str) -> list:
    return await wait_for(
        lambda: [
            r
            for r in audit_leaves(node.audit, LeafKind.REQUEST_REFUSED)
            if r.reason == code and r.attrs.get("operation") == "peer_api"
        ],
        what=f"a request.refused leaf for {code}",
    )


async def test_a_body_longer_than_its_content_length_is_refused_in_json_quoting_nothing(net):
    phl = await net[PHL].start()
    port = net[PHL].peer_port
    # Five bytes announced, more sent: what follows the five is not a request.
    body = b"\xff\xff\xffSECRET-BYTES-THAT-MUST-NOT-COME-BACK"
    reader, writer = await raw_request(port, batch_head(port, 5), body)
    try:
        raw = await read_all(reader)
    finally:
        writer.close()

    # aiohttp's parser reads the five and what follows in one go and refuses both.
    [(status, headers, content)] = responses(raw)
    assert b"SECRET" not in raw
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(content) == {
        "code": "request_malformed",
        "detail": json.loads(content)["detail"],
        "status": 400,
    }
    [leaf] = await request_rejections(phl, "request_malformed")
    assert leaf.attrs["status"] == "400" and leaf.attrs["remote_addr"] == "127.0.0.1"
    assert phl.store.inbox_feed(0, 10) == []


async def test_an_unknown_path_is_answered_404_in_json_and_audited(net):
    phl = await net[PHL].start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(net[PHL].url + "/exchange/v1/nothing-here") as resp,
    ):
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert (await resp.json())["code"] == "not_found"
    await request_rejections(phl, "not_found")


async def test_the_server_header_names_no_software_or_version(net):
    await net[PHL].start()
    port = net[PHL].peer_port
    async with aiohttp.ClientSession() as session:
        async with session.get(net[PHL].url + "/exchange/v1/card") as resp:
            assert resp.status == 200
            assert resp.headers["Server"] == "exchange-node"
        async with session.get(net[PHL].url + "/exchange/v1/nothing-here") as resp:
            assert resp.headers["Server"] == "exchange-node"
    reader, writer = await raw_request(port, "BREW /coffee HTCPCP/1.0\r\n\r\n", b"")
    try:
        [(status, headers, _)] = responses(await read_all(reader))
    finally:
        writer.close()
    assert status == 400
    assert headers["server"] == "exchange-node"


@pytest.fixture
async def slow_net(tmp_path):
    net = await make_net(
        tmp_path,
        [JPN, PHL],
        options={PHL: {"body_timeout_seconds": 1}},
        pins=[(PHL, JPN), (JPN, PHL)],
    )
    yield net
    await net.stop_all()


async def test_a_body_shorter_than_its_content_length_is_refused_408_and_frees_its_slot(
    slow_net,
):
    phl = await slow_net[PHL].start()
    port = slow_net[PHL].peer_port
    reader, writer = await raw_request(port, batch_head(port, 1000), b"0123456789")
    try:
        raw = await read_all(reader)
    finally:
        writer.close()

    [(status, headers, content)] = responses(raw)
    assert status == 408
    assert headers["content-type"].startswith("application/json")
    assert json.loads(content)["code"] == "body_timeout"
    await batch_rejections(phl, "body_timeout")
    assert not phl.inbound.held
