"""The operator and auditor console: server-rendered pages under ``/console``.

Served by the local API listener (loopback by default), with templates and one CSS file
packaged here: no JavaScript, no CDN, nothing to build. :data:`PAGES` is the one table of
pages and actions with the roles allowed; the roles are the JSON API's own
(``api/v1.py`` ``roles_of``), and the refusal is the API's check (``check_role``),
audited as ``auth.failed`` with ``attrs.operation`` = ``console.<page>``. Every POST
carries the session's form token (CSRF); a missing or wrong one is refused and audited.
Actions call the same services and store operations as the API and the command line,
and are audited with the signed-in token's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web

from exchange_node.console.sessions import Sessions

if TYPE_CHECKING:
    from exchange_node.node import Node


def create_console_app(node: Node, sessions: Sessions | None = None) -> web.Application:
    """The console as an aiohttp sub-application, to be added at ``/console``."""
    from exchange_node.console.app import CONSOLE, SESSIONS, console_middleware
    from exchange_node.console.routes import add_pages
    from exchange_node.console.words import FILTERS

    app = web.Application(middlewares=[console_middleware])
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("exchange_node.console", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(FILTERS)
    app[CONSOLE] = node
    app[SESSIONS] = sessions or Sessions(node)
    add_pages(app)
    return app
