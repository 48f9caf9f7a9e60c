"""Pinned peers: ``peer add/list/remove/pause/resume/ping``."""

from __future__ import annotations

import time
from collections.abc import Callable

from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.cli.common import (
    CliError,
    _age,
    _cfg,
    _passphrase,
    _store,
    now_ms,
    operator_actor,
    print_json,
)
from exchange_node.cli.identity import (
    _read_card,
)
from exchange_node.config import NOTICE_KINDS
from exchange_node.errors import ExchangeError
from exchange_node.identity import (
    load_identity,
)
from exchange_node.protocol.cards import normalise_fingerprint, verify_card


async def cmd_peer_add(args) -> int:
    cfg = _cfg(args)
    card = _read_card(args.card)
    expected = normalise_fingerprint(args.fingerprint)
    if card.fingerprint != expected:
        raise CliError(
            f"fingerprint mismatch: the card's is {card.fingerprint}, you were given {expected}; "
            "nothing was pinned. Ask the peer's operator to read it again."
        )
    if card.node_id == cfg.node.id:
        raise CliError("that is this node's own card")
    allow = args.allow.split(",") if args.allow else None
    for kind in allow or []:
        if kind not in NOTICE_KINDS:
            raise CliError(
                f"--allow: unknown notice kind {kind!r}; expected some of {', '.join(NOTICE_KINDS)}"
            )
    store = await _store(cfg)
    try:
        existing = store.get_peer(card.node_id)
        replaced = None
        if existing is not None and existing.card != card.signed:
            # Another card for a pinned node: other keys, whatever the serial. Pinning
            # it silently would hand the node id to whoever holds those keys.
            old = verify_card(existing.card)
            if old.serial > card.serial:
                raise CliError(
                    f"{card.node_id} is already pinned with a newer card (serial {old.serial})"
                )
            if not args.replace:
                raise CliError(
                    f"{card.node_id} is already pinned with another card: pinned fingerprint "
                    f"{old.fingerprint} (serial {old.serial}), this card's {card.fingerprint} "
                    f"(serial {card.serial}); nothing was changed. Confirm the new fingerprint "
                    "with the peer's operator, then add it again with --replace."
                )
            replaced = old
        now = now_ms()
        attrs = {"serial": str(card.serial)}
        if replaced is not None:
            attrs["replaced_fingerprint"] = replaced.fingerprint
        leaf = leaves.peer_changed(
            now, LeafKind.PEER_ADDED, card.node_id, operator_actor(), **attrs
        )
        await store.upsert_peer(
            card.node_id, card.signed, card.fingerprint, now, allow, audit=[leaf]
        )
    finally:
        await store.close()
    if replaced is not None:
        print(
            f"replaced the pinned card of {card.node_id}: fingerprint {replaced.fingerprint} "
            f"(serial {replaced.serial}) -> {card.fingerprint} (serial {card.serial})"
        )
    print(
        f"pinned {card.node_id} ({card.country}) at {card.endpoint}; fingerprint {card.fingerprint}"
    )
    if allow is not None:
        print(f"  allowed notice kinds: {', '.join(allow)}")
    return 0


async def cmd_peer_list(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        peers = store.list_peers()
        stats = {q.peer_id: q for q in store.queue_stats()}
    finally:
        await store.close()
    rows = [_peer_json(p, verify_card(p.card), stats.get(p.node_id), cfg) for p in peers]
    if args.json:
        print_json({"peers": rows})
        return 0
    if not rows:
        print("no peers pinned")
        return 0
    now = now_ms()
    print(
        f"{'PEER':<14} {'COUNTRY':<7} {'STATE':<7} {'QUEUED':>6} {'DEAD':>5} {'LAST CONTACT':<14} ENDPOINT"
    )
    for r in rows:
        print(
            f"{r['node_id']:<14} {r['country']:<7} {'paused' if r['paused'] else 'active':<7} "
            f"{r['queued']:>6} {r['dead']:>5} {_age(r['last_contact_at'], now):<14} {r['endpoint']}"
        )
        print(f"{'':<14} card serial {r['serial']}, fingerprint {r['fingerprint']}")
        print(f"{'':<14} allows: {', '.join(r['policy'])}")
    return 0


def _peer_json(p, card, q, cfg) -> dict:
    """One pinned peer in ``peer list`` (``--json`` keys are stable). ``policy``: the
    kinds allowed with it, the stored policy or else the config's."""
    return {
        "node_id": p.node_id,
        "country": card.country,
        "endpoint": card.endpoint,
        "fingerprint": p.fingerprint,
        "serial": card.serial,
        "paused": p.paused,
        "policy": list(p.policy or cfg.policy_for(p.node_id)),
        "queued": q.depth if q else 0,
        "dead": q.dead if q else 0,
        "last_contact_at": p.last_contact_at,
        "last_error": p.last_error,
    }


async def _peer_simple(args, action: Callable, kind: str, done: str) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        if store.get_peer(args.peer) is None:
            raise CliError(f"{args.peer} is not a pinned peer (see `exchange-node peer list`)")
        now = now_ms()
        result = await action(
            store, now, [leaves.peer_changed(now, kind, args.peer, operator_actor())]
        )
    finally:
        await store.close()
    print(done.format(peer=args.peer, result=result))
    return 0


async def cmd_peer_remove(args) -> int:
    return await _peer_simple(
        args,
        lambda s, now, audit: s.remove_peer(args.peer, force=args.force, audit=audit),
        LeafKind.PEER_REMOVED,
        "removed {peer}; {result} queued message(s) became dead letters",
    )


async def cmd_peer_pause(args) -> int:
    return await _peer_simple(
        args,
        lambda s, now, audit: s.set_paused(args.peer, True, now, audit=audit),
        LeafKind.PEER_PAUSED,
        "paused delivery to {peer}",
    )


async def cmd_peer_resume(args) -> int:
    return await _peer_simple(
        args,
        lambda s, now, audit: s.set_paused(args.peer, False, now, audit=audit),
        LeafKind.PEER_RESUMED,
        "resumed delivery to {peer}",
    )


async def cmd_peer_ping(args) -> int:
    """Fetch the peer's card over mutual TLS and compare it with the pinned one."""
    import aiohttp

    from exchange_node.tls import client_context

    cfg = _cfg(args)
    keys = load_identity(cfg.data_path, _passphrase(cfg))
    store = await _store(cfg)
    try:
        record = store.get_peer(args.peer)
    finally:
        await store.close()
    if record is None:
        raise CliError(f"{args.peer} is not a pinned peer")
    card = verify_card(record.card)
    ssl = None
    if card.endpoint.startswith("https://"):
        ssl = client_context(
            keys.tls_cert_der, keys.tls_key_path, card.tls_certificate, _passphrase(cfg)
        )
    elif not cfg.peer_api.allow_plain_http:
        raise CliError(f"{args.peer}'s endpoint is plain http and allow_plain_http is false")
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(card.endpoint.rstrip("/") + "/exchange/v1/card", ssl=ssl) as resp,
        ):
            data = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CliError(
            f"{args.peer} unreachable at {card.endpoint}: {type(exc).__name__}: {exc}"
        ) from None
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise CliError(f"{args.peer} answered HTTP {status}")
    live = verify_card(data)
    same = live.card_bytes == card.card_bytes
    print(f"{args.peer} reachable over {'mutual TLS' if ssl else 'PLAIN HTTP'} in {elapsed:.1f} ms")
    print(
        f"  its card: serial {live.serial}, fingerprint {live.fingerprint} ({'matches the pinned card' if same else 'DIFFERS from the pinned card'})"
    )
    return 0 if same or live.serial > card.serial else 1


async def cmd_peer_catchup(args) -> int:
    """Pause, resume or restart a peer's catch-up (``services/catchup.py``), audited."""
    from exchange_node.services.catchup import action_done, operator_action, wanted_kinds

    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        record = store.get_peer(args.peer)
        if record is None:
            raise CliError(f"{args.peer} is not a pinned peer (see `exchange-node peer list`)")
        if args.action == "request":
            await store.close()
            return await _request_catchup(cfg, args.peer)
        now = now_ms()
        action = args.action
        kinds = wanted_kinds(record.policy or cfg.policy_for(args.peer))

        def work(tx):
            return operator_action(
                tx, args.peer, action, me=cfg.node.id, kinds=kinds, actor=operator_actor(), at=now
            )

        try:
            row = await store.transaction(work, label=f"catchup.{action}")
        except ExchangeError as exc:
            raise CliError(exc.message) from None
    finally:
        await store.close()
    print(action_done(args.peer, action, row))
    return 0


async def _request_catchup(cfg, peer: str) -> int:
    """Ask ``peer`` to send us again its notices in effect: a ``catch_up_request``
    queued like any message (the running node delivers it), with a ``peer.catchup``
    leaf. Only for peers known to support it (docs/protocol.md 16.9)."""
    import secrets

    from exchange_node.cli.common import _node
    from exchange_node.pb.exchange.v1 import notice_pb2

    body = notice_pb2.Body(
        catch_up_request=notice_pb2.CatchUpRequest(request_id=secrets.token_bytes(16))
    )
    async with _node(cfg) as node:
        now = node.now_ms()
        leaf = leaves.catchup(now, peer, "requested", actor=operator_actor())
        [sub] = await node.submit(
            body, [peer], actor=operator_actor(), also=lambda tx, _: tx.audit([leaf]),
            label="catchup.request",
        )  # fmt: skip
    print(f"catch-up requested from {peer}: message {sub.message_id.hex()} queued")
    return 0
