"""User story 14: a court asks whether a notice reached a peer. The node exports one file;
anyone checks it offline, and any tampering shows."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from tests.node_helpers import fraud_notice, make_net, run_cli, settled, wait_for

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def delivered(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    jpn = await net[JPN].start()
    await net[PHL].start()
    [sub] = await jpn.submit(fraud_notice(), [PHL])
    await wait_for(lambda: settled(jpn.store, [sub.message_id]), what="delivery")
    await net.stop_all()
    yield net, sub.message_id.hex(), tmp_path / "proof.json"


async def export(net, mid, out) -> int:
    args = ["--config", str(net[JPN].config_path), "proof", "export", mid, "--out", str(out)]
    return await asyncio.to_thread(run_cli, args)


async def verify(out, *extra: str) -> int:
    return await asyncio.to_thread(run_cli, ["proof", "verify", str(out), *extra])


async def test_an_exported_proof_of_delivery_verifies_offline(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    fingerprint = net[PHL].keys().fingerprint

    assert await verify(out, "--fingerprint", fingerprint) == 0
    text = capsys.readouterr().out
    assert f"{JPN} -> {PHL}, message {mid}: accepted" in text
    assert "OK" in text


async def test_a_tampered_receipt_in_a_proof_is_detected(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    proof = json.loads(out.read_text())
    receipt = bytearray(base64.b64decode(proof["receipt"]))
    receipt[-1] ^= 0x01  # the last byte of the signature
    proof["receipt"] = base64.b64encode(bytes(receipt)).decode()
    out.write_text(json.dumps(proof))

    assert await verify(out) == 1
    assert "receipt_signature_invalid" in capsys.readouterr().out


async def test_a_proof_checked_against_another_fingerprint_fails(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    assert await verify(out, "--fingerprint", net[JPN].keys().fingerprint) == 1
    assert "card_untrusted" in capsys.readouterr().out
