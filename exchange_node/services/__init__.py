"""Services behind the local API: the document index, notices and repatriation cases.

:class:`Services` is built once by the node (``Node.__init__``); it registers the
receive-side content handlers and ``on_accepted`` hooks, and holds the per-node key that
hashes looked-up documents for the audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange_node.audit.leaf import keyed_hash
from exchange_node.protocol.keys import write_secret_file
from exchange_node.services.cases import CaseService
from exchange_node.services.catchup import CatchUpService
from exchange_node.services.documents import DocumentIndex
from exchange_node.services.notices import NoticeService
from exchange_node.services.protection import RecordProtection
from exchange_node.services.reports import SubjectReports
from exchange_node.services.retention import RetentionService

if TYPE_CHECKING:
    from exchange_node.services.context import ServiceContext

LOOKUP_KEY_FILE = "lookup-audit.key"


def load_subject_key(path: Path) -> bytes:
    """The HMAC key for audit subject hashes: created 0600 on first use, refused if
    others can read it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret_file(path, AESGCM.generate_key(bit_length=256))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"{path}: audit subject key has mode {mode:o}; it must be 0600")
    return path.read_bytes()


class Services:
    def __init__(self, node: ServiceContext) -> None:
        self._subject_key = load_subject_key(node.config.data_path / "keys" / LOOKUP_KEY_FILE)
        self.index = DocumentIndex(node.store)
        self.notices = NoticeService(node, self.index)
        self.protection = RecordProtection(node)
        self.cases = CaseService(node, self.protection, self.case_subject_hash)
        self.catchup = CatchUpService(node)
        self.retention = RetentionService(
            node, self.cases, self.protection, self.case_subject_hash, self.subject_hash
        )
        self.reports = SubjectReports(node, self)
        node.inbound.content_handlers.extend(
            [self.notices.apply, self.cases.apply, self.catchup.apply]
        )
        node.inbound.on_accepted.extend(
            [self.notices.on_accepted, self.catchup.on_accepted, self.cases.on_accepted]
        )

    def subject_hash(self, issuing_state: str, number: str) -> str:
        """Keyed hash of a document for ``document.lookup`` leaves (type left out, so an
        auditor holding the key can test a document whatever type was asked)."""
        return keyed_hash(self._subject_key, f"{issuing_state}:{number}")

    def case_subject_hash(self, case_ref: str) -> str:
        """Keyed hash of a case reference for ``case.accessed`` leaves. The ``case:``
        prefix keeps it apart from document hashes (no ICAO code is lower case)."""
        return keyed_hash(self._subject_key, f"case:{case_ref}")
