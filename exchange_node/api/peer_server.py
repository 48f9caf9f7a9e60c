"""The peer API's listener: TLS handshakes that can be seen, and HTTP errors in the
peer API's own format.

aiohttp's ``TCPSite`` hands the TLS handshake to asyncio, which drops a failed one
without telling the application: a certificate on no pinned card left no trace. Here
each accepted connection does its handshake through ``loop.start_tls``, so a refused
handshake is known, with the remote address and OpenSSL's reason, and recorded
(:class:`RefusalAudit`, rate-limited). Only a completed handshake, with a certificate
OpenSSL verified against the pinned ones, reaches HTTP.

aiohttp answers a request its parser cannot read (a body longer than its
``Content-Length``, a bad request line) itself, as ``400 text/plain`` quoting the
bytes it received. :class:`PeerRequestHandler` answers those with the JSON error body
instead, quotes nothing, and records the refusal.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from exchange_node.audit.leaf import AuditEvent, LeafKind
from exchange_node.audit.leaves import refusals_suppressed

log = structlog.get_logger("exchange_node.peer_api")

SERVER_HEADER = "exchange-node"
"""What the ``Server`` header says: no software or version."""

HANDSHAKE_TIMEOUT = 10.0  # seconds; a connection that does not finish its handshake is dropped
IDLE_TIMEOUT = 75.0
"""Seconds a connection may wait without a complete request (before its first one, or
between two) before it is closed; also what bounds request headers that never finish."""


def remote_of(peername: object) -> tuple[str, str]:
    """(address, port) of a socket's peer name, as identifier-safe strings."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        addr, port = str(peername[0]), str(peername[1])
        if re.fullmatch(r"[0-9A-Fa-f.:]{1,64}", addr):
            return addr, port
        return "invalid", port
    return "unknown", ""


class RefusalAudit:
    """Audit entries for refusals anyone who can open a connection can provoke, at most
    ``budget`` in each ``window`` seconds. Past the budget a refusal is counted; the
    count goes into one ``refusals_suppressed`` entry when the window is over (the next
    refusal or :meth:`flush`, which the node calls every half second)."""

    def __init__(
        self,
        *,
        kind: LeafKind,
        operation: str,
        write: Callable[[AuditEvent], None],
        clock: Callable[[], int],
        on_suppressed: Callable[[], None] = lambda: None,
        budget: int = 20,
        window_seconds: int = 60,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = kind
        self.operation = operation
        self.budget = budget
        self.window_seconds = window_seconds
        self.monotonic = monotonic
        self._write = write
        self._clock = clock
        self._on_suppressed = on_suppressed
        self._window_start = self.monotonic()
        self._written = 0
        self._suppressed = 0

    def record(self, build: Callable[[], AuditEvent]) -> bool:
        """Write ``build()`` if the window's budget allows; True if written."""
        self.flush()
        if self._written >= self.budget:
            self._suppressed += 1
            self._on_suppressed()
            return False
        self._written += 1
        self._write(build())
        return True

    def flush(self) -> None:
        """Close the window if it is over, writing the count of suppressed refusals."""
        if self.monotonic() - self._window_start < self.window_seconds:
            return
        if self._suppressed:
            self._write(
                refusals_suppressed(
                    self._clock(), self.kind, self.operation, self._suppressed, self.window_seconds
                )
            )
        self._window_start = self.monotonic()
        self._written = self._suppressed = 0


def handshake_reason(exc: BaseException) -> tuple[str, str]:
    """(reason code, OpenSSL's reason in lower case or "") for a failed handshake."""
    if isinstance(exc, ssl.SSLError):
        tls_error = (exc.reason or "").lower()
        if not re.fullmatch(r"[a-z0-9_]{1,64}", tls_error):
            tls_error = ""
        if tls_error == "peer_did_not_return_a_certificate":
            return "tls_certificate_missing", tls_error
        if isinstance(exc, ssl.SSLCertVerificationError) or tls_error in (
            "certificate_verify_failed",
            "tlsv1_alert_unknown_ca",
        ):
            return "tls_certificate_unknown", tls_error
        return "tls_handshake_failed", tls_error
    if isinstance(exc, (TimeoutError, ConnectionAbortedError)):
        return "tls_handshake_timeout", ""
    return "tls_handshake_incomplete", ""


class PeerRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what its parser refuses in the peer
    API's format: JSON ``{"code", "detail", "status"}``, nothing of the request quoted,
    recorded through ``on_refused(request, status, code)``."""

    __slots__ = ("_on_refused",)

    def __init__(
        self,
        manager: web.Server,
        *,
        on_refused: Callable[[web.BaseRequest, int, str], None],
        **kwargs,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._on_refused = on_refused

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response is under way: nothing to add
            raise ConnectionError("a response was already sent; cannot send an error")
        if status >= 500:
            log.error("peer_api.request_failed", status=status, error=type(exc).__name__)
            code, detail = "internal_error", "the request could not be handled"
        else:
            # The parser's message quotes the request; neither the log nor the answer does.
            code, detail = (
                "request_malformed",
                "the request is not well-formed HTTP/1.1 (is the body as long as its "
                "Content-Length?)",
            )
            try:
                self._on_refused(request, status, code)
            except Exception as audit_exc:  # never let recording break the answer
                log.error("peer_api.refusal_not_recorded", error=repr(audit_exc))
        resp = web.json_response(
            {"code": code, "detail": detail, "status": status},
            status=status,
            headers={"Server": SERVER_HEADER},
        )
        resp.force_close()
        return resp


class _TlsGate(asyncio.Protocol):
    """One accepted connection until its TLS handshake is done, then the HTTP handler's."""

    def __init__(self, site: PeerSite) -> None:
        self._site = site
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.pause_reading()  # the ClientHello is for start_tls, not for us
        self._task = asyncio.get_running_loop().create_task(self._handshake())
        self._site._gates.add(self)

    async def _handshake(self) -> None:
        site, transport = self._site, self._transport
        assert transport is not None
        peername = transport.get_extra_info("peername")
        handler = site._handler_factory()
        ctx = site._ssl_context
        assert ctx is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                handler,
                ctx,
                server_side=True,
                ssl_handshake_timeout=site._handshake_timeout,
            )
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception as exc:
            transport.abort()
            site._on_handshake_refused(remote_of(peername), exc)
            return
        finally:
            site._gates.discard(self)
        handler.connection_made(tls)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only before start_tls took the transport over: the handshake fails on its own.
        pass

    def abort(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()


class PeerSite(web.BaseSite):
    """A TCP listener for the peer API: plain (demos and tests) or TLS with handshakes
    done by :class:`_TlsGate`; every connection is served by ``handler_factory()``."""

    __slots__ = (
        "_host",
        "_port",
        "_handler_factory",
        "_on_handshake_refused",
        "_handshake_timeout",
        "_gates",
        "bound_port",
    )

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        handler_factory: Callable[[], RequestHandler],
        on_handshake_refused: Callable[[tuple[str, str], BaseException], None],
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        backlog: int = 512,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port = host, port
        self._handler_factory = handler_factory
        self._on_handshake_refused = on_handshake_refused
        self._handshake_timeout = handshake_timeout
        self._gates: set[_TlsGate] = set()
        self.bound_port = 0

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.bound_port or self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        if self._ssl_context is None:
            factory: Callable[[], asyncio.BaseProtocol] = self._handler_factory
        else:

            def factory() -> asyncio.BaseProtocol:
                return _TlsGate(self)

        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog
        )
        self.bound_port = self._server.sockets[0].getsockname()[1]

    def set_ssl_context(self, ctx: ssl.SSLContext) -> None:
        """Use ``ctx`` for the handshakes of connections accepted from now on (a new set
        of pinned certificates); connections already open keep theirs."""
        self._ssl_context = ctx

    async def stop(self) -> None:
        for gate in list(self._gates):
            gate.abort()
        self._gates.clear()
        await super().stop()
