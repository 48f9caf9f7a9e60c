"""Key rotation and revocation between running nodes: no pause in delivery, re-sealing
when the peer's encryption key changed, revoked keys refused."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from exchange_node.cli import keys as cli_keys
from exchange_node.identity import finish_rotation, load_identity, prepare_rotation, rotate_keys
from exchange_node.pb.exchange.v1 import envelope_pb2, types_pb2
from exchange_node.protocol.envelope import seal
from exchange_node.protocol.receipts import verify_receipt
from exchange_node.store.records import OutboxState, Outcome
from tests.node_helpers import (
    batch_bytes,
    fraud_notice,
    make_net,
    now_ms,
    run_cli,
    settled,
    sha256,
    wait_for,
)

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture
async def net(tmp_path):
    net = await make_net(tmp_path, [JPN, PHL])
    yield net
    await net.stop_all()


async def cli(capsys, *args: str) -> str:
    capsys.readouterr()
    code = await asyncio.to_thread(run_cli, args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def header(row) -> envelope_pb2.EnvelopeHeader:
    return envelope_pb2.EnvelopeHeader.FromString(row.header)


async def rotate_jpn(net, capsys) -> bytes:
    """``exchange-node keys rotate`` on the running JPN node; the announcement's id."""
    out = await cli(capsys, "--config", str(net[JPN].config_path), "keys", "rotate")
    announcement = re.search(rf"for {PHL}: message ([0-9a-f]{{32}})", out).group(1)
    jpn = net[JPN].running
    await wait_for(lambda: jpn.keys.card.serial == 2, what="the running node to load its new keys")
    return bytes.fromhex(announcement)


async def test_notices_signed_after_a_rotation_are_accepted_after_the_announcement(net, capsys):
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    old_key = jpn.keys.local.signing_key.key_id

    announcement = await rotate_jpn(net, capsys)
    new_key = jpn.keys.local.signing_key.key_id
    [sub] = await jpn.submit(fraud_notice(), [PHL])
    await wait_for(lambda: settled(jpn.store, [announcement, sub.message_id]), what="delivery")

    assert new_key != old_key
    assert phl.keyring.require(JPN).serial == 2
    [row] = jpn.store.message_status(sub.message_id)
    assert (row.state, row.outcome) == (OutboxState.DELIVERED, Outcome.ACCEPTED)
    inbox = {r.message_id: r for r in phl.store.inbox_feed(0, 100)}
    assert inbox[announcement].cursor < inbox[sub.message_id].cursor
    assert header(inbox[announcement]).sender_key_id == old_key
    assert header(inbox[sub.message_id]).sender_key_id == new_key


async def test_a_notice_submitted_while_keys_rotate_is_not_signed_ahead_of_the_announcement(
    net, capsys, monkeypatch
):
    # `keys rotate` on a running node: the node picks up a new card.pb within a second.
    # A notice submitted while the command is still queueing the announcement must not
    # go out signed with keys the peer cannot know yet (it was rejected unknown_key and
    # dead-lettered after three re-seals, all before the announcement was queued).
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    loop = asyncio.get_running_loop()
    during: list[bytes] = []
    real_announce = cli_keys._announce

    def on_node(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def slow_announce(*args, **kwargs):
        # The command is slow to queue the announcement: the node's watch ticks twice
        # and the notice has gone its way before the announcement is queued.
        await asyncio.sleep(1.2)
        [sub] = on_node(jpn.submit(fraud_notice(), [PHL]))
        during.append(sub.message_id)
        on_node(wait_for(lambda: settled(jpn.store, during), what="the notice"))
        return await real_announce(*args, **kwargs)

    monkeypatch.setattr(cli_keys, "_announce", slow_announce)
    announcement = await rotate_jpn(net, capsys)
    await wait_for(lambda: settled(jpn.store, [announcement, *during]), what="delivery")

    [row] = jpn.store.message_status(during[0])
    assert (row.state, row.outcome, row.reason) == (
        OutboxState.DELIVERED,
        Outcome.ACCEPTED,
        None,
    )
    assert phl.keyring.require(JPN).serial == 2
    assert phl.store.get_inbox(JPN, during[0]) is not None


def test_a_rotation_interrupted_after_its_announcement_is_finished_with_the_same_card(net):
    data = net[JPN].data
    announced = prepare_rotation(data, now_ms=now_ms())  # then the command died
    assert load_identity(data).card.serial == 1

    assert prepare_rotation(data, now_ms=now_ms()) == announced
    keys = finish_rotation(data)
    assert (keys.card.serial, keys.card_bytes) == (2, announced)


async def test_envelopes_sealed_to_a_retired_encryption_key_are_resealed_and_accepted(net):
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    await jpn.store.set_paused(PHL, True, now_ms())
    jpn.reload_peers()
    queued = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0].message_id for i in range(3)]

    # PHL replaces its keys with no overlap: its old encryption key no longer opens
    # anything. JPN learns the new card (as from PHL's announcement) while its queue,
    # sealed to the old key, waits.
    await net[PHL].stop()
    rotated = rotate_keys(net[PHL].data, now_ms=now_ms(), overlap_ms=0)
    phl = await net[PHL].start()
    await jpn.directory.accept_rotation(rotated.card_bytes, actor=PHL)
    await jpn.store.set_paused(PHL, False, now_ms())
    jpn.reload_peers()
    await wait_for(lambda: settled(jpn.store, queued), what="delivery after re-sealing")

    rows = [jpn.store.message_status(m)[0] for m in queued]
    assert all((r.state, r.outcome) == (OutboxState.DELIVERED, Outcome.ACCEPTED) for r in rows)
    refused = jpn.metrics.registry.get_sample_value(
        "exchange_envelopes_sent_total",
        {"peer": PHL, "outcome": "rejected", "reason": "unknown_recipient_key"},
    )
    assert refused == len(queued)
    new_key = rotated.local.encryption_keys[0].key_id
    assert all(header(phl.store.get_inbox(JPN, m)).recipient_key_id == new_key for m in queued)


async def test_an_envelope_signed_by_a_revoked_key_is_rejected_key_revoked(net, capsys):
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    before = jpn.keys.local

    announcement = await rotate_jpn(net, capsys)
    await wait_for(lambda: settled(jpn.store, [announcement]), what="the rotation announcement")
    out = await cli(
        capsys,
        "--config",
        str(net[JPN].config_path),
        "keys",
        "revoke",
        before.signing_key.key_id.hex(),
    )
    revocation = bytes.fromhex(re.search(r"message ([0-9a-f]{32})", out).group(1))
    await wait_for(lambda: settled(jpn.store, [revocation]), what="the revocation")
    assert before.signing_key.key_id in phl.keyring.revoked

    stolen = seal(
        fraud_notice().SerializeToString(),
        sender=before,
        recipient=jpn.keyring.require(PHL),
        now_ms=now_ms(),
    )
    batch_id = bytes(range(16))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            net[PHL].url + "/exchange/v1/batch",
            data=batch_bytes(JPN, [stolen.data], batch_id),
            headers={"Content-Type": "application/x-protobuf"},
        ) as resp,
    ):
        assert resp.status == 200
        signed = await resp.read()

    [outcome] = verify_receipt(
        signed,
        keyring=jpn.keyring,
        receiver=PHL,
        sender=JPN,
        batch_id=batch_id,
        envelope_hashes=[sha256(stolen.data)],
    ).outcomes
    assert outcome.outcome == envelope_pb2.OUTCOME_REJECTED
    assert outcome.reason == types_pb2.REASON_KEY_REVOKED
    assert phl.store.get_inbox(JPN, stolen.message_id) is None


async def test_after_a_rotation_on_a_running_node_audit_exports_and_proofs_use_the_new_key(
    net, capsys, tmp_path
):
    from exchange_node.audit.checkpoint import origin_for, verifier_key
    from exchange_node.audit.log import AuditLog
    from exchange_node.protocol.keys import ed25519_public_key

    await net[PHL].start()
    jpn = await net[JPN].start()
    config = ["--config", str(net[JPN].config_path)]
    old = jpn.keys.local.signing_key.public
    await jpn.sign_checkpoint()  # signed with the old key
    before = jpn.audit.latest_checkpoint().tree_size
    announcement = await rotate_jpn(net, capsys)
    await wait_for(lambda: settled(jpn.store, [announcement]), what="the announcement")
    await jpn.sign_checkpoint()  # the first checkpoint signed with the new key
    new = jpn.keys.local.signing_key.public
    assert new != old

    lines = (await cli(capsys, *config, "keys", "show")).splitlines()
    assert lines[2] == f"signing key (current: signs new checkpoints): {new.hex()}"
    assert f"signing key (earlier: signed older checkpoints): {old.hex()}" in lines

    bundle = tmp_path / "bundle.json"
    await cli(capsys, *config, "audit", "export", "--kind", "key.rotated", "--out", str(bundle))
    text = await cli(capsys, "audit", "verify-bundle", str(bundle), "--key", new.hex())
    assert text.splitlines()[0] == f"bundle {bundle}: OK"
    with AuditLog.open(jpn.config.data_path / "node.sqlite") as log:
        assert log.stored_public_key() == new

    proof = await cli(capsys, *config, "audit", "prove", "0")
    key = verifier_key(origin_for(JPN), ed25519_public_key(new))
    assert f'"verifier_key": "{key}"' in proof
    earlier = tmp_path / "earlier.json"
    earlier.write_text(
        await cli(capsys, *config, "audit", "prove", "0", "--tree-size", str(before))
    )
    key = verifier_key(origin_for(JPN), ed25519_public_key(old))
    assert f'"verifier_key": "{key}"' in earlier.read_text()
    both = ["--key", new.hex(), "--key", old.hex()]
    text = await cli(capsys, "audit", "verify-proof", str(earlier), *both)
    assert text.splitlines()[0] == f"audit proof {earlier}: OK"
