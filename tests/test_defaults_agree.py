"""The protocol defaults of docs/protocol.md section 14 are the code's and the config's.

The maximum age (``max_age_ms``, ``[protocol] retention_days``) and the clock skew are
read from the spec's text and compared with ``Freshness()``, the config defaults, the
config ``exchange-node init`` writes and the example config; keys replaced by a rotation
stay on the card at least that long (10.5).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from exchange_node.cli.keys import rotation_overlap_ms
from exchange_node.config import ProtocolSection, load_config, render_config
from exchange_node.identity import ROTATION_OVERLAP_MS, create_identity, rotate_keys
from exchange_node.protocol.envelope import DAY_MS, Freshness
from exchange_node.protocol.keys import Suite

REPO = Path(__file__).resolve().parents[1]
SPEC = (REPO / "docs" / "protocol.md").read_text()
NOW_MS = 1_767_225_600_000


def _spec_default(name: str) -> int:
    section = SPEC.split("\n## 14. ")[1].split("\n## ")[0]
    match = re.search(rf"^- `{name}` = ([0-9,]+) ", section, re.MULTILINE)
    assert match, f"section 14 states no default for {name}"
    return int(match.group(1).replace(",", ""))


def _rendered(**options) -> str:
    return render_config(
        node_id="JPN-ISA",
        country="JPN",
        display_name="JPN-ISA",
        public_endpoint="http://127.0.0.1:1",
        peer_listen="127.0.0.1:1",
        local_listen="127.0.0.1:0",
        allow_plain_http=True,
        **options,
    )


def test_spec_defaults_are_the_protocol_code_defaults():
    assert Freshness().max_age_ms == _spec_default("max_age_ms")
    assert Freshness().max_skew_ms == _spec_default("max_skew_ms")


def test_spec_defaults_are_the_config_defaults_and_what_init_writes():
    max_age_days = _spec_default("max_age_ms") // DAY_MS
    assert max_age_days * DAY_MS == _spec_default("max_age_ms")
    skew_seconds = _spec_default("max_skew_ms") // 1000
    assert ProtocolSection().retention_days == max_age_days
    assert ProtocolSection().max_clock_skew_seconds == skew_seconds
    for text in (_rendered(), (REPO / "config" / "example-node.toml").read_text()):
        protocol = tomllib.loads(text)["protocol"]
        assert protocol == {"max_clock_skew_seconds": skew_seconds, "retention_days": max_age_days}


def test_replaced_keys_stay_on_the_card_at_least_the_maximum_age(tmp_path):
    assert _spec_default("max_age_ms") <= ROTATION_OVERLAP_MS
    path = tmp_path / "node.toml"
    path.write_text(_rendered().replace("retention_days = 30", "retention_days = 45"))
    cfg = load_config(path)
    assert rotation_overlap_ms(cfg) == 45 * DAY_MS
    data = tmp_path / "data"
    first = create_identity(
        data,
        node_id="JPN-ISA",
        country="JPN",
        display_name="JPN-ISA",
        endpoint="http://127.0.0.1:1",
        suite=Suite.X25519,
        now_ms=NOW_MS,
    )
    later = NOW_MS + 1000
    rotated = rotate_keys(data, now_ms=later, overlap_ms=rotation_overlap_ms(cfg))
    old = {first.local.signing_key.key_id, first.local.encryption_keys[0].key_id}
    kept = [k for k in rotated.card.signing_keys + rotated.card.encryption_keys if k.key_id in old]
    assert len(kept) == 2
    for key in kept:
        assert key.not_after_ms == later + 45 * DAY_MS
        assert key.valid_at(later + cfg.protocol.retention_days * DAY_MS - 1)


def test_a_short_retention_never_shortens_the_overlap_below_the_default(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(_rendered().replace("retention_days = 30", "retention_days = 1"))
    assert rotation_overlap_ms(load_config(path)) == _spec_default("max_age_ms")
