"""Subject access reports: the signed file and its human-readable text. Pure functions.

A report (built by ``services/reports.py``) is a JSON object. The node signs its
canonical bytes (UTF-8 JSON, keys sorted at every level, no whitespace) with its Ed25519
signing key, the key that signs its audit checkpoints (``keys show`` prints it), over
``frame(b"exchange-node/subject-report/v1", canonical bytes)``. The file::

    {"format": "exchange-node/subject-report/v1", "report": {...},
     "signature": "<base64>", "signing_key": "<hex>"}

The text rendering is derived from the report; its SHA-256 is in the report
(``text_sha256``), so the signature covers it too. :func:`verify_report` needs nothing
but the file (and the node's key, obtained out of band, to trust it).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange_node.protocol.framing import frame

REPORT_FORMAT = "exchange-node/subject-report/v1"
_LABEL = REPORT_FORMAT.encode()


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def report_digest(body: dict[str, Any]) -> str:
    """SHA-256 (hex) of a report's canonical bytes: what the audit entry records, the
    same however the file around it is encoded."""
    return hashlib.sha256(canonical(body)).hexdigest()


def seal_report(report: dict[str, Any], key: Ed25519PrivateKey) -> tuple[bytes, str]:
    """The signed file and the text rendering, ``report`` given without ``text_sha256``."""
    text = render_text(report)
    body = {**report, "text_sha256": hashlib.sha256(text.encode()).hexdigest()}
    signature = key.sign(frame(_LABEL, canonical(body)))
    public = key.public_key().public_bytes_raw().hex()
    doc = {
        "format": REPORT_FORMAT,
        "report": body,
        "signature": base64.b64encode(signature).decode(),
        "signing_key": public,
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode(), text


@dataclass
class ReportCheck:
    ok: bool = False
    signing_key: str = ""
    key_trusted: bool | None = None
    text_matches: bool | None = None
    report: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def verify_report(
    data: bytes, trusted_keys: list[bytes] | None = None, text: bytes | None = None
) -> ReportCheck:
    """Check a report file offline; every problem is in the result, nothing raises."""
    r = ReportCheck()
    try:
        doc = json.loads(data)
        body, sig = doc["report"], base64.b64decode(doc["signature"], validate=True)
        public = bytes.fromhex(doc["signing_key"])
        if doc["format"] != REPORT_FORMAT or not isinstance(body, dict):
            raise ValueError(f"format {doc['format']!r}")
        key = Ed25519PublicKey.from_public_bytes(public)
    except (ValueError, KeyError, TypeError) as exc:
        r.problems.append(f"report_malformed: {exc}")
        return r
    r.report, r.signing_key = body, public.hex()
    try:
        key.verify(sig, frame(_LABEL, canonical(body)))
    except InvalidSignature:
        r.problems.append("report_signature_invalid: not signed by the key it names")
    if trusted_keys is not None:
        r.key_trusted = public in trusted_keys
        if not r.key_trusted:
            r.problems.append("report_key_untrusted: not the node's key as given")
    if text is not None:
        r.text_matches = hashlib.sha256(text).hexdigest() == body.get("text_sha256")
        if not r.text_matches:
            r.problems.append("report_text_mismatch: the text is not the one the report signs")
    r.ok = not r.problems
    return r


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_text(report: dict[str, Any]) -> str:
    """The report as a document a person reads (the data subject, an oversight body)."""
    s = report["subject"]
    name = s.get("case_ref") or f"{s.get('issuing_state')} {s.get('document_number')}"
    out = [
        f"Subject access report: {s['type']} {name}",
        f"Issued by node {report['node']} on {_when(report['generated_at_ms'])}",
        "",
    ]
    refusal = report.get("refused")
    if refusal:
        out += [
            f"The request is refused under the law of {refusal['jurisdiction']}:",
            f"  {refusal['basis']}",
            "This refusal is recorded in the node's audit log.",
        ]
        return "\n".join(out) + "\n"
    out.append("What is held, by category:")
    for item in report["held"] or [{"category": "nothing", "source": "-", "content": {}}]:
        out.append(f"  {item['category']} (source: {item['source']})")
        for key, value in sorted(item.get("content", {}).items()):
            out.append(f"    {key}: {value}")
    out.append("Purposes it was read for: " + (", ".join(report["purposes"]) or "none"))
    out.append("Recipients it was sent to:")
    for r in report["recipients"] or [{"peer": "none"}]:
        extra = (
            f", {r['outcome']}, receipt {r['receipt_sha256'][:16]}..." if r.get("outcome") else ""
        )
        out.append(f"  {r['peer']}{extra}")
    out.append("Every access:")
    for a in report["accesses"] or [{"time_ms": None, "actor": "none"}]:
        out.append(f"  {_when(a['time_ms'])}  {a['actor']}  {a.get('purpose', '')}".rstrip())
    ret = report["retention"]
    out.append(f"Kept until: {ret['rule']}; due {_when(ret.get('due_at_ms'))}")
    out.append(f"Next review: {_when(ret.get('review_due_at_ms'))}")
    out.append(
        "Legal holds: "
        + ("; ".join(f"since {_when(h['placed_at_ms'])}" for h in report["holds"]) or "none")
    )
    if report.get("purged"):
        p = report["purged"]
        out.append(f"Personal content erased on {_when(p['purged_at_ms'])} ({p['reason']})")
    return "\n".join(out) + "\n"
