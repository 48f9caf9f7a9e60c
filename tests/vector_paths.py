"""Where the public test vectors live: `tests/vectors/`, carried by the repository.

Nothing here looks outside the clone, so a newcomer's `make test` finds the same data as
every developer's and CI's.
"""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors"
MERKLE = VECTORS / "rfc9162-merkle"
ICAO_SPECIMENS = VECTORS / "icao9303" / "specimen-mrz.json"
