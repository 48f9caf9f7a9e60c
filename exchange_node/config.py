"""Node configuration: a TOML file, checked completely before anything starts.

Only the composition root (``node.py``) and the CLI call :func:`load_config`. A bad file
stops start-up with :class:`ConfigError`, whose one-line message names the file, the key
and what is expected, e.g.::

    config/node.toml: [delivery] batch_size: expected a number between 1 and 500, got 0
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from exchange_node.domain.icao import validate_state_code
from exchange_node.errors import ValidationError
from exchange_node.protocol.cards import NODE_ID_RE
from exchange_node.protocol.envelope import DAY_MS, DEFAULT_MAX_AGE_MS, DEFAULT_MAX_SKEW_MS

NOTICE_KINDS = ("status_notice", "fraud_notice", "correction", "case_event")
"""Kinds of notice a peer policy can allow. Pings and key announcements always pass."""


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the one line to show the operator."""


class NodeSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: str
    country: str
    display_name: str = ""
    # Relative paths are relative to the config file's directory.
    data_dir: str = "data"
    suite: str = "mlkem768-x25519"
    # Name of an environment variable holding the private-key passphrase; "" = none.
    key_passphrase_env: str = ""


class PeerApiSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1:8443"
    # The URL peers use to reach this node (goes on the node card).
    public_endpoint: str = ""
    # Plain HTTP without TLS: only for demos and loopback tests.
    allow_plain_http: bool = False
    max_batch_bytes: int = 16 * 1024 * 1024
    max_concurrent_batches: int = 8
    # At most this many of those slots for one peer: below the total, so one peer that
    # holds its connections open cannot lock the others out.
    max_concurrent_batches_per_peer: int = 2
    # A batch body must arrive within this many seconds of its headers, or the request
    # is refused (408) and its slot freed.
    body_timeout_seconds: float = 30.0


class LocalApiSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    listen: str = "127.0.0.1:8080"
    # Listening on anything but loopback must be asked for explicitly.
    allow_non_loopback: bool = False
    # TLS for the local API: a PEM certificate (chain) and its private key (0600),
    # relative to the config file. Both or neither; required off loopback.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Off loopback without TLS, bearer tokens cross the network in clear: only with this.
    allow_plain_off_loopback: bool = False
    # Lifetime of a token made by `token create` without --expires; 0: never expires.
    token_lifetime_days: int = 90

    def token_expiry(self, now_ms: int) -> int | None:
        """When a token created at ``now_ms`` with the default lifetime expires (None:
        never): the one rule of `token create` without --expires and the console."""
        return now_ms + self.token_lifetime_days * DAY_MS if self.token_lifetime_days else None


class ProtocolSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    max_clock_skew_seconds: int = DEFAULT_MAX_SKEW_MS // 1000
    # Envelopes older than this are refused; de-duplication remembers at least this long.
    retention_days: int = DEFAULT_MAX_AGE_MS // DAY_MS


class DeliverySection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    batch_size: int = 200
    backoff_initial_ms: int = 500
    backoff_max_ms: int = 60_000
    request_timeout_seconds: float = 30.0
    # A peer's request for a catch-up is honoured at most once in this many seconds.
    catchup_request_interval_seconds: int = 86_400
    # A catch-up step (a chunk sealed and queued, a batch sent or taken in) waits at most
    # this long in all for live work under way in the node (0: it does not wait);
    # docs/operations.md section 3.
    catchup_live_wait_ms: int = 200


class AuditSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    checkpoint_interval_seconds: int = 60


class WitnessTarget(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # A C2SP witness this node pushes its checkpoints to: its cosignature/v1 verifier key
    # and where it listens, a pinned peer (its peer API) or a submission prefix URL.
    vkey: str
    peer: str = ""
    url: str = ""


class WitnessSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Cosign pinned peers' checkpoints (POST /exchange/v1/witness/add-checkpoint).
    cosign: bool = True
    # More logs to cosign: their verifier keys (type 0x01), origin = key name.
    logs: list[str] = msgspec.field(default_factory=list)
    push: list[WitnessTarget] = msgspec.field(default_factory=list)


DEFAULT_PURPOSES = (
    "case_management",
    "return_coordination",
    "reintegration_monitoring",
    "oversight",
    "subject_access",
)
"""Purpose codes of case reads (``[data_protection] purposes``); docs/operations.md
section 11."""


class DataProtectionSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # A new key-encryption key (data keys re-wrapped under it) this often.
    kek_rotation_days: int = 30
    # How long database backups are kept: a retired key-encryption key is destroyed
    # this long after its retirement, when no kept backup can still need it.
    backup_horizon_days: int = 30
    # Why an officer may read a case's personal data; each read names one, recorded in
    # its case.accessed audit entry (codes: lower case, digits and _).
    purposes: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_PURPOSES))


class RetentionSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # The retention schedule (docs/operations.md section 10 justifies each default).
    # Fraud detections (counterfeit, forged, ... notices) are purged this long after
    # they were issued.
    fraud_notice_days: int = 1825
    # A case that reached its end (closed, cancelled, consent withdrawn) keeps its
    # content for the monitoring period and then this configured time.
    case_monitoring_days: int = 365
    case_after_monitoring_days: int = 365
    # Periodic review: a case held this long since it was opened or last kept, and a
    # notice of this node's in effect this long since issued or last kept, is listed as
    # due; an operator keeps it (with a reason) or purges it.
    case_review_days: int = 365
    document_review_days: int = 1825
    # How often the retention job runs in a serving node.
    interval_seconds: int = 3600


class StoreSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # "" keeps everything in data_dir/node.sqlite (embedded SQLite). A libpq URL
    # ("postgresql://node@db.example:5432/exchange?sslmode=verify-full") puts the
    # store and the audit log in that PostgreSQL database, shared by every process of
    # the node. Never with a password in it: see password_file / password_env.
    url: str = ""
    # Where the database password is: a file (0600; relative to this file) or the
    # name of an environment variable. Neither: libpq's own (~/.pgpass, PGPASSWORD,
    # a client certificate).
    password_file: str = ""
    password_env: str = ""


class PeerPolicy(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Notice kinds that may be sent to and accepted from this peer.
    allow: list[str] = msgspec.field(default_factory=lambda: list(NOTICE_KINDS))


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    node: NodeSection
    peer_api: PeerApiSection = PeerApiSection()
    local_api: LocalApiSection = LocalApiSection()
    protocol: ProtocolSection = ProtocolSection()
    delivery: DeliverySection = DeliverySection()
    audit: AuditSection = AuditSection()
    witness: WitnessSection = WitnessSection()
    data_protection: DataProtectionSection = DataProtectionSection()
    retention: RetentionSection = RetentionSection()
    store: StoreSection = StoreSection()
    peers: dict[str, PeerPolicy] = msgspec.field(default_factory=dict)
    # Set by load_config: where the file was, for resolving relative paths.
    path: str = ""

    def relative_path(self, value: str) -> Path:
        """A path from the config file, relative to the file's folder."""
        base = Path(self.path).parent if self.path else Path.cwd()
        return (base / value).resolve()

    @property
    def data_path(self) -> Path:
        base = Path(self.path).parent if self.path else Path.cwd()
        return (base / self.node.data_dir).resolve()

    @property
    def store_password(self) -> str | None:
        """The database password from ``[store] password_file`` or ``password_env``;
        None when neither is set. ConfigError if the one named is missing or empty."""
        st = self.store
        if st.password_env:
            value = os.environ.get(st.password_env)
            if not value:
                raise ConfigError(
                    f"{self.path}: [store] password_env: environment variable "
                    f"{st.password_env} is not set or empty"
                )
            return value
        if st.password_file:
            base = Path(self.path).parent if self.path else Path.cwd()
            file = base / st.password_file
            try:
                value = file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{self.path}: [store] password_file: cannot read {file}: {exc.strerror}"
                ) from None
            if not value:
                raise ConfigError(f"{self.path}: [store] password_file: {file} is empty")
            return value
        return None

    def policy_for(self, peer_id: str) -> tuple[str, ...]:
        """Notice kinds allowed with ``peer_id`` (all kinds when not configured)."""
        p = self.peers.get(peer_id)
        return tuple(p.allow) if p is not None else NOTICE_KINDS


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; ValueError with what is expected."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", value)
    if not m:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8443 or [::1]:8443), got {value!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# (section, key, lowest, highest) for every numeric setting.
_RANGES: tuple[tuple[str, str, float, float], ...] = (
    ("peer_api", "max_batch_bytes", 1024, 64 * 1024 * 1024),
    ("peer_api", "max_concurrent_batches", 1, 256),
    ("peer_api", "max_concurrent_batches_per_peer", 1, 255),
    ("peer_api", "body_timeout_seconds", 1, 600),
    ("protocol", "max_clock_skew_seconds", 0, 3600),
    ("protocol", "retention_days", 1, 3650),
    ("delivery", "batch_size", 1, 500),
    ("delivery", "backoff_initial_ms", 1, 3_600_000),
    ("delivery", "backoff_max_ms", 1, 86_400_000),
    ("delivery", "request_timeout_seconds", 1, 600),
    ("delivery", "catchup_request_interval_seconds", 0, 31_536_000),
    ("delivery", "catchup_live_wait_ms", 0, 60_000),
    ("audit", "checkpoint_interval_seconds", 1, 86400),
    ("data_protection", "kek_rotation_days", 1, 3650),
    ("data_protection", "backup_horizon_days", 0, 3650),
    ("retention", "fraud_notice_days", 1, 36500),
    ("retention", "case_monitoring_days", 0, 36500),
    ("retention", "case_after_monitoring_days", 0, 36500),
    ("retention", "case_review_days", 1, 36500),
    ("retention", "document_review_days", 1, 36500),
    ("retention", "interval_seconds", 1, 86400),
    ("local_api", "token_lifetime_days", 0, 3650),
)


def _check(path: Path, cfg: Config) -> None:
    def bad(key: str, expected: str, got: object) -> ConfigError:
        return ConfigError(f"{path}: {key}: expected {expected}, got {got!r}")

    if not NODE_ID_RE.fullmatch(cfg.node.id):
        raise bad(
            "[node] id",
            "an upper-case node id like JPN-ISA (A-Z, 0-9, '-', 2-32 chars)",
            cfg.node.id,
        )
    _check_country(path, cfg.node.country)
    if cfg.node.key_passphrase_env and not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_]{0,63}", cfg.node.key_passphrase_env
    ):
        raise bad(
            "[node] key_passphrase_env",
            'the name of an environment variable (letters, digits, _) or ""',
            cfg.node.key_passphrase_env,
        )
    if cfg.node.suite not in ("mlkem768-x25519", "x25519"):
        raise bad("[node] suite", "'mlkem768-x25519' or 'x25519'", cfg.node.suite)
    for section, key, value in (
        ("peer_api", "listen", cfg.peer_api.listen),
        ("local_api", "listen", cfg.local_api.listen),
    ):
        try:
            host, _ = parse_listen(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: [{section}] {key}: {exc}") from None
        if (
            section == "local_api"
            and not is_loopback(host)
            and not cfg.local_api.allow_non_loopback
        ):
            raise bad(
                "[local_api] listen",
                "a loopback address (set allow_non_loopback = true to expose the local API)",
                value,
            )
    _check_local_tls(path, cfg)
    _check_listeners_apart(path, cfg)
    if cfg.peer_api.public_endpoint and not re.match(r"^https?://", cfg.peer_api.public_endpoint):
        raise bad(
            "[peer_api] public_endpoint",
            "a URL starting with https://",
            cfg.peer_api.public_endpoint,
        )
    if cfg.peer_api.public_endpoint.startswith("http://") and not cfg.peer_api.allow_plain_http:
        raise bad(
            "[peer_api] public_endpoint",
            "https:// (or allow_plain_http = true)",
            cfg.peer_api.public_endpoint,
        )
    for section, key, low, high in _RANGES:
        value = getattr(getattr(cfg, section), key)
        if not low <= value <= high:
            raise bad(f"[{section}] {key}", f"a number between {low} and {high}", value)
    if cfg.peer_api.max_concurrent_batches_per_peer >= cfg.peer_api.max_concurrent_batches:
        raise bad(
            "[peer_api] max_concurrent_batches_per_peer",
            f"a number below max_concurrent_batches ({cfg.peer_api.max_concurrent_batches}),"
            " so that one peer cannot take every slot",
            cfg.peer_api.max_concurrent_batches_per_peer,
        )
    if cfg.delivery.backoff_initial_ms > cfg.delivery.backoff_max_ms:
        raise bad(
            "[delivery] backoff_initial_ms",
            "at most backoff_max_ms",
            cfg.delivery.backoff_initial_ms,
        )
    _check_witness(bad, cfg.witness)
    purposes = cfg.data_protection.purposes
    if not purposes or any(not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", p) for p in purposes):
        raise bad(
            "[data_protection] purposes",
            "a non-empty list of codes such as case_management (a-z, 0-9, _; at most 32)",
            purposes,
        )
    _check_store(path, cfg.store, bad)
    for peer_id, policy in cfg.peers.items():
        if not NODE_ID_RE.fullmatch(peer_id):
            raise bad(f"[peers.{peer_id}]", "a node id like PHL-DFA", peer_id)
        for kind in policy.allow:
            if kind not in NOTICE_KINDS:
                raise bad(f"[peers.{peer_id}] allow", f"a list of {', '.join(NOTICE_KINDS)}", kind)


def _check_witness(bad, section: WitnessSection) -> None:
    """Every verifier key parses with the signature type its place needs, and every
    push target names exactly one place to reach it."""
    from exchange_node.audit.checkpoint import ED25519_ALG
    from exchange_node.audit.cosignature import COSIGNATURE_V1_ALG, parse_vkey
    from exchange_node.errors import ValidationError

    for i, vkey in enumerate(section.logs):
        try:
            parse_vkey(vkey, alg=ED25519_ALG)
        except ValidationError as exc:
            raise bad(
                f"[witness] logs[{i}]", f"a log's verifier key ({exc.message})", vkey
            ) from None
    for i, target in enumerate(section.push):
        where = f"[[witness.push]] #{i + 1}"
        try:
            parse_vkey(target.vkey, alg=COSIGNATURE_V1_ALG)
        except ValidationError as exc:
            raise bad(
                f"{where} vkey", f"a cosignature/v1 verifier key ({exc.message})", target.vkey
            ) from None
        if bool(target.peer) == bool(target.url):
            raise bad(
                where, "exactly one of peer (a pinned node id) or url", target.peer or target.url
            )
        if target.peer and not NODE_ID_RE.fullmatch(target.peer):
            raise bad(f"{where} peer", "a node id like PHL-DFA", target.peer)
        if target.url and not re.fullmatch(r"https?://[^\s]+", target.url):
            raise bad(f"{where} url", "the witness's submission prefix, https://...", target.url)


def _check_local_tls(path: Path, cfg: Config) -> None:
    """Bearer tokens never cross a network in clear: off loopback the local API needs
    its TLS files, unless ``allow_plain_off_loopback`` says the operator accepts that."""
    api = cfg.local_api
    if bool(api.tls_cert_file) != bool(api.tls_key_file):
        missing = "tls_key_file" if api.tls_cert_file else "tls_cert_file"
        raise ConfigError(
            f"{path}: [local_api] {missing}: expected a file (tls_cert_file and tls_key_file"
            " go together), got ''"
        )
    host, _ = parse_listen(api.listen)
    if not is_loopback(host) and not api.tls_cert_file and not api.allow_plain_off_loopback:
        raise ConfigError(
            f"{path}: [local_api] listen: expected a loopback address unless TLS is"
            " configured (tls_cert_file, tls_key_file), or allow_plain_off_loopback = true to"
            f" send bearer tokens in clear, got {api.listen!r}"
        )


def _check_country(path: Path, country: str) -> None:
    """The node's country as the document rules read it: a code of the ICAO Doc 9303
    list, in its canonical form (what peers compare issuing states against)."""
    expected = "an ICAO Doc 9303 code such as JPN, PHL, D or XOM"
    try:
        canonical = validate_state_code(country, "[node] country")
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: [node] country: expected {expected}, got {country!r} ({exc.message})"
        ) from None
    if canonical != country:
        raise ConfigError(f"{path}: [node] country: expected {canonical!r}, got {country!r}")


_ANY_ADDRESS = ("0.0.0.0", "::", "")


def _check_listeners_apart(path: Path, cfg: Config) -> None:
    """The peer API and the local API cannot share a port: the second would fail to bind
    at start-up, long after the file was written. Port 0 (any free port) never clashes."""
    peer_host, peer_port = parse_listen(cfg.peer_api.listen)
    local_host, local_port = parse_listen(cfg.local_api.listen)
    overlap = peer_host == local_host or {peer_host, local_host} & set(_ANY_ADDRESS)
    if peer_port and peer_port == local_port and overlap:
        raise ConfigError(
            f"{path}: [local_api] listen: expected a port other than the peer API's"
            f" ({cfg.peer_api.listen}), got {cfg.local_api.listen!r}"
        )


def check_store(path: Path | str, st: StoreSection) -> None:
    """The checks ``load_config`` makes of a ``[store]`` section (for a section the
    command line builds). ConfigError with the one line to show."""

    def bad(key: str, expected: str, got: object) -> ConfigError:
        return ConfigError(f"{path}: {key}: expected {expected}, got {got!r}")

    _check_store(Path(path), st, bad)


def _check_store(
    path: Path, st: StoreSection, bad: Callable[[str, str, object], ConfigError]
) -> None:
    if not st.url:
        if st.password_file or st.password_env:
            raise bad("[store] url", "a postgresql:// URL when a password is configured", "")
        return
    parts = urlsplit(st.url)
    if parts.password is not None or "password=" in parts.query:
        # Not echoed: the message would carry the password into logs.
        raise ConfigError(
            f"{path}: [store] url: the URL contains a password; remove it and name a file "
            "(password_file) or an environment variable (password_env) holding it"
        )
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise bad(
            "[store] url",
            "a URL like postgresql://node@db.example:5432/exchange?sslmode=verify-full",
            st.url,
        )
    if st.password_file and st.password_env:
        raise bad("[store] password_file", "either password_file or password_env, not both",
                  st.password_file)  # fmt: skip


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "": Config,
    "node": NodeSection,
    "peer_api": PeerApiSection,
    "local_api": LocalApiSection,
    "protocol": ProtocolSection,
    "delivery": DeliverySection,
    "audit": AuditSection,
    "witness": WitnessSection,
    "data_protection": DataProtectionSection,
    "retention": RetentionSection,
    "store": StoreSection,
}


def _describe(exc: msgspec.ValidationError) -> str:
    """Turn msgspec's message (e.g. "Expected `int`, got `str` - at `$.delivery.batch_size`")
    into "[delivery] batch_size: ...", and say which keys a section accepts when a key
    is unknown."""
    text = str(exc)
    m = re.search(r" - at `\$\.?(.*)`$", text)
    if not m:
        m_top = re.match(r"Object contains unknown field `(.+)`$", text)
        if m_top:
            return f"unknown section or key {m_top.group(1)!r}: expected one of {_keys(Config)}"
        return text
    parts = m.group(1).replace("[...]", ".*").split(".")
    message = text[: m.start()]
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        section = _SECTIONS.get(parts[0]) if len(parts) == 1 else PeerPolicy
        expected = f"expected one of {_keys(section)}" if section else "not a known key"
        return f"[{'.'.join(parts)}]: unknown field `{unknown.group(1)}`; {expected}"
    key = f"[{'.'.join(parts[:-1])}] {parts[-1]}" if len(parts) > 1 else f"[{parts[0]}]"
    return f"{key}: {message}"


def _keys(struct: type[msgspec.Struct]) -> str:
    return ", ".join(f for f in struct.__struct_fields__ if f != "path")


def load_config(path: str | Path) -> Config:
    """Read and check a config file. Raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found (create one with `exchange-node init`)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    raw["path"] = str(path.resolve())
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    _check(path, cfg)
    return cfg


def render_config(
    *,
    node_id: str,
    country: str,
    display_name: str,
    public_endpoint: str,
    peer_listen: str,
    local_listen: str,
    allow_plain_http: bool = False,
    data_dir: str = "data",
    suite: str = "mlkem768-x25519",
    key_passphrase_env: str = "",
) -> str:
    """The commented TOML that ``exchange-node init`` writes."""
    return f'''# exchange-node configuration. Every key is documented in docs/operations.md.

[node]
id = "{node_id}"                  # this node's id, as peers know it
country = "{country}"                 # ICAO Doc 9303 code of the authority's state
display_name = "{display_name}"
data_dir = "{data_dir}"                # keys, TLS certificate, databases (relative to this file)
suite = "{suite}"{" " * (23 - len(suite))}# HPKE suite of new encryption keys (init, keys rotate): "mlkem768-x25519" or "x25519"
key_passphrase_env = "{key_passphrase_env}"{" " * (18 - len(key_passphrase_env))}# env var holding the private-key passphrase, if keys are encrypted

[peer_api]
listen = "{peer_listen}"          # where peers connect (mutual TLS)
public_endpoint = "{public_endpoint}"
allow_plain_http = {str(allow_plain_http).lower()}          # never in production: no TLS at all
max_batch_bytes = 16777216
max_concurrent_batches = 8        # batches in progress at once; more are answered 429
max_concurrent_batches_per_peer = 2  # of those, at most this many for one peer (below the total)
body_timeout_seconds = 30        # a batch body must arrive within this, or 408 and the slot is freed

[local_api]
listen = "{local_listen}"          # authority systems connect here; loopback by default
allow_non_loopback = false
tls_cert_file = ""               # PEM certificate (chain) of the local API; required off loopback
tls_key_file = ""                # its private key (mode 0600)
allow_plain_off_loopback = false # off loopback without TLS: tokens in clear; never in production
token_lifetime_days = 90         # tokens from `token create` expire after this (0: never)

[protocol]
max_clock_skew_seconds = {DEFAULT_MAX_SKEW_MS // 1000}     # how far peers' clocks may be ahead of ours
retention_days = {DEFAULT_MAX_AGE_MS // DAY_MS}              # older envelopes are refused; duplicates and replaced keys kept this long

[delivery]
batch_size = 200                 # envelopes per batch (1-500)
backoff_initial_ms = 500         # first retry delay after a failure (new traffic does not cut a delay short)
backoff_max_ms = 60000           # retry delay cap, a peer's Retry-After included: a returning peer is served within a minute
request_timeout_seconds = 30
catchup_request_interval_seconds = 86400  # a peer's catch-up request is honoured at most once a day
catchup_live_wait_ms = 200        # a catch-up step waits at most this long for live work under way (0: never)

[audit]
checkpoint_interval_seconds = 60 # how often a new signed checkpoint is issued

[witness]
cosign = true                    # cosign pinned peers' checkpoints as a C2SP tlog-witness
logs = []                        # more logs to witness: their verifier keys ("<origin>+<id>+<key>")
# Witnesses this node pushes its own checkpoints to (their cosignature/v1 verifier keys):
# [[witness.push]]
# vkey = "exchange-node.example/PHL-DFA/witness+1a2b3c4d+BA..."
# peer = "PHL-DFA"               # a pinned peer, over the peer API; or:
# url = "https://witness.example.org/prefix"   # an external witness's submission prefix
[data_protection]
kek_rotation_days = 30           # a new key-encryption key this often (data keys re-wrapped)
backup_horizon_days = 30         # keep database backups no longer: retired key-encryption keys are destroyed after this
# why a case may be read: every read names one of these, recorded in its audit entry
purposes = ["case_management", "return_coordination", "reintegration_monitoring", "oversight", "subject_access"]

[retention]                      # the retention schedule; docs/operations.md section 10 justifies each default
fraud_notice_days = 1825         # fraud detections: 5 years from issue
case_monitoring_days = 365       # a finished case keeps its content for the monitoring period...
case_after_monitoring_days = 365 # ...and then this long
case_review_days = 365           # a held case is reviewed every 12 months (keep with a reason, or erase)
document_review_days = 1825      # this node's notices in effect are reviewed every 5 years
interval_seconds = 3600          # how often the retention job runs

# Per-peer policy: which notice kinds may go to / come from a peer.
# Kinds: status_notice, fraud_notice, correction, case_event. Unlisted peers: all kinds.
# [peers.PHL-DFA]
# allow = ["status_notice", "fraud_notice", "correction"]
'''
