"""Sending a notice from a file: ``send``, through the local API's own path."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from google.protobuf import json_format

from exchange_node.cli.common import (
    CliError,
    _cfg,
    _node,
    operator_actor,
)
from exchange_node.delivery.outbox import RecipientNotAllowed, UnknownRecipient
from exchange_node.pb.exchange.v1 import notice_pb2
from exchange_node.services.documents import DOCUMENT_KINDS


def load_notice(path: str) -> notice_pb2.Body:
    """A Body from a JSON file in the protobuf JSON mapping; ids are filled in."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: cannot read JSON: {exc}") from None
    try:
        body = json_format.ParseDict(raw, notice_pb2.Body())
    except json_format.ParseError as exc:
        raise CliError(f"{path}: not a notice: {exc}") from None
    kind = body.WhichOneof("content")
    if kind is None:
        raise CliError(f"{path}: give one of statusNotice, fraudNotice, correction, caseEvent")
    inner = getattr(body, kind)
    for field in ("notice_id", "event_id"):
        if field in inner.DESCRIPTOR.fields_by_name and not getattr(inner, field):
            setattr(inner, field, secrets.token_bytes(16))
    return body


async def cmd_send(args) -> int:
    cfg = _cfg(args)
    body = load_notice(args.file)
    recipients = None if args.all else args.to
    if not recipients and not args.all:
        raise CliError("say where to send: --to PEER (repeatable) or --all")
    kind = body.WhichOneof("content")
    if kind not in DOCUMENT_KINDS:
        raise CliError(
            f"{args.file}: send takes travel document notices; use `exchange-node case` for {kind}"
        )
    # The local API's path: the same domain rules (issuing state, MRZ, supersession),
    # indexed and queued with its leaves in one transaction.
    async with _node(cfg) as node:
        try:
            entry, submitted = await node.services.notices.submit_body(
                body, recipients, actor=operator_actor()
            )
        except (UnknownRecipient, RecipientNotAllowed) as exc:
            raise CliError(str(exc)) from None
    print(f"notice {entry.notice.notice_id} ({entry.notice.kind})")
    if not submitted:
        print("  indexed; no pinned peer's policy allows this kind yet, so nothing was queued")
    for sub in submitted:
        print(f"  queued {kind} for {sub.peer_id}: message {sub.message_id.hex()}")
    return 0
