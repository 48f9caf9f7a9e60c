"""JSON as the verifiers read it: one value per key, or the document is refused.

Most JSON readers keep the last of two equal keys, some the first, some refuse: a
document with a duplicate key can show two readers two different logs. Every file a
verifier checks (bundle, single proof, delivery proof) is refused if any object in it
repeats a key (``docs/audit-format.md`` section 5).
"""

from __future__ import annotations

import json


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for k, v in pairs:
        if k in seen:
            raise _Duplicate(k)
        seen[k] = v
    return seen


def duplicate_key(data: bytes) -> str | None:
    """The first key that some object in ``data`` repeats, or None.

    None too when ``data`` is not JSON at all: the typed decoder reports that.
    """
    try:
        json.loads(data, object_pairs_hook=_pairs)
    except _Duplicate as dup:
        return dup.key
    except (ValueError, RecursionError):
        return None
    return None
