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


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


async def test_an_exported_proof_of_delivery_verifies_offline(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    fingerprint = net[PHL].keys().fingerprint
    capsys.readouterr()

    assert await verify(out, "--fingerprint", fingerprint) == 0
    lines = _lines(capsys)
    assert lines[0] == f"delivery proof {out}: OK"
    assert lines[1].startswith(f"  {JPN} -> {PHL}, message {mid}: accepted at ")
    assert (
        lines[2] == f"  recipient card (serial 1) fingerprint {fingerprint} (matches --fingerprint)"
    )
    assert not any("problem" in line for line in lines)


async def test_without_a_fingerprint_nothing_is_established(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    capsys.readouterr()

    assert await verify(out) == 3
    lines = _lines(capsys)
    assert lines[0] == f"delivery proof {out}: NOT ESTABLISHED"
    fingerprint = net[PHL].keys().fingerprint
    assert (
        f"  recipient card (serial 1) fingerprint in the file: {fingerprint} (not checked: no --fingerprint"
        " given)"
    ) in lines
    assert lines[-1].startswith("  NOT ESTABLISHED: the file is consistent, but nothing ties it")


async def test_a_wrong_fingerprint_is_not_shown_as_the_one_given(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    capsys.readouterr()
    wrong = net[JPN].keys().fingerprint

    assert await verify(out, "--fingerprint", wrong) == 1
    lines = _lines(capsys)
    assert lines[0] == f"delivery proof {out}: FAILED"
    theirs = net[PHL].keys().fingerprint
    assert (
        f"  recipient card (serial 1) fingerprint in the file: {theirs}"
        f" (does NOT match --fingerprint {wrong})"
    ) in lines
    assert not any("as given" in line or "(matches" in line for line in lines[:3])


def _replace(out, **fields) -> None:
    proof = json.loads(out.read_text())
    proof.update(fields)
    out.write_text(json.dumps(proof))


async def _bundle(net, node: str, tmp_path, *filters: str) -> str:
    """An audit bundle exported from ``node``'s own log, base64."""
    config = ["--config", str(net[node].config_path)]
    assert await asyncio.to_thread(run_cli, [*config, "audit", "checkpoint"]) == 0
    path = tmp_path / f"{node}-bundle.json"
    args = [*config, "audit", "export", *filters, "--out", str(path)]
    assert await asyncio.to_thread(run_cli, args) == 0
    return base64.b64encode(path.read_bytes()).decode()


async def test_a_bundle_of_the_recipients_log_is_refused(delivered, tmp_path, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    _replace(out, audit_bundle=await _bundle(net, PHL, tmp_path, "--message-id", mid))
    capsys.readouterr()

    assert await verify(out, "--fingerprint", net[PHL].keys().fingerprint) == 1
    lines = _lines(capsys)
    assert (
        f"  problem: audit_origin_mismatch: the bundle is the log 'exchange-node.example/{PHL}',"
        f" not the sender's 'exchange-node.example/{JPN}'"
    ) in lines


async def test_a_bundle_without_the_envelope_sent_entry_is_refused(delivered, tmp_path, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    entries = ["--message-id", mid, "--kind", "notice.submitted"]
    _replace(out, audit_bundle=await _bundle(net, JPN, tmp_path, *entries))
    capsys.readouterr()

    assert await verify(out, "--fingerprint", net[PHL].keys().fingerprint) == 1
    problems = [line for line in _lines(capsys) if "problem:" in line]
    assert len(problems) == 1
    assert problems[0].startswith(
        "  problem: audit_entry_missing: the bundle proves no envelope.sent entry for this"
        f" message to {PHL} in batch "
    )


async def test_a_receipt_breaking_the_outcome_rules_is_refused(delivered, capsys):
    """Signed by the recipient, but an ACCEPTED outcome carries a reason (protocol 11.4
    step 7): not an answer a sender may act on."""
    from exchange_node.pb.exchange.v1 import envelope_pb2
    from exchange_node.protocol.receipts import receipt_signature_input

    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    proof = json.loads(out.read_text())
    sr = envelope_pb2.SignedReceipt.FromString(base64.b64decode(proof["receipt"]))
    receipt = envelope_pb2.BatchReceipt.FromString(sr.receipt)
    receipt.outcomes[0].reason = 1
    body = receipt.SerializeToString()
    signature = net[PHL].keys().local.signing_key.private.sign(receipt_signature_input(body))
    forged = envelope_pb2.SignedReceipt(receipt=body, signature=signature).SerializeToString()
    _replace(out, receipt=base64.b64encode(forged).decode())
    capsys.readouterr()

    assert await verify(out, "--fingerprint", net[PHL].keys().fingerprint) == 1
    lines = _lines(capsys)
    assert "  problem: receipt_outcome_invalid: outcome 0 is accepted with a reason" in lines


async def test_a_proof_with_a_duplicate_key_is_refused(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    text = out.read_text().rstrip().removesuffix("}") + ', "sender": "XXX-EVIL"}'
    out.write_text(text)
    capsys.readouterr()

    assert await verify(out, "--fingerprint", net[PHL].keys().fingerprint) == 1
    assert "  problem: proof_duplicate_key: the key 'sender' appears twice in one object" in (
        _lines(capsys)
    )


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


async def test_the_exported_bundle_holds_the_entries_for_the_message_and_its_receipt(delivered):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    bundle = json.loads(base64.b64decode(json.loads(out.read_text())["audit_bundle"]))
    kinds = [json.loads(base64.b64decode(leaf["data"]))["kind"] for leaf in bundle["leaves"]]
    assert "envelope.sent" in kinds and "receipt.received" in kinds
    assert bundle["origin"] == f"exchange-node.example/{JPN}"


async def test_a_receipt_for_another_batch_is_refused(delivered, capsys):
    """Signed by the recipient and listing the envelope, but for a batch the sender's log
    records no sending of this message in."""
    from exchange_node.pb.exchange.v1 import envelope_pb2
    from exchange_node.protocol.receipts import receipt_signature_input

    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    proof = json.loads(out.read_text())
    sr = envelope_pb2.SignedReceipt.FromString(base64.b64decode(proof["receipt"]))
    receipt = envelope_pb2.BatchReceipt.FromString(sr.receipt)
    receipt.batch_id = b"\x07" * 16
    body = receipt.SerializeToString()
    signature = net[PHL].keys().local.signing_key.private.sign(receipt_signature_input(body))
    forged = envelope_pb2.SignedReceipt(receipt=body, signature=signature).SerializeToString()
    _replace(out, receipt=base64.b64encode(forged).decode())
    capsys.readouterr()

    assert await verify(out, "--fingerprint", net[PHL].keys().fingerprint) == 1
    assert (
        "  problem: audit_entry_missing: the bundle proves no envelope.sent entry for this"
        f" message to {PHL} in batch {'07' * 16}"
    ) in _lines(capsys)


async def test_a_proof_checked_against_the_senders_audit_key(delivered, capsys):
    net, mid, out = delivered
    assert await export(net, mid, out) == 0
    fingerprint = net[PHL].keys().fingerprint
    jpn_key = net[JPN].keys().local.signing_key.public.hex()
    phl_key = net[PHL].keys().local.signing_key.public.hex()
    capsys.readouterr()

    assert await verify(out, "--fingerprint", fingerprint, "--audit-key", jpn_key) == 0
    assert any(line.endswith("(matches --audit-key)") for line in _lines(capsys))

    assert await verify(out, "--fingerprint", fingerprint, "--audit-key", phl_key) == 1
    lines = _lines(capsys)
    assert any(line.endswith("(does NOT match --audit-key)") for line in lines)
    assert (
        "  problem: audit: bundle_key_untrusted: the bundle's key is not the trusted key" in lines
    )
    # Every key the sender has had, current and earlier: the one that signed is among them.
    args = ["--fingerprint", fingerprint, "--audit-key", phl_key, "--audit-key", jpn_key]
    assert await verify(out, *args) == 0
