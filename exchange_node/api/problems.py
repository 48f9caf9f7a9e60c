"""RFC 9457 problem details for every error the local JSON API returns.

One middleware turns whatever a handler raises into ``application/problem+json`` with
a stable ``code`` and, where one field is to blame, its dotted path in ``field``:
``ExchangeError`` (domain and store rules), malformed or mistyped JSON (msgspec),
aiohttp's own 404/405/413, and anything unexpected (500, logged, no detail leaked).
"""

from __future__ import annotations

import re

import msgspec
import structlog
from aiohttp import web

from exchange_node.api.schemas import Problem, encoder
from exchange_node.errors import ExchangeError

log = structlog.get_logger("exchange_node.local_api")

PROBLEM_TYPE = "urn:exchange-node:problem:"
PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
}


def problem(
    status: int,
    code: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = Problem(
        type=PROBLEM_TYPE + code,
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        code=code,
        field=field,
    )
    return web.Response(
        body=encoder.encode(body), status=status, content_type=PROBLEM_JSON, headers=headers
    )


class ApiProblem(Exception):
    """Raised by handlers for an HTTP-level refusal (auth, content type, query)."""

    def __init__(
        self, status: int, code: str, detail: str, field: str | None = None, headers=None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.headers = headers


_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def field_of(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec says e.g. "Expected `int`, got `str` - at `$.document.number`"."""
    text = str(exc)
    m = _MSGSPEC_PATH.search(text)
    path = m.group(1).lstrip(".") if m else ""
    detail = text[: m.start()] if m else text
    unknown = _UNKNOWN.search(detail)
    if unknown:  # the offending field is the unknown one, inside the path
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
    return detail, path or None


@web.middleware
async def problem_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as exc:
        return problem(exc.status, exc.code, exc.detail, exc.field, exc.headers)
    except ExchangeError as exc:
        return problem(exc.status, exc.code, exc.message, exc.field)
    except msgspec.ValidationError as exc:
        detail, field = field_of(exc)
        return problem(422, "invalid_field", detail, field)
    except msgspec.DecodeError as exc:
        return problem(400, "malformed_json", f"the body is not valid JSON: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status, "http_error")
        detail = {
            404: f"no such resource: {request.path}; see /api/v1/openapi.json",
            405: f"{request.method} is not allowed on {request.path}",
            413: "the request body is too large",
        }.get(exc.status, exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(exc.status, code, detail, headers=headers)
    except Exception:
        log.exception("local_api.error", path=request.path, method=request.method)
        return problem(500, "internal_error", "the node failed to answer; see its log")
