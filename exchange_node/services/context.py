"""What the services use of the running node: the narrow interface they depend on.

The composition root (:class:`exchange_node.node.Node`) provides it; a test or a tool
may provide another. Nothing in ``services/`` imports the node itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from exchange_node.at_rest import AtRest
    from exchange_node.audit.leaf import AuditEvent
    from exchange_node.audit.log import AuditLog
    from exchange_node.config import Config
    from exchange_node.delivery.inbound import Inbound
    from exchange_node.delivery.pacing import LiveFirst
    from exchange_node.delivery.sender import Submitted
    from exchange_node.identity import NodeKeys
    from exchange_node.pb.exchange.v1 import notice_pb2
    from exchange_node.peers import PeerDirectory
    from exchange_node.protocol.envelope import Freshness
    from exchange_node.store.sqlite import SqliteStore, SqliteTransaction


class ServiceContext(Protocol):
    node_id: str
    config: Config
    store: SqliteStore
    at_rest: AtRest
    freshness: Freshness
    directory: PeerDirectory
    inbound: Inbound  # where the services register their content handlers
    audit: AuditLog  # read only: subject reports find accesses by keyed hash
    live_first: LiveFirst  # catch-up steps wait for live work

    @property
    def keys(self) -> NodeKeys: ...

    def now_ms(self) -> int: ...

    async def submit(
        self,
        body: notice_pb2.Body,
        recipients: Sequence[str] | None = None,
        *,
        actor: str = "operator",
        also: Callable[[SqliteTransaction, list[Submitted]], object] | None = None,
        label: str = "notice.submit",
    ) -> list[Submitted]: ...

    async def submit_many(
        self,
        bodies: Sequence[tuple[notice_pb2.Body, Sequence[str] | None]],
        *,
        actor: str = "operator",
        also: Callable[[SqliteTransaction, list[list[Submitted]]], object] | None = None,
        label: str = "notice.batch",
        keep: Callable[[SqliteTransaction], Sequence[bool]] | None = None,
        background: bool = False,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> list[list[Submitted]]: ...

    async def record_audit(self, *events: AuditEvent) -> range: ...
