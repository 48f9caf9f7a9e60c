"""The parser and the entry point."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import traceback

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
from exchange_node.cli.backup import cmd_backup, cmd_restore
from exchange_node.cli.common import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    CliError,
)
from exchange_node.cli.dead_letters import (
    cmd_dead_letters_acknowledge,
    cmd_dead_letters_list,
    cmd_dead_letters_retry,
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
    cmd_keys_encrypt,
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
from exchange_node.cli.protection import (
    cmd_case_erase,
    cmd_hold_list,
    cmd_hold_place,
    cmd_hold_release,
    cmd_kek_destroy_expired,
    cmd_kek_list,
    cmd_kek_rotate,
    cmd_report,
    cmd_retention_run,
    cmd_review_keep,
    cmd_review_list,
    cmd_verify_report,
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
from exchange_node.store.records import PURGE_REASONS, TOKEN_ROLES

TIME_FORMAT = (
    "ISO 8601, a date (2026-11-01, midnight UTC) or a time (2026-11-01T12:00Z,"
    " 2026-11-01T21:00+09:00; UTC when no offset is given)"
)


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
        "--config",
        default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG,
        help=f"config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log lines written to stderr (default info)",
    )
    p.add_argument("--version", action=_PrintVersion, nargs=0, help="print what runs and exit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create this node's identity and config")
    s.add_argument("--node-id", required=True, help="e.g. JPN-ISA")
    s.add_argument("--country", required=True, help="ICAO Doc 9303 code, e.g. JPN")
    s.add_argument("--display-name", default="", help="shown to peers (default: the node id)")
    s.add_argument(
        "--endpoint", required=True, help="URL peers use, e.g. https://jpn-isa.example:8443"
    )
    s.add_argument(
        "--peer-listen",
        default="127.0.0.1:8443",
        metavar="HOST:PORT",
        help="where peers connect (default 127.0.0.1:8443; 0.0.0.0:8443 for all addresses)",
    )
    s.add_argument(
        "--local-listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="the local API for authority systems (default 127.0.0.1:8080; loopback)",
    )
    s.add_argument(
        "--data-dir",
        default="data",
        help="keys and database, relative to the config (default data)",
    )
    s.add_argument(
        "--suite",
        default="mlkem768-x25519",
        choices=["mlkem768-x25519", "x25519"],
        help="HPKE suite of this node's encryption key (default: the hybrid mlkem768-x25519)",
    )
    s.add_argument(
        "--plain-http", action="store_true", help="demo/testing only: no TLS between nodes"
    )
    s.add_argument(
        "--key-passphrase-env",
        metavar="VAR",
        default="",
        help="write the private keys encrypted under the passphrase in environment variable"
        " VAR (set it first; the node then needs it to start)",
    )
    s.set_defaults(func=cmd_init)

    card = sub.add_parser("card", help="this node's card").add_subparsers(
        dest="card_cmd", required=True
    )
    s = card.add_parser("show", help="print a card and its fingerprint, revoked keys marked")
    s.add_argument("file", nargs="?", help="a card file (default: this node's)")
    s.add_argument(
        "--json",
        action="store_true",
        help="one JSON document for tools (keys in docs/operations.md)",
    )
    s.set_defaults(func=cmd_card_show)
    s = card.add_parser("export", help="write this node's card for peers")
    s.add_argument(
        "--out", default="-", metavar="FILE", help="the card file to write ('-': standard output)"
    )
    s.set_defaults(func=cmd_card_export)

    peer = sub.add_parser("peer", help="pinned peers").add_subparsers(
        dest="peer_cmd", required=True
    )
    s = peer.add_parser("add", help="pin a peer's card after comparing its fingerprint")
    s.add_argument("card", help="the peer's card file, received through the official channel")
    s.add_argument(
        "--fingerprint",
        required=True,
        help="the fingerprint the peer's operator read to you by phone (XXXX-XXXX-...)",
    )
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
    s = peer.add_parser("list", help="pinned peers: card serial, fingerprint, policy, queue")
    s.add_argument(
        "--json",
        action="store_true",
        help="one JSON document for tools (keys in docs/operations.md)",
    )
    s.set_defaults(func=cmd_peer_list)
    for name, func, helptext in (
        ("remove", cmd_peer_remove, "unpin a peer"),
        ("pause", cmd_peer_pause, "stop delivering to a peer"),
        ("resume", cmd_peer_resume, "deliver to a paused peer again"),
        ("ping", cmd_peer_ping, "check a peer is reachable and its card matches"),
    ):
        s = peer.add_parser(name, help=helptext)
        s.add_argument("peer", help="the peer's node id, e.g. PHL-DFA")
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
    s.add_argument("peer", help="the peer's node id, e.g. PHL-DFA")
    s.add_argument(
        "action",
        choices=("pause", "resume", "restart", "request"),
        help="pause, resume or restart sending it; request: ask it to send ours again",
    )
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
    keys.add_parser(
        "encrypt",
        help="encrypt private key files written in clear under the passphrase in the"
        " variable [node] key_passphrase_env names (node stopped)",
    ).set_defaults(func=cmd_keys_encrypt)
    s = keys.add_parser("revoke", help="revoke one of this node's earlier keys")
    s.add_argument("key_id", help="hex key id, as `card show` lists it")
    s.add_argument(
        "--reason", default="key compromised", help="told to peers (default: key compromised)"
    )
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
    s.add_argument("file", help="a notice in the protobuf JSON form (config/examples/*.json)")
    s.add_argument("--to", action="append", help="recipient node id (repeatable)")
    s.add_argument("--all", action="store_true", help="every peer whose policy allows the notice")
    s.set_defaults(func=cmd_send)

    s = sub.add_parser(
        "status", help="queues, dead letters, last contact per peer, what expires soon"
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="one JSON document for tools (keys in docs/operations.md)",
    )
    s.set_defaults(func=cmd_status)

    s = sub.add_parser(
        "backup", help="copy config and data directory into a new folder, also while serving"
    )
    s.add_argument("--out", required=True, metavar="FOLDER", help="a new folder (0700)")
    s.add_argument(
        "--keks-out",
        metavar="FOLDER",
        help="also write the key-encryption keys (never in the backup) into this new folder,"
        " for another medium or a key escrow",
    )
    s.set_defaults(func=cmd_backup)
    s = sub.add_parser("restore", help="restore a backup into this config's empty data directory")
    s.add_argument("backup", metavar="FOLDER", help="a folder made by `exchange-node backup`")
    s.add_argument(
        "--keks",
        metavar="FOLDER",
        help="where the key-encryption key files are (`backup --keks-out`, or the escrow's copy)",
    )
    s.set_defaults(func=cmd_restore)

    dl = sub.add_parser(
        "dead-letters", help="messages a peer refused for good: list, retry, acknowledge"
    ).add_subparsers(dest="dead_letters_cmd", required=True)
    s = dl.add_parser("list", help="dead letters needing a person, oldest first")
    s.add_argument("--peer", help="only those to this peer (node id)")
    s.add_argument("--all", action="store_true", help="include acknowledged ones")
    s.add_argument("--json", action="store_true", help="one JSON document for tools")
    s.set_defaults(func=cmd_dead_letters_list)
    for name, func, helptext in (
        ("retry", cmd_dead_letters_retry, "queue dead letters again once the cause is fixed"),
        (
            "acknowledge",
            cmd_dead_letters_acknowledge,
            "keep dead letters as they are but stop counting them (clears the alert)",
        ),
    ):
        s = dl.add_parser(name, help=helptext + " (audited)")
        s.add_argument("ids", nargs="+", metavar="ID", help="ids from `dead-letters list`")
        s.set_defaults(func=func)

    tok = sub.add_parser("token", help="local API tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    s = tok.add_parser("create", help="make a token; its secret is printed once")
    s.add_argument("--role", required=True, choices=sorted(TOKEN_ROLES), help="what it may call")
    s.add_argument("--name", required=True, help="who uses it, e.g. narita-border (audited)")
    s.add_argument(
        "--expires",
        metavar="DURATION",
        help="lifetime: 90d, 12h, 30m, or never (default: [local_api] token_lifetime_days)",
    )
    s.set_defaults(func=cmd_token_create)
    s = tok.add_parser("list", help="tokens with role, creation and expiry")
    s.add_argument("--all", action="store_true", help="include revoked tokens")
    s.add_argument(
        "--json",
        action="store_true",
        help="one JSON document for tools (keys in docs/operations.md)",
    )
    s.set_defaults(func=cmd_token_list)
    s = tok.add_parser("revoke", help="stop a token working (within a second)")
    s.add_argument("name", help="the token's name, as `token list` shows it")
    s.set_defaults(func=cmd_token_revoke)

    aud = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="audit_cmd", required=True
    )
    aud.add_parser("verify", help="recompute the tree and check every checkpoint").set_defaults(
        func=cmd_audit_verify
    )
    for name, func in (("show", cmd_audit_show), ("export", cmd_audit_export)):
        s = aud.add_parser(
            name,
            help="list entries" if name == "show" else "a bundle of entries with proofs",
        )
        s.add_argument("--since", metavar="TIME", help=f"entries at or after TIME; {TIME_FORMAT}")
        s.add_argument("--until", metavar="TIME", help=f"entries before TIME; {TIME_FORMAT}")
        s.add_argument("--peer", help="entries about this peer (node id)")
        s.add_argument("--kind", help="entries of this kind, e.g. document.lookup")
        s.add_argument("--message-id", help="entries about this message (32 hex digits)")
        s.add_argument("--actor", help="entries by this actor (a token name, operator:USER)")
        s.add_argument("--limit", type=int, help="at most this many entries")
        if name == "show":
            s.add_argument("--json", action="store_true", help="JSON lines for tools")
        else:
            s.add_argument("--out", required=True, metavar="FILE", help="the bundle to write")
            s.add_argument(
                "--consistency-from",
                type=int,
                action="append",
                metavar="SIZE",
                help="also prove the checkpoint extends the tree of SIZE entries (repeatable)",
            )
        s.set_defaults(func=func)
    s = aud.add_parser("prove", help="inclusion proof of one entry with its checkpoint")
    s.add_argument("seq", type=int, help="the entry's number (seq), as `audit show` lists it")
    s.add_argument(
        "--tree-size", type=int, help="against the checkpoint of this size (default: the latest)"
    )
    s.set_defaults(func=cmd_audit_prove)
    s = aud.add_parser("verify-proof", help="check an `audit prove` file offline")
    s.add_argument("file", help="the output of `audit prove`")
    s.add_argument(
        "--key",
        action="append",
        required=True,
        help="the node's Ed25519 public key (hex), obtained out of band; repeat for the"
        " keys before a rotation",
    )
    s.set_defaults(func=cmd_audit_verify_proof)
    s = aud.add_parser("verify-bundle", help="check an exported bundle offline")
    s.add_argument("file", help="a bundle written by `audit export`")
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
    s.add_argument(
        "--witness",
        action="append",
        metavar="VKEY",
        help="a witness's cosignature/v1 verifier key (<name>+<id>+<key>, `keys show` on"
        " a witnessing node prints it); repeat for each witness of the policy",
    )
    s.add_argument(
        "--witness-threshold",
        type=int,
        metavar="K",
        help="how many of the --witness keys must have cosigned (default: all)",
    )
    s.add_argument(
        "--witnessed",
        metavar="CHECKPOINT",
        help="apply the witness policy to this cosigned checkpoint of the log instead of"
        " the bundle's own; the bundle must prove it extends it",
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
    s.add_argument("--json", action="store_true", help="the local API's answer as JSON")
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
    s.add_argument("--note", default="", help="a note for the case's timeline")
    s.add_argument(
        "--personal-data", metavar="FILE", help="JSON object of personal fields ('-': stdin)"
    )
    api_client_options(s)
    s.set_defaults(func=cmd_case_open)
    s = case.add_parser("event", help="record one step of a case")
    s.add_argument("case_ref", help="e.g. JPN-2026-K7QW2M4D")
    s.add_argument("type", help="e.g. record_consent, accept_return, plan_travel")
    s.add_argument("--note", default="", help="a note for the case's timeline")
    api_client_options(s)
    s.set_defaults(func=cmd_case_event)
    s = case.add_parser("show", help="a case's state and timeline (audited, with a purpose)")
    s.add_argument("case_ref", help="e.g. JPN-2026-K7QW2M4D")
    s.add_argument("--json", action="store_true", help="the local API's answer as JSON")
    s.add_argument(
        "--purpose",
        required=True,
        help="why you read it: one of [data_protection] purposes (e.g. case_management); "
        "recorded in the audit entry",
    )
    api_client_options(s)
    s.set_defaults(func=cmd_case_show)
    s = case.add_parser(
        "erase", help="destroy a case's personal data and notes (crypto-shredding, audited)"
    )
    s.add_argument("case_ref", help="e.g. JPN-2026-K7QW2M4D")
    s.add_argument(
        "--reason",
        required=True,
        choices=PURGE_REASONS,
        help="why: a retention decision, the subject's request, withdrawn by the source, "
        "or replaced by a rectification",
    )
    api_client_options(s)
    s.set_defaults(func=cmd_case_erase)

    data = sub.add_parser(
        "data", help="data protection: retention, legal holds, key-encryption keys"
    ).add_subparsers(dest="data_cmd", required=True)
    data.add_parser(
        "retention", help="run the retention schedule once now (serve runs it by itself)"
    ).set_defaults(func=cmd_retention_run)
    hold = data.add_parser("hold", help="legal holds: nothing held is purged")
    hold = hold.add_subparsers(dest="hold_cmd", required=True)
    for name, helptext, func in (
        ("place", "hold a case or a document (audited)", cmd_hold_place),
        ("release", "release a hold (audited)", cmd_hold_release),
    ):
        s = hold.add_parser(name, help=helptext)
        target = s.add_mutually_exclusive_group(required=True)
        target.add_argument("--case", metavar="CASE_REF", help="a case reference")
        target.add_argument(
            "--document",
            nargs=2,
            metavar=("STATE", "NUMBER"),
            help="a travel document: issuing state and number, e.g. PHL P1234567A",
        )
        if name == "place":
            s.add_argument("--reason", required=True, help="why, e.g. the court order's number")
        s.set_defaults(func=func)
    hold.add_parser("list", help="holds in force").set_defaults(func=cmd_hold_list)
    review = data.add_parser("review", help="periodic review: keep (with a reason) or purge")
    review = review.add_subparsers(dest="review_cmd", required=True)
    review.add_parser("list", help="records due for review").set_defaults(func=cmd_review_list)
    s = review.add_parser("keep", help="keep a record at its review (audited)")
    s.add_argument("record", help="case:<ref> or notice:<id>, as `data review list` shows")
    s.add_argument("--reason", required=True, help="why it is still needed")
    s.set_defaults(func=cmd_review_keep)
    s = data.add_parser(
        "report", help="signed subject access report on a case or a document (audited)"
    )
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--case", metavar="CASE_REF", help="the report is about this case")
    target.add_argument(
        "--document",
        nargs=2,
        metavar=("STATE", "NUMBER"),
        help="the report is about this travel document, e.g. PHL P1234567A",
    )
    s.add_argument("--purpose", required=True, help="e.g. subject_access or oversight")
    s.add_argument("--out", required=True, help="the signed report (JSON)")
    s.add_argument("--text", help="also write the human-readable document here")
    s.add_argument(
        "--refuse",
        nargs=2,
        metavar=("JURISDICTION", "BASIS"),
        help="refuse the request under that state's law (recorded), e.g. JPN 'APPI Art. 33(2)'",
    )
    s.set_defaults(func=cmd_report)
    s = data.add_parser("verify-report", help="check a subject access report offline")
    s.add_argument("file", help="the signed report (JSON) `data report` wrote")
    s.add_argument("--key", action="append", help="the node's signing key, hex (`keys show`)")
    s.add_argument("--text", help="the text document, checked against the signed report")
    s.set_defaults(func=cmd_verify_report)
    kek = data.add_parser("kek", help="key-encryption keys of the per-record data keys")
    kek = kek.add_subparsers(dest="kek_cmd", required=True)
    kek.add_parser("list", help="versions, their state and data keys").set_defaults(
        func=cmd_kek_list
    )
    kek.add_parser(
        "rotate", help="new version; re-wrap every data key (ciphertext untouched)"
    ).set_defaults(func=cmd_kek_rotate)
    kek.add_parser(
        "destroy-expired", help="delete versions retired longer ago than the backup horizon"
    ).set_defaults(func=cmd_kek_destroy_expired)

    proof = sub.add_parser("proof", help="proof of delivery for a court or auditor").add_subparsers(
        dest="proof_cmd", required=True
    )
    s = proof.add_parser(
        "export", help="signed receipt, recipient card and audit proof in one file"
    )
    s.add_argument("message_id", help="32 hex digits, as `send` or `status` prints it")
    s.add_argument("--peer", help="the recipient, when the message went to several")
    s.add_argument("--out", required=True, metavar="FILE", help="the proof file to write")
    s.set_defaults(func=cmd_proof_export)
    s = proof.add_parser(
        "verify",
        help="check a delivery proof offline",
        description="Exit status: 0 OK, the delivery is established against --fingerprint;"
        " 1 FAILED, a check failed (each problem is printed with its code); 3 NOT"
        " ESTABLISHED, the file is consistent but no --fingerprint was given.",
    )
    s.add_argument("file", help="a proof written by `proof export`")
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
        # Flushed here, not at exit, so that a reader gone away is handled below.
        sys.stdout.flush()
        return int(result or 0)
    except CliError as exc:
        print(f"error: {exc.code + ': ' if exc.code else ''}{exc}", file=sys.stderr)
        return 2
    except (ConfigError, IdentityError) as exc:
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
    except BrokenPipeError:
        return _reader_went_away()
    except Exception as exc:
        # A defect, not the operator's mistake: still one line, the traceback on demand.
        if args.log_level == "debug":
            traceback.print_exc()
        print(
            f"error: internal_error: {type(exc).__name__}: {exc} (a defect: please report it"
            " with the output of the same command run with --log-level debug)",
            file=sys.stderr,
        )
        return 70


def _reader_went_away() -> int:
    """The reader of standard output closed it (``audit show | head``): that is how it
    says it has enough, so no message. Point stdout at /dev/null so the interpreter's
    final flush does not fail again, and exit as a process killed by SIGPIPE does."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
