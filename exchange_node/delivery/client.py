"""The peer HTTP client: this node's side of the peer API (``docs/protocol.md`` §17).

Posts batches, fetches a peer's current card and its audit consistency proofs, over
mutual TLS with the peer's certificate pinned from its card (plain HTTP only when the
config allows it). One connection pool for all peers; one TLS context per peer card.
Every failure worth retrying is a :class:`~exchange_node.delivery.worker.DeliveryError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from exchange_node.config import Config
from exchange_node.delivery.worker import DeliveryError, retry_after_seconds
from exchange_node.errors import ExchangeError
from exchange_node.identity import Identity
from exchange_node.metrics import Metrics
from exchange_node.peers import PeerDirectory
from exchange_node.protocol.cards import PeerCard
from exchange_node.tls import client_context

PROTOBUF = "application/x-protobuf"
WITNESS_PATH = "/exchange/v1/witness/add-checkpoint"
"""Where a node answers C2SP tlog-witness requests: its submission prefix is the peer
API endpoint followed by ``/exchange/v1/witness``."""


class ProofCannotExist(ExchangeError):
    """The peer answered 404 to a consistency proof: it says no such proof can exist
    (for a witness: not proved, i.e. inconsistent)."""


class PeerClient:
    def __init__(
        self,
        directory: PeerDirectory,
        identity: Identity,
        config: Config,
        metrics: Metrics,
        clock: Callable[[], int],
    ) -> None:
        self._directory = directory
        self._identity = identity
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._contexts: dict[tuple[str, bytes], object] = {}
        self._session: aiohttp.ClientSession | None = None

    async def post_batch(self, peer_id: str, data: bytes) -> bytes:
        """POST a serialised Batch; the signed receipt's bytes (HTTP 200). DeliveryError
        otherwise, carrying the delay a 429 or 503 asked for (``Retry-After``)."""
        card = self._directory.keyring.require(peer_id)
        started = time.perf_counter()
        try:
            async with self._http().post(
                _url(card, "/exchange/v1/batch"),
                data=data,
                headers={"Content-Type": PROTOBUF},
                ssl=self._ssl_for(card),
            ) as resp:
                body = await resp.read()
                if resp.status == 200:
                    self._metrics.send_latency.labels(peer_id).observe(
                        time.perf_counter() - started
                    )
                    return body
                # Honoured on 429 and 503, where it means "try again then" (RFC 6585, 9110).
                retry = (
                    retry_after_seconds(resp.headers.get("Retry-After"), self._clock())
                    if resp.status in (429, 503)
                    else None
                )
                raise DeliveryError(
                    f"HTTP {resp.status}: {body[:200].decode(errors='replace')}", retry
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    async def fetch_card(self, peer_id: str) -> bytes:
        """The peer's current signed card, as it serves it (not yet verified)."""
        card = self._directory.keyring.require(peer_id)
        try:
            async with self._http().get(
                _url(card, "/exchange/v1/card"), ssl=self._ssl_for(card)
            ) as resp:
                if resp.status != 200:
                    raise DeliveryError(f"card fetch: HTTP {resp.status}")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"card fetch: {type(exc).__name__}: {exc}") from None

    async def fetch_consistency(self, peer_id: str, first: int, second: int) -> list[bytes]:
        """The peer's consistency proof between its tree sizes. ProofCannotExist when it
        answers 404; DeliveryError for any other answer but 200 (400 is our request's
        fault, 503 a failure for now) and for transport failures."""
        card = self._directory.keyring.require(peer_id)
        try:
            async with self._http().get(
                _url(card, "/exchange/v1/audit/consistency"),
                params={"first": str(first), "second": str(second)},
                ssl=self._ssl_for(card),
            ) as resp:
                if resp.status == 404:
                    raise ProofCannotExist(
                        "peer_proof_unavailable",
                        f"{peer_id} says no consistency proof {first}->{second} can exist"
                        " (HTTP 404)",
                    )
                if resp.status != 200:
                    raise DeliveryError(f"consistency proof {first}->{second}: HTTP {resp.status}")
                data = await resp.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise DeliveryError(f"consistency proof: {type(exc).__name__}: {exc}") from None
        try:
            return [bytes.fromhex(h) for h in data["proof"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DeliveryError(f"consistency proof {first}->{second}: malformed answer") from exc

    async def add_checkpoint(self, peer_id: str, url: str, body: bytes) -> tuple[int, bytes, str]:
        """POST a C2SP ``add-checkpoint`` request to a witness: a pinned peer's peer API
        (``peer_id``, mutual TLS) or an external submission prefix (``url``, TLS checked
        against the system's CAs). Returns (status, body, content type) whatever the
        status; DeliveryError for transport failures."""
        if peer_id:
            card = self._directory.keyring.require(peer_id)
            target, ssl = _url(card, WITNESS_PATH), self._ssl_for(card)
        else:
            target, ssl = url.rstrip("/") + "/add-checkpoint", None
        try:
            async with self._http().post(
                target, data=body, headers={"Content-Type": "text/plain"}, ssl=ssl
            ) as resp:
                return resp.status, await resp.read(), resp.content_type
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"add-checkpoint: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _ssl_for(self, card: PeerCard):
        if card.endpoint.startswith("http://"):
            if not self._config.peer_api.allow_plain_http:
                raise DeliveryError(
                    f"{card.node_id} has a plain http endpoint and allow_plain_http is false"
                )
            return None
        keys = self._identity.keys
        key = (card.node_id, card.tls_cert_sha256)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = client_context(
                keys.tls_cert_der, keys.tls_key_path, card.tls_certificate,
                self._identity.passphrase,
            )  # fmt: skip
            self._contexts[key] = ctx
        return ctx

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.delivery.request_timeout_seconds),
                connector=aiohttp.TCPConnector(limit=64),
            )
        return self._session


def _url(card: PeerCard, path: str) -> str:
    return card.endpoint.rstrip("/") + path
