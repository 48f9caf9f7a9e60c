"""Dead letters: ``dead-letters list``, ``retry``, ``acknowledge``."""

from __future__ import annotations

from exchange_node.cli.common import (
    CliError,
    _cfg,
    _iso,
    _store,
    now_ms,
    operator_actor,
    print_json,
)
from exchange_node.services.dead_letters import acknowledge_dead_letter, retry_dead_letter


def dead_letter_json(row, acknowledged: bool) -> dict:
    """One dead letter in ``--json`` output (keys are stable)."""
    return {
        "id": row.id,
        "peer": row.peer_id,
        "message_id": row.message_id.hex(),
        "reason": row.reason,
        "queued_at": row.created_at,
        "attempts": row.attempts,
        "acknowledged": acknowledged,
    }


async def cmd_dead_letters_list(args) -> int:
    cfg = _cfg(args)
    store = await _store(cfg)
    try:
        rows = store.dead_letters(args.peer, acknowledged=args.all)
        open_ids = {r.id for r in store.dead_letters(args.peer)} if args.all else None
    finally:
        await store.close()

    def acked(row) -> bool:
        return open_ids is not None and row.id not in open_ids

    if args.json:
        print_json({"dead_letters": [dead_letter_json(r, acked(r)) for r in rows]})
        return 0
    print(f"{'ID':>6} {'PEER':<14} {'MESSAGE':<32} {'QUEUED':<24} REASON")
    for r in rows:
        note = " (acknowledged)" if acked(r) else ""
        print(
            f"{r.id:>6} {r.peer_id:<14} {r.message_id.hex():<32} {_iso(r.created_at):<24} "
            f"{r.reason or '-'}{note}"
        )
    return 0


async def cmd_dead_letters_retry(args) -> int:
    return await _each(args, retry_dead_letter, "queued again for")


async def cmd_dead_letters_acknowledge(args) -> int:
    return await _each(args, acknowledge_dead_letter, "acknowledged, to")


async def _each(args, operation, done: str) -> int:
    """Apply ``operation`` to each id given, in order; the first refusal stops (what
    was done before it stays done and is audited)."""
    ids = [_outbox_id(v) for v in args.ids]
    cfg = _cfg(args)
    store = await _store(cfg)
    actor = operator_actor()
    try:
        for outbox_id in ids:
            row = await operation(store, outbox_id, actor, now_ms())
            print(f"dead letter {row.id} {done} {row.peer_id} (message {row.message_id.hex()})")
    finally:
        await store.close()
    return 0


def _outbox_id(value: str) -> int:
    text = value.removeprefix("#")
    if not text.isdigit():
        raise CliError(
            f"dead letter id {value!r}: expected the number `dead-letters list` shows",
            code="dead_letter_id_invalid",
        )
    return int(text)
