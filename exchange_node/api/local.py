"""The local API: what the authority's own systems and monitoring call.

Health, readiness and metrics live here (loopback by default). The JSON API under
``/api/v1`` for notices, lookups, cases, audit and operations is in ``api/v1.py``;
every error it returns is an RFC 9457 problem (``api/problems.py``). The operator and
auditor console's pages are under ``/console`` (``exchange_node/console``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from exchange_node.node import Node

NODE_KEY = web.AppKey("node", object)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the node runs and both databases take writes; else 503 with the reasons
    (stable codes: ``node_not_running``, ``store_unwritable``, ``audit_unwritable``)."""
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    if not node.ready:
        reason = {
            "code": "node_not_running",
            "detail": "the node is starting or stopping; it is ready once its servers and"
            " delivery workers run",
        }
        return web.json_response({"status": "starting", "reasons": [reason]}, status=503)
    reasons = node.health.reasons()
    if reasons:
        return web.json_response(
            {
                "status": "unready",
                "node": node.node_id,
                "reasons": [{"code": r.code, "detail": r.detail} for r in reasons],
            },
            status=503,
        )
    return web.json_response(
        {"status": "ready", "node": node.node_id, "peers": len(node.keyring.peers)}
    )


async def metrics(request: web.Request) -> web.Response:
    node: Node = request.app[NODE_KEY]  # type: ignore[assignment]
    node.update_gauges()
    return web.Response(
        body=node.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def create_local_app(node: Node) -> web.Application:
    from exchange_node.api.problems import problem_middleware
    from exchange_node.api.v1 import MAX_BODY, add_routes

    app = web.Application(client_max_size=MAX_BODY, middlewares=[problem_middleware])
    app[NODE_KEY] = node
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_routes(app, node)
    from exchange_node.console import create_console_app

    app.add_subapp("/console", create_console_app(node))
    return app
