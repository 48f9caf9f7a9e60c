"""The OpenAPI 3.1 document of the local JSON API, generated, never hand-edited.

Schemas come from the msgspec Structs in ``api/schemas.py``; paths from the route table
``api/v1.ROUTES``. The output is deterministic (sorted keys), so the copy kept in the
repository (``docs/openapi.json``) can be compared byte for byte with what is served:
regenerate it with ``python -m exchange_node.api.openapi > docs/openapi.json``.
"""

from __future__ import annotations

import inspect
import json

import msgspec

from exchange_node.api import schemas as s
from exchange_node.api.idempotency import HEADER, KEY_PATTERN, REPLAYED

_REF = "#/components/schemas/{name}"

_IDEMPOTENCY_KEY = {
    "name": HEADER,
    "in": "header",
    "description": "makes a retry safe: the same key and request again get the first "
    "answer, without submitting twice (see docs/local-api.md)",
    "required": False,
    "schema": {"type": "string", "pattern": KEY_PATTERN},
}
_REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with the "
    "same Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}


def _ref(t: type) -> dict:
    return {"$ref": _REF.format(name=t.__name__)}


def openapi_document() -> dict:
    from exchange_node.api.v1 import ROUTES

    _, components = msgspec.json.schema_components(
        (*s.REQUEST_TYPES, *s.RESPONSE_TYPES), ref_template=_REF
    )
    problem = {"application/problem+json": {"schema": _ref(s.Problem)}}
    paths: dict[str, dict] = {}
    for r in ROUTES:
        op: dict = {
            "operationId": r.op,
            "summary": r.summary,
            "description": f"Roles: {', '.join(r.roles)}.",
            "tags": [r.tag],
            "security": [{"bearerAuth": []}],
            "x-roles": list(r.roles),
            "responses": {
                str(r.status): {
                    "description": "success",
                    "content": {"application/json": {"schema": _ref(r.response)}},
                },
                "default": {"description": "an RFC 9457 problem", "content": problem},
            },
        }
        params = [
            {
                "name": p.name,
                "in": p.where,
                "description": p.description,
                "required": p.required,
                "schema": p.schema,
            }
            for p in r.params
        ]
        if r.idempotent:
            params.append(_IDEMPOTENCY_KEY)
            op["responses"][str(r.status)]["headers"] = {REPLAYED: _REPLAYED}
        if params:
            op["parameters"] = params
        if r.request is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(r.request)}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return _normalised(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "exchange-node local API",
                "version": "1",
                "description": "For authority systems on the node's own network: travel-document "
                "notices and lookups, repatriation cases, audit and operations. Bearer tokens "
                "from `exchange-node token create`, which expire; beyond loopback only over"
                " TLS 1.2 or later. Errors are RFC 9457 problem details.",
            },
            "servers": [{"url": "/"}],
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "a token from `exchange-node token create`; refused"
                        " with 401 `token_missing`, `token_invalid` (unknown or revoked) or"
                        " `token_expired`, and 403 `role_forbidden`",
                    }
                },
            },
        }
    )


def _normalised(value):
    """``value`` with every ``description`` cleaned as :func:`inspect.cleandoc` does.

    Struct docstrings reach the schema as msgspec chooses to render them, and releases
    differ (0.23 dedents continuation lines, earlier ones keep them indented). Cleaning
    them here makes the document depend on the docstrings alone, not on a library's
    formatting, so the copy in the repository stays byte for byte what is served.
    """
    if isinstance(value, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _normalised(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def openapi_bytes() -> bytes:
    return (json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n").encode()


if __name__ == "__main__":
    import sys

    sys.stdout.buffer.write(openapi_bytes())
