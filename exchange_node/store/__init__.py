"""Durable state of the node: outboxes, inbox, receipts, peers, tokens.

Program against :class:`~exchange_node.store.base.Store`; open the embedded
implementation with ``await SqliteStore.open(path)``, the shared one with
``await exchange_node.store.postgresql.PostgresStore.open(url)`` (imported on demand: it
loads the PostgreSQL driver), or the one a config names with
``exchange_node.node.open_store``.
"""

from exchange_node.store.base import Store, StoreError
from exchange_node.store.records import (
    DeliveryRow,
    IdempotencyRecord,
    InboxItem,
    InboxOutcome,
    InboxRow,
    OutboxItem,
    OutboxRow,
    OutboxState,
    Outcome,
    PeerRecord,
    PurgeResult,
    QueueStats,
    ReceiptRecord,
    StoredReceipt,
    StoreInfo,
    TokenRecord,
    WriterStats,
)
from exchange_node.store.sqlite import SqliteStore, hash_token_secret

__all__ = [
    "DeliveryRow",
    "IdempotencyRecord",
    "InboxItem",
    "InboxOutcome",
    "InboxRow",
    "OutboxItem",
    "OutboxRow",
    "OutboxState",
    "Outcome",
    "PeerRecord",
    "PurgeResult",
    "QueueStats",
    "ReceiptRecord",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreInfo",
    "StoredReceipt",
    "TokenRecord",
    "WriterStats",
    "hash_token_secret",
]
