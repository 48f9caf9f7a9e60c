"""Helpers for the local API tests: real nodes on loopback in a temporary directory.

Not a test module of its own; the other ``test_api_*`` files import from it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from exchange_node.config import (
    Config,
    DeliverySection,
    LocalApiSection,
    NodeSection,
    PeerApiSection,
    PeerPolicy,
    StoreSection,
)
from exchange_node.identity import create_identity
from exchange_node.node import Node
from exchange_node.protocol.keys import Suite
from tests import node_helpers

free_port = node_helpers.free_port


async def make_node(
    root: Path, node_id: str, country: str, policies: dict[str, list[str]] | None = None
) -> Node:
    data = root / node_id.lower()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    create_identity(
        data,
        node_id=node_id,
        country=country,
        display_name=node_id,
        endpoint=endpoint,
        suite=Suite.X25519,
        now_ms=int(time.time() * 1000) - 60_000,
    )
    config = Config(
        node=NodeSection(id=node_id, country=country, data_dir=str(data), suite="x25519"),
        peer_api=PeerApiSection(
            listen=f"127.0.0.1:{port}", public_endpoint=endpoint, allow_plain_http=True
        ),
        local_api=LocalApiSection(listen="127.0.0.1:0"),
        delivery=DeliverySection(backoff_initial_ms=20, backoff_max_ms=200),
        peers={k: PeerPolicy(allow=v) for k, v in (policies or {}).items()},
        # The backend of the node_store_backend fixture (tests/pg_harness.py).
        store=StoreSection(url=node_helpers.NEW_DATABASE() if node_helpers.NEW_DATABASE else ""),
    )
    node = await Node.open(config)
    await node.start()
    return node


async def pin_all(nodes: Sequence[Node]) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                await a.store.upsert_peer(
                    b.node_id, b.keys.card_bytes, b.keys.fingerprint, int(time.time() * 1000)
                )
        a.reload_peers()


async def token(node: Node, role: str, name: str | None = None) -> str:
    secret = "xn_" + secrets.token_urlsafe(32)
    await node.store.create_token(name or f"{role}-1", role, secret, int(time.time() * 1000))
    return secret


class Client:
    """A JSON client for one node's local API with one token."""

    def __init__(self, session: aiohttp.ClientSession, node: Node, secret: str | None) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{node.local_port}"
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}

    async def call(self, method: str, path: str, json=None, **kw) -> tuple[int, dict]:
        async with self.session.request(
            method, self.base + path, json=json, headers=self.headers, **kw
        ) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    async def get(self, path: str, **kw) -> tuple[int, dict]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json=None, **kw) -> tuple[int, dict]:
        return await self.call("POST", path, json=json, **kw)


async def eventually(check, timeout: float = 10.0):
    """Poll ``check()`` (sync or async) until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
