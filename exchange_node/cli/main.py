"""The parser and the entry point."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from exchange_node.build_info import version_line
from exchange_node.cli.api_client import (
    DEFAULT_TOKEN_ENV,
    cmd_case_event,
    cmd_case_open,
    cmd_case_show,
    cmd_lookup,
)
from exchange_node.cli.audit import (
    cmd_audit_checkpoint,
    cmd_audit_export,
    cmd_audit_prove,
    cmd_audit_show,
    cmd_audit_verify,
    cmd_audit_verify_bundle,
    cmd_audit_verify_proof,
    cmd_proof_export,
    cmd_proof_verify,
)
from exchange_node.cli.common import (
    DEFAULT_CONFIG,
    CliError,
)
from exchange_node.cli.demo import (
    cmd_demo,
)
from exchange_node.cli.identity import (
    cmd_card_export,
    cmd_card_show,
    cmd_init,
)
from exchange_node.cli.keys import (
    cmd_keys_revoke,
    cmd_keys_rotate,
    cmd_keys_show,
)
from exchange_node.cli.notices import cmd_send
from exchange_node.cli.peers import (
    cmd_peer_add,
    cmd_peer_catchup,
    cmd_peer_list,
    cmd_peer_pause,
    cmd_peer_ping,
    cmd_peer_remove,
    cmd_peer_resume,
)
from exchange_node.cli.run import (
    cmd_serve,
    cmd_status,
)
from exchange_node.cli.store import cmd_store_migrate_to_postgresql
from exchange_node.cli.tokens import (
    cmd_token_create,
    cmd_token_list,
    cmd_token_revoke,
)
from exchange_node.config import NOTICE_KINDS, ConfigError
from exchange_node.errors import ExchangeError
from exchange_node.identity import (
    IdentityError,
)
from exchange_node.logs import configure as configure_logs
from exchange_node.store.records import TOKEN_ROLES


class _PrintVersion(argparse.Action):
    """``--version``: one unwrapped line (argparse's own action re-wraps it)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="exchange-node", description="Signed, encrypted notice exchange between authorities."
    )
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action=_PrintVersion, nargs=0, help="print what runs and exit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create this node's identity and config")
    s.add_argument("--node-id", required=True, help="e.g. JPN-ISA")
    s.add_argument("--country", required=True, help="ICAO Doc 9303 code, e.g. JPN")
    s.add_argument("--display-name", default="")
    s.add_argument(
        "--endpoint", required=True, help="URL peers use, e.g. https://jpn-isa.example:8443"
    )
    s.add_argument("--peer-listen", default="127.0.0.1:8443")
    s.add_argument("--local-listen", default="127.0.0.1:8080")
    s.add_argument("--data-dir", default="data")
    s.add_argument(
        "--suite",
        default="mlkem768-x25519",
        choices=["mlkem768-x25519", "x25519"],
        help="HPKE suite of this node's encryption key (default: the hybrid mlkem768-x25519)",
    )
    s.add_argument(
        "--plain-http", action="store_true", help="demo/testing only: no TLS between nodes"
    )
    s.set_defaults(func=cmd_init)

    card = sub.add_parser("card", help="this node's card").add_subparsers(
        dest="card_cmd", required=True
    )
    s = card.add_parser("show", help="print a card and its fingerprint")
    s.add_argument("file", nargs="?", help="a card file (default: this node's)")
    s.set_defaults(func=cmd_card_show)
    s = card.add_parser("export", help="write this node's card for peers")
    s.add_argument("--out", default="-")
    s.set_defaults(func=cmd_card_export)

    peer = sub.add_parser("peer", help="pinned peers").add_subparsers(
        dest="peer_cmd", required=True
    )
    s = peer.add_parser("add", help="pin a peer's card after comparing its fingerprint")
    s.add_argument("card")
    s.add_argument("--fingerprint", required=True)
    s.add_argument(
        "--allow", help=f"comma-separated notice kinds ({','.join(NOTICE_KINDS)}); default all"
    )
    s.add_argument(
        "--replace",
        action="store_true",
        help="replace the card pinned for that node id with this one (other keys); "
        "prints the old and new fingerprints",
    )
    s.set_defaults(func=cmd_peer_add)
    peer.add_parser("list").set_defaults(func=cmd_peer_list)
    for name, func, helptext in (
        ("remove", cmd_peer_remove, "unpin a peer"),
        ("pause", cmd_peer_pause, "stop delivering to a peer"),
        ("resume", cmd_peer_resume, "deliver to a paused peer again"),
        ("ping", cmd_peer_ping, "check a peer is reachable and its card matches"),
    ):
        s = peer.add_parser(name, help=helptext)
        s.add_argument("peer")
        if name == "remove":
            s.add_argument(
                "--force",
                action="store_true",
                help="even with queued messages (they become dead letters)",
            )
        s.set_defaults(func=func)
    s = peer.add_parser(
        "catchup",
        help="pause, resume or restart sending a peer the notices still in effect, "
        "or request them from it",
    )
    s.add_argument("peer")
    s.add_argument("action", choices=("pause", "resume", "restart", "request"))
    s.set_defaults(func=cmd_peer_catchup)

    keys = sub.add_parser("keys", help="key display, rotation and revocation").add_subparsers(
        dest="keys_cmd", required=True
    )
    keys.add_parser(
        "show", help="the card fingerprint and signing public keys, for auditors and courts"
    ).set_defaults(func=cmd_keys_show)
    keys.add_parser("rotate", help="new keys; announce the new card to all peers").set_defaults(
        func=cmd_keys_rotate
    )
    s = keys.add_parser("revoke", help="revoke one of this node's earlier keys")
    s.add_argument("key_id")
    s.add_argument("--reason", default="key compromised")
    s.set_defaults(func=cmd_keys_revoke)

    s = sub.add_parser("serve", help="run the node")
    s.add_argument("--ready-file", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_serve)

    st = sub.add_parser("store", help="the node's database").add_subparsers(
        dest="store_cmd", required=True
    )
    s = st.add_parser(
        "migrate-to-postgresql",
        help="copy this (stopped) node's SQLite database into a new PostgreSQL database",
    )
    s.add_argument("--url", required=True, help="postgresql://user@host:5432/db?sslmode=...")
    s.add_argument("--password-file", help="file holding the database password")
    s.add_argument("--password-env", help="environment variable holding it")
    s.set_defaults(func=cmd_store_migrate_to_postgresql)

    s = sub.add_parser("send", help="queue a notice from a JSON file")
    s.add_argument("file")
    s.add_argument("--to", action="append", help="recipient node id (repeatable)")
    s.add_argument("--all", action="store_true", help="every peer whose policy allows the notice")
    s.set_defaults(func=cmd_send)

    sub.add_parser("status", help="queues, dead letters, last contact per peer").set_defaults(
        func=cmd_status
    )

    tok = sub.add_parser("token", help="local API tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    s = tok.add_parser("create")
    s.add_argument("--role", required=True, choices=sorted(TOKEN_ROLES))
    s.add_argument("--name", required=True)
    s.set_defaults(func=cmd_token_create)
    s = tok.add_parser("list")
    s.add_argument("--all", action="store_true", help="include revoked tokens")
    s.set_defaults(func=cmd_token_list)
    s = tok.add_parser("revoke")
    s.add_argument("name")
    s.set_defaults(func=cmd_token_revoke)

    aud = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="audit_cmd", required=True
    )
    aud.add_parser("verify", help="recompute the tree and check every checkpoint").set_defaults(
        func=cmd_audit_verify
    )
    for name, func in (("show", cmd_audit_show), ("export", cmd_audit_export)):
        s = aud.add_parser(name)
        s.add_argument("--since")
        s.add_argument("--until")
        s.add_argument("--peer")
        s.add_argument("--kind")
        s.add_argument("--message-id")
        s.add_argument("--actor")
        s.add_argument("--limit", type=int)
        if name == "show":
            s.add_argument("--json", action="store_true", help="JSON lines for tools")
        else:
            s.add_argument("--out", required=True)
            s.add_argument(
                "--consistency-from",
                type=int,
                action="append",
                metavar="SIZE",
                help="also prove the checkpoint extends the tree of SIZE entries (repeatable)",
            )
        s.set_defaults(func=func)
    s = aud.add_parser("prove", help="inclusion proof of one entry with its checkpoint")
    s.add_argument("seq", type=int)
    s.add_argument(
        "--tree-size", type=int, help="against the checkpoint of this size (default: the latest)"
    )
    s.set_defaults(func=cmd_audit_prove)
    s = aud.add_parser("verify-proof", help="check an `audit prove` file offline")
    s.add_argument("file")
    s.add_argument(
        "--key",
        action="append",
        required=True,
        help="the node's Ed25519 public key (hex), obtained out of band; repeat for the"
        " keys before a rotation",
    )
    s.set_defaults(func=cmd_audit_verify_proof)
    s = aud.add_parser("verify-bundle", help="check an exported bundle offline")
    s.add_argument("file")
    s.add_argument(
        "--key",
        action="append",
        help="the node's Ed25519 public key (hex), obtained out of band; repeat for the"
        " keys before a rotation",
    )
    s.add_argument(
        "--prior",
        action="append",
        metavar="CHECKPOINT",
        help="a file with an earlier checkpoint of the log you hold; the bundle must prove"
        " it extends it (repeatable)",
    )
    s.set_defaults(func=cmd_audit_verify_bundle)
    aud.add_parser("checkpoint", help="sign a checkpoint now").set_defaults(
        func=cmd_audit_checkpoint
    )

    def api_client_options(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "--token", help="local API token (prefer --token-env: arguments show in `ps`)"
        )
        s.add_argument(
            "--token-env",
            default=DEFAULT_TOKEN_ENV,
            help=f"environment variable holding the token (default {DEFAULT_TOKEN_ENV})",
        )

    s = sub.add_parser("lookup", help="look up travel documents on the running node (audited)")
    s.add_argument("state", nargs="?", help="ICAO issuing state code, e.g. PHL")
    s.add_argument("number", nargs="?", help="document number")
    s.add_argument("--type", help="document type code, e.g. P")
    s.add_argument("--batch", metavar="FILE", help="one STATE NUMBER [TYPE] per line ('-': stdin)")
    api_client_options(s)
    s.set_defaults(func=cmd_lookup)

    case = sub.add_parser("case", help="repatriation cases on the running node").add_subparsers(
        dest="case_cmd", required=True
    )
    s = case.add_parser("open", help="open a case as the identifying state")
    s.add_argument(
        "--participant",
        action="append",
        required=True,
        metavar="NODE_ID:ROLE",
        help="e.g. PHL-DFA:ORIGIN_STATE or IOM-MNL:IOM (repeatable)",
    )
    s.add_argument("--note", default="")
    s.add_argument(
        "--personal-data", metavar="FILE", help="JSON object of personal fields ('-': stdin)"
    )
    api_client_options(s)
    s.set_defaults(func=cmd_case_open)
    s = case.add_parser("event", help="record one step of a case")
    s.add_argument("case_ref")
    s.add_argument("type", help="e.g. record_consent, accept_return, plan_travel")
    s.add_argument("--note", default="")
    api_client_options(s)
    s.set_defaults(func=cmd_case_event)
    s = case.add_parser("show", help="a case's state and timeline (audited)")
    s.add_argument("case_ref")
    api_client_options(s)
    s.set_defaults(func=cmd_case_show)

    proof = sub.add_parser("proof", help="proof of delivery for a court or auditor").add_subparsers(
        dest="proof_cmd", required=True
    )
    s = proof.add_parser(
        "export", help="signed receipt, recipient card and audit proof in one file"
    )
    s.add_argument("message_id")
    s.add_argument("--peer", help="the recipient, when the message went to several")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_proof_export)
    s = proof.add_parser(
        "verify",
        help="check a delivery proof offline",
        description="Exit status: 0 OK, the delivery is established against --fingerprint;"
        " 1 FAILED, a check failed (each problem is printed with its code); 3 NOT"
        " ESTABLISHED, the file is consistent but no --fingerprint was given.",
    )
    s.add_argument("file")
    s.add_argument("--fingerprint", help="the recipient's card fingerprint, obtained out of band")
    s.add_argument(
        "--audit-key",
        action="append",
        help="the sender's audit (signing) public key, hex, obtained out of band; repeat for"
        " the keys before a rotation",
    )
    s.set_defaults(func=cmd_proof_verify)

    s = sub.add_parser("demo", help="three nodes on loopback play a scenario")
    s.add_argument("--keep", action="store_true", help="keep the working directory")
    s.add_argument("--workdir", help="where to put the nodes (default: a temporary directory)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if crash_at := os.environ.get("EXCHANGE_NODE_CRASH_AT"):
        # Crash tests only (store/faults.py): kill this process at a named commit point.
        from exchange_node.store import faults

        faults.arm_from(crash_at)
    configure_logs(args.log_level)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except (CliError, ConfigError, IdentityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExchangeError as exc:
        print(
            f"error: {exc.code}: {exc.message}" + (f" (field {exc.field})" if exc.field else ""),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
