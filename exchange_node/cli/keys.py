"""This node's keys: ``keys show``; ``keys rotate``, ``keys revoke``, each announced to
every peer."""

from __future__ import annotations

from exchange_node.audit import leaves
from exchange_node.audit.leaf import AuditEvent
from exchange_node.cli.common import (
    CliError,
    _cfg,
    _node,
    _passphrase,
    _store,
    now_ms,
    operator_actor,
)
from exchange_node.config import Config
from exchange_node.identity import (
    ROTATION_OVERLAP_MS,
    all_signing_public_keys,
    encrypt_key_files,
    finish_rotation,
    load_identity,
    prepare_rotation,
    revoke_key,
    unencrypted_key_files,
)
from exchange_node.pb.exchange.v1 import card_pb2, notice_pb2
from exchange_node.protocol.cards import verify_card
from exchange_node.protocol.envelope import DAY_MS
from exchange_node.protocol.keys import Suite


def rotation_overlap_ms(cfg: Config) -> int:
    """How long keys replaced by a rotation stay on the card: at least this node's own
    maximum age (``retention_days``), since peers seal to our previous encryption key
    until they see the new card, and never less than the protocol default, which peers'
    maximum age for envelopes we signed is by default (docs/protocol.md 10.5)."""
    return max(ROTATION_OVERLAP_MS, cfg.protocol.retention_days * DAY_MS)


def cmd_keys_show(args) -> int:
    """What an auditor or a court needs from this node's operator, read out of band: the
    card fingerprint (``proof verify --fingerprint``, for proofs of deliveries *to* this
    node), the signing keys that sign audit checkpoints (``--audit-key``, ``--key``) and
    the witness key it cosigns others' checkpoints with (``--witness``)."""
    from exchange_node.audit.bundle import key_fingerprint
    from exchange_node.audit.cosignature import witness_vkey
    from exchange_node.identity import load_or_create_witness_key, witness_name

    cfg = _cfg(args)
    passphrase = _passphrase(cfg)
    keys = load_identity(cfg.data_path, passphrase)
    print(f"node {keys.card.node_id}, card serial {keys.card.serial}")
    print(f"card fingerprint: {keys.fingerprint}")
    for i, public in enumerate(all_signing_public_keys(cfg.data_path, passphrase)):
        when = "current: signs new checkpoints" if i == 0 else "earlier: signed older checkpoints"
        print(f"signing key ({when}): {public.hex()}")
        print(f"  fingerprint (SHA-256): {key_fingerprint(public)}")
    # The key this node cosigns peers' checkpoints with, for their witness policies.
    witness = load_or_create_witness_key(cfg.data_path, passphrase)
    vkey = witness_vkey(witness_name(keys.card.node_id), witness.public_key())
    print(f"witness key (cosignature/v1, --witness): {vkey.encode()}")
    return 0


async def cmd_keys_rotate(args) -> int:
    """New keys; the new card is announced to every peer, signed by the old key."""
    cfg = _cfg(args)
    passphrase = _passphrase(cfg)
    overlap_ms = rotation_overlap_ms(cfg)
    successor = prepare_rotation(
        cfg.data_path,
        now_ms=now_ms(),
        passphrase=passphrase,
        suite=Suite.parse(cfg.node.suite),
        overlap_ms=overlap_ms,
    )
    body = notice_pb2.Body(
        card_announcement=notice_pb2.CardAnnouncement(
            signed_card=card_pb2.SignedCard.FromString(successor)
        )
    )
    # The announcement is queued before the new card becomes current: a running node
    # takes up the new keys only then, so whatever it signs with them is queued behind
    # the announcement and every peer knows the keys by the time it arrives.
    new_card = verify_card(successor)
    rotated = leaves.key_rotated(
        now_ms(), operator_actor(), "", new_card.serial, new_card.current_signing_key.key_id
    )
    queued = await _announce(cfg, body, rotated)
    after = finish_rotation(cfg.data_path, passphrase)
    print(f"rotated keys: card serial {after.card.serial}, fingerprint {after.fingerprint}")
    print(
        f"  announced to {queued} peer(s); previous keys stay valid for {overlap_ms // DAY_MS} days"
    )
    return 0


async def cmd_keys_revoke(args) -> int:
    cfg = _cfg(args)
    keys = load_identity(cfg.data_path, _passphrase(cfg))
    try:
        kid = bytes.fromhex(args.key_id)
    except ValueError:
        raise CliError(
            f"key id {args.key_id!r}: expected hex digits, as `exchange-node card show` lists it",
            code="key_id_invalid",
        ) from None
    if kid not in {k.key_id for k in keys.card.signing_keys + keys.card.encryption_keys}:
        raise CliError(
            f"{args.key_id} is not a key on this node's card (see `exchange-node card show`)"
        )
    if kid == keys.local.signing_key.key_id:
        raise CliError(
            "that is the current signing key: run `exchange-node keys rotate` first, then revoke it"
        )
    signed = revoke_key(keys, kid, now_ms=now_ms(), reason=args.reason)
    body = notice_pb2.Body(
        revocation_announcement=notice_pb2.RevocationAnnouncement(
            signed_revocation=card_pb2.SignedRevocation.FromString(signed)
        )
    )
    queued = await _announce(cfg, body, leaves.key_revoked(now_ms(), operator_actor(), "", kid))
    print(f"revoked {kid.hex()}; announced to {queued} peer(s)")
    return 0


async def _announce(cfg: Config, body: notice_pb2.Body, leaf: AuditEvent) -> int:
    """Queue a card or revocation announcement to every peer with the leaf recording the
    change, in one transaction, through the node's own submit path (sealed with the
    keys current now; peers' revoked keys are applied). Returns how many were queued."""

    def record(tx, _items) -> None:
        tx.audit([leaf])

    async with _node(cfg) as node:
        submitted = await node.submit(body, None, actor=operator_actor(), also=record, label="keys")
    kind = body.WhichOneof("content")
    for sub in submitted:
        print(f"  queued {kind} for {sub.peer_id}: message {sub.message_id.hex()}")
    return len(submitted)


async def cmd_keys_encrypt(args) -> int:
    """Encrypt the private key files written in clear (keys made before
    ``[node] key_passphrase_env`` was set), under the passphrase that variable holds.
    Only while no ``serve`` runs on the data directory: it holds the keys as it read them."""
    from exchange_node.node import lock_data_dir

    cfg = _cfg(args)
    if not cfg.node.key_passphrase_env:
        raise CliError(
            f"{cfg.path}: set [node] key_passphrase_env to the name of the environment"
            " variable holding the passphrase, export that variable, then run this again",
            code="passphrase_not_configured",
        )
    passphrase = _passphrase(cfg)
    lock = lock_data_dir(cfg.data_path)
    try:
        if not unencrypted_key_files(cfg.data_path):
            print(f"every private key in {cfg.data_path / 'keys'} is already encrypted")
            return 0
        changed = encrypt_key_files(cfg.data_path, passphrase)
        load_identity(cfg.data_path, passphrase)  # they open with it
        store = await _store(cfg)
        try:
            await store.append_audit(
                [leaves.keys_encrypted(now_ms(), operator_actor(), len(changed))]
            )
        finally:
            await store.close()
    finally:
        lock.close()
    for path in changed:
        print(f"encrypted {path}")
    print(f"the node now needs {cfg.node.key_passphrase_env} set to start")
    return 0
