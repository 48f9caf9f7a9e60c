"""The operator's pages: overview, peers, dead letters, tokens and keys.

Each action is one store operation or service call with its audit leaf in the same
transaction, exactly the one the command line makes, but with the signed-in token's
name as actor.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from exchange_node.audit import leaves
from exchange_node.audit.leaf import LeafKind
from exchange_node.config import NOTICE_KINDS
from exchange_node.console import status
from exchange_node.console.app import (
    Refused,
    back,
    done_note,
    form,
    node_of,
    render,
    signed_in,
)
from exchange_node.console.words import error_words
from exchange_node.delivery.worker import DeliveryError
from exchange_node.errors import ConflictError, ExchangeError, NotFoundError
from exchange_node.identity import finish_rotation, prepare_rotation
from exchange_node.pb.exchange.v1 import card_pb2, notice_pb2
from exchange_node.protocol.cards import normalise_fingerprint, verify_card
from exchange_node.protocol.errors import OpenError
from exchange_node.protocol.keys import Suite
from exchange_node.services import dead_letters as dead
from exchange_node.services.catchup import action_done, operator_action, wanted_kinds
from exchange_node.store.records import TOKEN_NAME_RE, TOKEN_ROLES

PAGE_SIZE = 50


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 16:
        raise Refused(400, f"{name} must be a whole number")
    return int(raw)


# --- overview ----------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    node = node_of(request)
    states = status.peer_states(node)
    reasons = node.health.reasons()
    usage = status.disk(node)
    return render(
        request,
        "overview.html",
        ready=node.ready and not reasons,
        reasons=reasons,
        states=states,
        catchups=status.catchups(node),
        alerts=status.alerts(node, states),
        audit_size=node.audit.size,
        disk_free=usage.free,
        disk_total=usage.total,
        node_id=node.node_id,
        country=node.config.node.country,
        done=done_note(request),
    )


# --- peers -------------------------------------------------------------------------------


async def peers(request: web.Request) -> web.Response:
    node = node_of(request)
    return render(
        request,
        "peers.html",
        states=[s for s in status.peer_states(node) if s.record],
        kinds=NOTICE_KINDS,
        done=done_note(request),
    )


def _peer_state(request: web.Request) -> status.PeerState:
    peer_id = request.match_info["peer"]
    for s in status.peer_states(node_of(request)):
        if s.peer_id == peer_id and s.record is not None:
            return s
    raise Refused(404, f"{peer_id} is not a pinned peer of this node")


async def peer(request: web.Request) -> web.Response:
    node = node_of(request)
    state = _peer_state(request)
    return render(
        request,
        "peer.html",
        s=state,
        policy=node.policy(state.peer_id),
        revoked=node.keyring.revoked,
        done=done_note(request),
    )


async def _set_paused(request: web.Request, paused: bool) -> web.StreamResponse:
    node = node_of(request)
    state = _peer_state(request)
    now = node.now_ms()
    kind = LeafKind.PEER_PAUSED if paused else LeafKind.PEER_RESUMED
    leaf = leaves.peer_changed(now, kind, state.peer_id, actor=signed_in(request).actor)
    await node.store.set_paused(state.peer_id, paused, now, audit=[leaf])
    node.reload_peers()
    if not paused:
        node.outbox.wake(state.peer_id, reset_backoff=True)
    word = "paused" if paused else "resumed"
    raise back(request, f"/peers/{state.peer_id}", f"delivery to {state.peer_id} {word}")


async def peer_pause(request: web.Request) -> web.StreamResponse:
    return await _set_paused(request, True)


async def peer_resume(request: web.Request) -> web.StreamResponse:
    return await _set_paused(request, False)


async def catchup_pause(request: web.Request) -> web.StreamResponse:
    return await _catchup_action(request, "pause")


async def catchup_resume(request: web.Request) -> web.StreamResponse:
    return await _catchup_action(request, "resume")


async def catchup_restart(request: web.Request) -> web.StreamResponse:
    return await _catchup_action(request, "restart")


async def _catchup_action(request: web.Request, action: str) -> web.StreamResponse:
    """Pause, resume or restart a peer's catch-up, as `peer catchup` does, with its leaf
    in the same transaction; a refusal (none to pause, or it has finished) is audited
    and changes nothing."""
    node = node_of(request)
    state = _peer_state(request)
    peer, actor, now = state.peer_id, signed_in(request).actor, node.now_ms()
    kinds = wanted_kinds(node.policy(peer))

    def work(tx):
        return operator_action(tx, peer, action, me=node.node_id, kinds=kinds, actor=actor, at=now)

    try:
        row = await node.store.transaction(work, label=f"catchup.{action}")
    except (NotFoundError, ConflictError) as exc:
        await node.record_audit(
            leaves.request_refused(now, actor, f"console.catchup_{action}", exc.code)
        )
        raise Refused(exc.status, exc.message) from None
    node.services.catchup.wake()
    raise back(request, "/overview", action_done(peer, action, row))


async def peer_ping(request: web.Request) -> web.StreamResponse:
    """Fetch the peer's card over its transport and compare it with the pinned one; a
    peer that answers has its backoff ended, so a queue waiting for it moves at once."""
    node = node_of(request)
    state = _peer_state(request)
    assert state.card is not None
    try:
        live = verify_card(await node.client.fetch_card(state.peer_id))
    except DeliveryError as exc:
        outcome, note = "unreachable", f"{state.peer_id} did not answer: " + error_words(exc.detail)
    except OpenError:
        outcome, note = "differs", f"{state.peer_id} served a card that does not verify"
    else:
        same = live.card_bytes == state.card.card_bytes
        outcome = "matches" if same else "differs"
        note = f"{state.peer_id} answered; its card {'matches the pinned one' if same else f'is serial {live.serial}, not the pinned one'}"
        node.outbox.wake(state.peer_id, reset_backoff=True)
    await node.record_audit(
        leaves.peer_pinged(node.now_ms(), signed_in(request).actor, state.peer_id, outcome)
    )
    raise back(request, f"/peers/{state.peer_id}", note)


async def peer_pin(request: web.Request) -> web.StreamResponse:
    """Pin a new peer from its card file and the fingerprint read out by its operator.
    A wrong fingerprint is refused without saying what the right one is."""
    node = node_of(request)
    data = await request.post()
    upload = data.get("card")
    typed = data.get("fingerprint")
    if not hasattr(upload, "file") or not isinstance(typed, str) or not typed.strip():
        raise Refused(
            400, "choose the peer's card file and type the fingerprint its operator read to you"
        )
    raw = upload.file.read(64 * 1024 + 1)  # type: ignore[union-attr]
    try:
        card = verify_card(raw)
    except OpenError:
        raise Refused(
            422, "that file is not a valid node card (card.pb from `exchange-node card export`)"
        ) from None
    actor = signed_in(request).actor
    if card.fingerprint != normalise_fingerprint(typed):
        await node.record_audit(
            leaves.request_refused(node.now_ms(), actor, "console.peer_pin", "fingerprint_mismatch")
        )
        raise Refused(
            422,
            "the fingerprint you typed is not this card's; nothing was pinned. Ask the peer's "
            "operator to read it again, from `exchange-node card show` on their node",
        )
    if card.node_id == node.node_id:
        raise Refused(422, "that is this node's own card")
    existing = node.store.get_peer(card.node_id)
    if existing is not None:
        if existing.card == card.signed:
            raise back(
                request,
                f"/peers/{card.node_id}",
                f"{card.node_id} is pinned with this card already",
            )
        raise Refused(
            409,
            f"{card.node_id} is pinned with another card already; replacing a pinned card is "
            "done on the command line (`exchange-node peer add --replace`), after the phone call",
        )
    allow = [k for k in NOTICE_KINDS if data.get(f"allow_{k}") == "on"] or None
    now = node.now_ms()
    leaf = leaves.peer_changed(
        now, LeafKind.PEER_ADDED, card.node_id, actor=actor, serial=str(card.serial)
    )
    await node.store.upsert_peer(
        card.node_id, card.signed, card.fingerprint, now, allow, audit=[leaf]
    )
    node.reload_peers()
    raise back(
        request,
        f"/peers/{card.node_id}",
        f"pinned {card.node_id} ({card.country}) at {card.endpoint}",
    )


# --- dead letters --------------------------------------------------------------------------


async def dead_letters(request: web.Request) -> web.Response:
    node = node_of(request)
    peer_id = request.query.get("peer") or None
    include = request.query.get("all") == "1"
    after = _int(request, "after")
    rows = node.store.dead_letter_page(
        peer_id=peer_id, after_id=after, limit=PAGE_SIZE + 1, include_acknowledged=include
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(
        request,
        "dead_letters.html",
        rows=rows,
        peer=peer_id or "",
        include=include,
        next_after=rows[-1].row.id if more else None,
        peers=[p.node_id for p in node.store.list_peers()],
        done=done_note(request),
    )


def _outbox_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 16:
        raise Refused(404, "no such dead letter")
    return int(raw)


async def dead_letter_retry(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    row = await dead.retry_dead_letter(
        node.store, _outbox_id(request), signed_in(request).actor, node.now_ms()
    )
    node.outbox.wake(row.peer_id, reset_backoff=True)
    raise back(
        request, "/dead-letters", f"message {row.message_id.hex()} queued again for {row.peer_id}"
    )


async def dead_letter_acknowledge(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    row = await dead.acknowledge_dead_letter(
        node.store, _outbox_id(request), signed_in(request).actor, node.now_ms()
    )
    raise back(
        request,
        "/dead-letters",
        f"dead letter {row.message_id.hex()} to {row.peer_id} acknowledged",
    )


# --- tokens and keys -----------------------------------------------------------------------


def _tokens_page(request: web.Request, status_code: int = 200, **extra) -> web.Response:
    node = node_of(request)
    keys = node.keys
    context = {
        "tokens": node.store.list_tokens(include_revoked=request.query.get("all") == "1"),
        "roles": sorted(TOKEN_ROLES),
        "card": keys.card,
        "fingerprint": keys.fingerprint,
        "created": None,
        "error": "",
        "done": done_note(request),
    }
    context.update(extra)
    return render(request, "tokens.html", status=status_code, **context)


async def tokens(request: web.Request) -> web.Response:
    return _tokens_page(request)


async def token_create(request: web.Request) -> web.Response:
    """A new token; its secret is on this one answer (not stored, not redirected to)."""
    node = node_of(request)
    data = await form(request)
    name, role = data.get("name", "").strip(), data.get("role", "")
    if not TOKEN_NAME_RE.fullmatch(name):
        return _tokens_page(
            request,
            422,
            error="name: use 1-64 of A-Z a-z 0-9 . _ : @ / + = - (e.g. narita-border-system)",
        )
    if role not in TOKEN_ROLES:
        return _tokens_page(
            request, 422, error=f"role: choose one of {', '.join(sorted(TOKEN_ROLES))}"
        )
    secret = "xn_" + secrets.token_urlsafe(32)
    now = node.now_ms()
    actor = signed_in(request).actor
    expires_at = node.config.local_api.token_expiry(now)  # as `token create` without --expires
    try:
        record = await node.store.create_token(
            name,
            role,
            secret,
            now,
            expires_at=expires_at,
            audit=[leaves.token_created(now, name, role, expires_at, actor=actor)],
        )
    except ExchangeError as exc:
        return _tokens_page(request, exc.status, error=exc.message)
    return _tokens_page(request, 201, created=(record, secret))


async def token_revoke(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 16:
        raise Refused(404, "no such token")
    now = node.now_ms()
    actor = signed_in(request).actor
    record = await node.store.revoke_token(
        int(raw), now, audit=lambda revoked: [leaves.token_revoked(now, revoked.name, actor=actor)]
    )
    raise back(request, "/tokens", f"token {record.name} revoked; its sessions have ended")


async def keys_rotate(request: web.Request) -> web.StreamResponse:
    """``keys rotate`` from the console: new keys, the successor card announced to every
    peer (signed by the old key, queued before the new card becomes current, one
    ``key.rotated`` leaf with the token's name), then made current. Typing the node id
    confirms it."""
    from exchange_node.cli.keys import rotation_overlap_ms  # the command line's rule, shared

    node = node_of(request)
    if (await form(request)).get("confirm", "").strip() != node.node_id:
        raise Refused(422, f"type this node's id ({node.node_id}) to confirm the rotation")
    cfg = node.config
    passphrase = node.identity.passphrase
    successor = prepare_rotation(
        cfg.data_path, now_ms=node.now_ms(), passphrase=passphrase,
        suite=Suite.parse(cfg.node.suite), overlap_ms=rotation_overlap_ms(cfg),
    )  # fmt: skip
    card = verify_card(successor)
    leaf = leaves.key_rotated(
        node.now_ms(), signed_in(request).actor, "", card.serial, card.current_signing_key.key_id
    )
    body = notice_pb2.Body(
        card_announcement=notice_pb2.CardAnnouncement(
            signed_card=card_pb2.SignedCard.FromString(successor)
        )
    )
    queued = await node.submit(
        body, None, actor=signed_in(request).actor, also=lambda tx, _: tx.audit([leaf]),
        label="keys",
    )  # fmt: skip
    after = finish_rotation(cfg.data_path, passphrase)
    raise back(
        request,
        "/tokens",
        f"keys rotated: card serial {after.card.serial}, fingerprint {after.fingerprint}; "
        f"announced to {len(queued)} peer(s)",
    )
