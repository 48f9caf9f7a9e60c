"""Subject access reports: what this node holds about one case or one travel document.

Given a case reference or a document (issuing state and number), the report lists what
is held by category with its source, the purposes it was read for, every recipient it
was sent to (with the receipt), every access, the retention dates and the legal holds.
Everything is found from the record itself and through the keyed hashes the audit log
carries (``subject_hash``): the node keeps no index of people, in clear or otherwise.
Building a report reads the personal data, so it names a purpose and is audited as a
``case.accessed`` read (operation ``subject_report``); issuing or refusing it (a
restriction under the law of a jurisdiction, e.g. to protect an investigation) is a
``subject.report`` leaf. Signing and the text: :mod:`exchange_node.subject_report`.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from exchange_node.audit import leaves
from exchange_node.audit.log import LeafFilter
from exchange_node.domain.icao import validate_state_code
from exchange_node.domain.repatriation import validate_case_reference
from exchange_node.errors import NotFoundError, ValidationError
from exchange_node.record_keys import case_record_id
from exchange_node.services.retention import document_record_id
from exchange_node.subject_report import report_digest, seal_report

if TYPE_CHECKING:
    from exchange_node.services import Services
    from exchange_node.services.context import ServiceContext

__all__ = ["SubjectReports"]


class SubjectReports:
    def __init__(self, node: ServiceContext, services: Services) -> None:
        self._node = node
        self._store = node.store
        self._s = services

    async def issue(
        self,
        *,
        case_ref: str | None,
        document: tuple[str, str] | None,
        purpose: str,
        actor: str,
        refusal: tuple[str, str] | None = None,
    ) -> tuple[bytes, str]:
        """The signed report file and its text. ``refusal`` (jurisdiction, legal basis):
        a report that says the request is refused and holds nothing else."""
        node = self._node
        now = node.now_ms()
        if case_ref is not None:
            ref = validate_case_reference(case_ref, "case_ref")
            subject: dict[str, Any] = {"type": "case", "case_ref": ref}
            record_type, subject_hash = "case", self._s.case_subject_hash(ref)
        else:
            assert document is not None
            subject = {"type": "document", "issuing_state": document[0],
                       "document_number": document[1]}  # fmt: skip
            record_type, subject_hash = "document", self._s.subject_hash(*document)
        report: dict[str, Any] = {"node": node.node_id, "generated_at_ms": now, "subject": subject}
        if refusal is not None:
            jurisdiction = validate_state_code(refusal[0], "refusal.jurisdiction")
            basis = refusal[1]
            if not basis.strip():
                raise ValidationError("basis_required", "name the legal basis", "refusal.basis")
            if purpose not in node.config.data_protection.purposes:
                raise ValidationError(
                    "purpose_unknown", "a configured purpose is needed", "purpose"
                )
            report["refused"] = {"jurisdiction": jurisdiction, "basis": basis}
        elif case_ref is not None:
            report |= await self._case(ref, purpose, actor)
        else:
            report |= self._document(*document, purpose=purpose)  # type: ignore[misc]
        data, text = seal_report(report, node.keys.local.signing_key.private)
        outcome = "refused" if refusal else "issued"
        attrs = {"jurisdiction": report["refused"]["jurisdiction"]} if refusal else {}
        await node.record_audit(
            leaves.subject_report(
                now, actor, outcome, record_type, subject_hash,
                report_digest(json.loads(data)["report"]), **attrs,
            )
        )  # fmt: skip
        return data, text

    # --- a case ----------------------------------------------------------------------------

    async def _case(self, ref: str, purpose: str, actor: str) -> dict[str, Any]:
        case = await self._s.cases.read(
            ref, actor=actor, purpose=purpose, operation="subject_report",
            operation_id="subjectReport",
        )  # fmt: skip
        held = []
        if case.personal is not None:
            content = {k: v for k, v in _fields(case.personal).items() if v}
            held.append({"category": "identity and personal data", "source": case.opened_by,
                         "content": content})  # fmt: skip
        for e in case.events:
            content = {"step": str(e.kind), "at": str(e.at_ms)}
            if e.note:
                content["note"] = e.note
            held.append({"category": "case step", "source": e.actor, "content": content})
        recipients = []
        for e in case.events:
            for peer, mid in sorted(e.message_ids.items()):
                recipients.append(self._delivery(peer, mid))
        if case.purged is not None:
            recipients += [self._delivery(peer, mid) for peer, mid, _ in
                           self._s.cases.confirmations(case.purged)]  # fmt: skip
        accesses = self._accesses("case.accessed", self._s.case_subject_hash(ref))
        due = self._s.retention.case_due_at(ref)
        return {
            "held": held,
            "purposes": sorted({a["purpose"] for a in accesses if a.get("purpose")}),
            "recipients": recipients,
            "accesses": accesses,
            "retention": {
                "rule": "the end of the case, plus the monitoring period and the configured time",
                "due_at_ms": due,
                "review_due_at_ms": self._s.retention.review_due_at(case_record_id(ref)),
            },
            "holds": self._holds(case_record_id(ref)),
            "purged": _purge(case.purged),
        }

    # --- a document ------------------------------------------------------------------------

    def _document(self, state: str, number: str, *, purpose: str) -> dict[str, Any]:
        if purpose not in self._node.config.data_protection.purposes:
            raise ValidationError("purpose_unknown", "a configured purpose is needed", "purpose")
        notices = self._store.notices_for_document(state, number)
        if not notices and not self._accesses(
            "document.lookup", self._s.subject_hash(state, number)
        ):
            raise NotFoundError(
                "document_not_found", f"nothing is held about {state} {number}", "document"
            )
        held, recipients = [], []
        for n in sorted(notices, key=lambda n: n.issued_at_ms):
            content = {"kind": n.kind, "issued_at": str(n.issued_at_ms), "notice_id": n.notice_id}
            for key in ("remarks", "reason", "detection_place", "detection_auth"):
                if getattr(n, key):
                    content[key] = getattr(n, key)
            held.append(
                {"category": "document notice", "source": n.sender_node, "content": content}
            )
            recipients += [
                self._delivery(peer, mid.hex())
                for peer, mid in self._store.disclosures(f"notice:{n.notice_id}")
            ]
        subject = self._s.subject_hash(state, number)
        accesses = self._accesses("document.lookup", subject)
        cfg = self._node.config.retention
        return {
            "held": held,
            "purposes": ["document_lookup"] if accesses else [],
            "recipients": recipients,
            "accesses": accesses,
            "retention": {
                "rule": "status notices until withdrawn by their source; fraud detections "
                f"{cfg.fraud_notice_days} days after issue",
                "due_at_ms": None,
                "review_due_at_ms": None,
            },
            "holds": self._holds(document_record_id(subject)),
            "purged": None,
        }

    # --- parts -----------------------------------------------------------------------------

    def _delivery(self, peer: str, mid: str) -> dict[str, Any]:
        rows = [r for r in self._store.message_status(bytes.fromhex(mid)) if r.peer_id == peer]
        out: dict[str, Any] = {"peer": peer, "message_id": mid}
        if rows and rows[0].receipt_id is not None:
            receipt = self._store.get_receipt(rows[0].receipt_id)
            out["outcome"] = rows[0].outcome.value if rows[0].outcome else rows[0].state.value
            out["received_at_ms"] = receipt.received_at if receipt else None
            out["receipt_sha256"] = hashlib.sha256(receipt.receipt).hexdigest() if receipt else ""
        elif rows:
            out["outcome"] = rows[0].state.value
            out["receipt_sha256"] = ""
        return out

    def _accesses(self, kind: str, subject_hash: str) -> list[dict[str, Any]]:
        """Every read of the subject, found by its keyed hash in the audit log (indexed)."""
        flt = LeafFilter(kind=kind, subject_hash=subject_hash)
        return [
            {"time_ms": r.time, "actor": r.actor, "seq": r.seq, **r.attrs}
            for r in (leaf.record for leaf in self._node.audit.iter_query(flt))
        ]

    def _holds(self, record_id: str) -> list[dict[str, Any]]:
        hold = self._store.hold(record_id)
        return [{"placed_at_ms": hold.placed_at, "placed_by": hold.placed_by}] if hold else []


def _fields(personal) -> dict[str, str]:
    return {k: getattr(personal, k) for k in personal.__dataclass_fields__}


def _purge(p) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"reason": p.reason, "approver": p.approver, "purged_at_ms": p.purged_at,
            "notices": json.loads(p.notices)}  # fmt: skip
