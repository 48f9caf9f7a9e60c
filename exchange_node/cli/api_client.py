"""Commands that go through the running node's local API: ``lookup``, ``case ...``."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from exchange_node.cli.common import (
    CliError,
    _cfg,
    _iso,
    print_json,
)
from exchange_node.config import Config

DEFAULT_TOKEN_ENV = "EXCHANGE_NODE_TOKEN"
API_TIMEOUT_SECONDS = 30
BATCH_CHUNK = 1000  # the API's limit per lookup request


def _api_base(cfg: Config) -> str:
    """The running node's local API, from ``[local_api] listen`` (a wildcard address is
    reached on loopback)."""
    from exchange_node.config import parse_listen

    host, port = parse_listen(cfg.local_api.listen)
    if port == 0:
        raise CliError(
            f"{cfg.path}: [local_api] listen: port 0 is chosen at start-up and cannot be "
            "reached from here; set a fixed port"
        )
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    scheme = "https" if cfg.local_api.tls_cert_file else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _api_tls(cfg: Config):
    """With TLS on the local API, trust exactly the certificate the config names."""
    from exchange_node.tls import local_api_client_context

    if not cfg.local_api.tls_cert_file:
        return None
    return local_api_client_context(cfg.relative_path(cfg.local_api.tls_cert_file))


def _api_token(args) -> str:
    if args.token:
        return args.token
    value = os.environ.get(args.token_env, "").strip()
    if not value:
        raise CliError(
            f"no local API token: set {args.token_env} (or pass --token); an operator creates "
            "one with `exchange-node token create`"
        )
    return value


class ApiProblem(CliError):
    """A problem-details answer from the local API: ``code: detail (field F)``."""

    def __init__(self, code: str, detail: str, field: str | None) -> None:
        super().__init__(detail + (f" (field {field})" if field else ""), code=code)
        self.detail = detail
        self.field = field


def _api_call(args, method: str, path: str, body: object | None = None) -> dict:
    """One request to the running node's local API; a problem answer raises
    :class:`ApiProblem`, anything else that goes wrong a :class:`CliError`."""
    import urllib.error
    import urllib.request

    cfg = _cfg(args)
    base = _api_base(cfg)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {_api_token(args)}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(
            request, timeout=API_TIMEOUT_SECONDS, context=_api_tls(cfg)
        ) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            code, detail = problem["code"], problem["detail"]
            field = problem.get("field")
        except (ValueError, KeyError, TypeError):
            raise CliError(f"the node answered HTTP {exc.code} {exc.reason}") from None
        raise ApiProblem(code, detail, field) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the node's local API at {base} ({reason}); is `exchange-node serve` "
            "running with this config?"
        ) from None


def _doc_label(answer: dict) -> str:
    doc_type = answer.get("document_type") or ""
    return f"{answer['issuing_state']} {answer['document_number']}" + (
        f" (type {doc_type})" if doc_type else ""
    )


def _record_summary(record: dict) -> str:
    parts = [record["status"] or "no status in effect"]
    if record["fraud"]:
        parts.append("fraud: " + ", ".join(record["fraud"]))
    parts.append("sources: " + ", ".join(record["sources"]))
    return "; ".join(parts)


def _print_answer(answer: dict) -> None:
    if not answer["known"]:
        print(f"{_doc_label(answer)}: not known to this node")
        return
    for record in answer["records"]:
        doc = record["document"]
        label = (
            f"{doc['issuing_state']} {doc['document_number']} (type {doc['document_type'] or '-'})"
        )
        print(f"{label}: {_record_summary(record)}")
        for h in record["history"]:
            n = h["notice"]
            state = (
                "withdrawn"
                if h["withdrawn"]
                else f"superseded by {h['superseded_by'][:12]}"
                if h["superseded_by"]
                else "in effect"
                if h["in_effect"]
                else "not in effect"
            )
            place = f" at {n['detection']['place']}" if n.get("detection") else ""
            print(
                f"  {_iso(n['issued_at_ms'])}  {n['kind']:<22} from {n['sender_node']}{place}"
                f"  notice {n['notice_id'][:12]}  {state}"
            )


def _batch_queries(path: str) -> list[tuple[int, dict]]:
    """``(line number, query)`` for each ``STATE NUMBER [TYPE]`` line; blank lines and
    ``#`` comments are skipped."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--batch: cannot read {path}: {exc}") from None
    queries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) not in (2, 3):
            raise CliError(f"{path}:{lineno}: expected STATE NUMBER [TYPE], got {line.strip()!r}")
        query = {"issuing_state": words[0], "document_number": words[1]}
        if len(words) == 3:
            query["document_type"] = words[2]
        queries.append((lineno, query))
    if not queries:
        raise CliError(f"{path}: no documents to look up (one STATE NUMBER [TYPE] per line)")
    return queries


def cmd_lookup(args) -> int:
    from urllib.parse import quote

    if args.batch:
        if args.state or args.number or args.type:
            raise CliError("--batch: give either a file or STATE NUMBER [--type T], not both")
        queries = _batch_queries(args.batch)
        known = 0
        results: list[dict] = []
        for start in range(0, len(queries), BATCH_CHUNK):
            chunk = queries[start : start + BATCH_CHUNK]
            documents = [query for _, query in chunk]
            try:
                page = _api_call(args, "POST", "/api/v1/documents/lookup", {"documents": documents})
            except ApiProblem as exc:
                # The API names the item by its index in the request; name the file's line.
                m = re.fullmatch(r"documents\[(\d+)\]\.?(.*)", exc.field or "")
                if m is None or int(m.group(1)) >= len(chunk):
                    raise
                where = f"{args.batch}:{chunk[int(m.group(1))][0]}"
                field = f", field {m.group(2)}" if m.group(2) else ""
                raise CliError(f"{exc.code}: {exc.detail} ({where}{field})") from None
            results += page["results"]
            for answer in [] if args.json else page["results"]:
                if answer["known"]:
                    known += 1
                    for record in answer["records"]:
                        doc = record["document"]
                        print(
                            f"{doc['issuing_state']} {doc['document_number']} "
                            f"{doc['document_type'] or '-'}: {_record_summary(record)}"
                        )
                else:
                    print(f"{_doc_label(answer)}: not known")
        if args.json:
            print_json({"results": results})
            known = sum(1 for answer in results if answer["known"])
        print(f"{len(queries)} looked up, {known} known", file=sys.stderr)
        return 0
    if not (args.state and args.number):
        raise CliError("give STATE NUMBER (e.g. PHL P1234567A) or --batch FILE")
    path = f"/api/v1/documents/{quote(args.state, safe='')}/{quote(args.number, safe='')}"
    if args.type:
        path += f"?type={quote(args.type, safe='')}"
    answer = _api_call(args, "GET", path)
    if args.json:
        print_json(answer)
    else:
        _print_answer(answer)
    return 0


def _sent_to(messages: list[dict]) -> str:
    if not messages:
        return "nothing to send"
    return "sent to " + ", ".join(f"{m['recipient']} (message {m['message_id']})" for m in messages)


def cmd_case_open(args) -> int:
    participants = []
    for item in args.participant:
        node_id, sep, role = item.partition(":")
        if not sep or not node_id or not role:
            raise CliError(
                f"--participant: expected NODE_ID:ROLE (e.g. PHL-DFA:ORIGIN_STATE), got {item!r}"
            )
        participants.append({"node_id": node_id, "role": role.upper()})
    body: dict = {"participants": participants, "note": args.note}
    if args.personal_data:
        # From a file (or stdin), never from the command line: arguments end up in shell
        # history and in every user's process list.
        try:
            raw = (
                sys.stdin.read()
                if args.personal_data == "-"
                else Path(args.personal_data).read_text(encoding="utf-8")
            )
            body["personal_data"] = json.loads(raw)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CliError(
                f"--personal-data: cannot read a JSON object from {args.personal_data}: {exc}"
            ) from None
    answer = _api_call(args, "POST", "/api/v1/cases", body)
    print(f"opened case {answer['case_ref']} ({answer['status']}); {_sent_to(answer['messages'])}")
    return 0


def cmd_case_event(args) -> int:
    from urllib.parse import quote

    answer = _api_call(
        args,
        "POST",
        f"/api/v1/cases/{quote(args.case_ref, safe='')}/events",
        {"type": args.type, "note": args.note},
    )
    print(
        f"case {answer['case_ref']} step {answer['sequence']}: now {answer['status']}; "
        f"{_sent_to(answer['messages'])}"
    )
    return 0


def cmd_case_show(args) -> int:
    from urllib.parse import quote

    case = _api_call(
        args,
        "GET",
        f"/api/v1/cases/{quote(args.case_ref, safe='')}?purpose={quote(args.purpose, safe='')}",
    )
    if args.json:
        print_json(case)
        return 0
    print(
        f"case {case['case_ref']}: {case['status']}, consent "
        f"{'recorded' if case['consent'] else 'not recorded'}; this node is {case['my_role']}"
    )
    print(f"opened by {case['opened_by']} at {_iso(case['opened_at_ms'])}")
    print(
        "participants: " + ", ".join(f"{p['node_id']} ({p['role']})" for p in case["participants"])
    )
    purged = case.get("purged")
    if purged:
        print(
            f"personal data and notes ERASED ({purged['reason']}, approved by "
            f"{purged['approver']}, {_iso(purged['purged_at_ms'])})"
        )
        for c in purged.get("confirmations", []):
            confirmed = c["state"] in ("accepted", "duplicate")
            print(
                f"  purge notice to {c['recipient']}: {c['state']}"
                + (" (confirmed)" if confirmed else " (not confirmed yet)")
            )
    personal = case.get("personal_data")
    if personal:
        print("personal data: " + ", ".join(f"{k}={v}" for k, v in personal.items() if v))
    print("next steps allowed: " + (", ".join(case["allowed_events"]) or "none"))
    print("timeline:")
    for e in case["timeline"]:
        who = e["actor"] + (f" ({e['performed_by']})" if e["performed_by"] else "")
        print(
            f"  {e['sequence']:>3}  {_iso(e['at_ms'])}  {e['type']:<28} by {who}"
            f"  {e['from_status']} -> {e['to_status']}"
        )
        if e["note"]:
            print(f"       note: {e['note']}")
        for d in e["deliveries"]:
            print(f"       {d['recipient']}: {d['state']}")
    return 0
