"""A throwaway PostgreSQL server for the tests, and the store backend parameter.

Tests that take the ``store_backend`` fixture (or ``open_store``) run once per backend
selected with ``--store-backend`` (``sqlite``, ``postgresql`` or ``both``, the
default). For PostgreSQL the harness uses the server named by
``EXCHANGE_NODE_TEST_PG_URL`` (a role allowed to create databases), or else starts one
of its own from Debian's binaries (``/usr/lib/postgresql/<n>/bin``, or ``initdb`` on
``PATH``) in a temporary directory, on 127.0.0.1 and a free port, fsync on, TLS with a
certificate of a CA of its own (``PgServer.ca_file``), stopped at the end of the session. As root it runs the server as the ``postgres`` user (the server
refuses to run as root). Each test gets a database of its own: a schema of one session
database, named in the URL (``options=-csearch_path=...``), which costs a few catalog
rows where a CREATE DATABASE copies megabytes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

ENV_URL = "EXCHANGE_NODE_TEST_PG_URL"
BACKENDS = ("sqlite", "postgresql")

PASSWORD_ROLE = "exn_password"
"""A role that must log in with a password (scram-sha-256), for the tests of
``password_file``/``password_env``; its password is :data:`PASSWORD`."""
PASSWORD = "test-only-password-7f3a"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-backend",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="store backends the store, delivery and API tests run on (default: both)",
    )


def selected_backends(config: pytest.Config) -> tuple[str, ...]:
    chosen = config.getoption("--store-backend")
    return BACKENDS if chosen == "both" else (chosen,)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", selected_backends(metafunc.config), indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def find_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: Debian's versioned directory, or PATH."""
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        versions = sorted(
            (p for p in base.iterdir() if (p / "bin" / "initdb").is_file()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A server the tests may create databases on; ``admin_url`` ends in ``/postgres``."""

    admin_url: str
    data_dir: Path | None = None  # set when the harness runs the server itself
    bin_dir: Path | None = None
    as_user: tuple[str, ...] = ()
    log: Path | None = None
    database: str = ""  # the session's database, made by open_session
    ca_file: Path | None = None  # the CA of the harness's server certificate (TLS)
    _names = itertools.count()

    def url(self, schema: str, user: str | None = None) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        if user is not None:
            scheme, _, rest = base.partition("://")
            rest = rest.split("@", 1)[-1]
            base = f"{scheme}://{user}@{rest}"
        return f"{base}/{self.database}?options=-csearch_path%3D{schema}"

    def open_session(self) -> None:
        self.database = f"exn_tests_{os.getpid()}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.database} TEMPLATE template0")
            if self.data_dir is not None:  # our server has the password role
                conn.execute(f"GRANT ALL ON DATABASE {self.database} TO {PASSWORD_ROLE}")

    def close_session(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")

    def create_database(self) -> str:
        """A new, empty schema: to the store, a database of its own."""
        name = f"t{next(self._names)}"
        base, _, _ = self.admin_url.rpartition("/")
        with psycopg.connect(f"{base}/{self.database}", autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
            if self.data_dir is not None:
                conn.execute(f"GRANT ALL ON SCHEMA {name} TO {PASSWORD_ROLE}")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a test's schema; on the harness's own server they go with it at the end
        of the session instead."""
        if self.data_dir is not None:
            return
        base, _, _ = self.admin_url.rpartition("/")
        with psycopg.connect(f"{base}/{self.database}", autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on the harness's own server (restart tests)."""
        assert self.data_dir is not None and self.bin_dir is not None, "not our server"
        subprocess.run(
            [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
            check=True,
            capture_output=True,
        )


def start_server(root: Path) -> PgServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL is not installed: run `make setup` (installs Debian's postgresql), "
            f"set {ENV_URL} to a server's URL, or pass --store-backend=sqlite",
            pytrace=False,
        )
    as_user: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # The server refuses to run as root: run it as the postgres user.
        as_user = ("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups")
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    port = _free_port()
    run = partial_run(as_user)
    run(
        str(bin_dir / "initdb"), "-D", str(data), "-U", "exn", "--auth=trust",
        "-E", "UTF8", "--no-locale", "--no-instructions", "--no-sync",
    )  # fmt: skip
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1/32 trust\n"
    )
    ca_file = server_certificate(root, data, owner="postgres" if as_user else None)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{root}'\nfsync = on\nsynchronous_commit = on\n"
            "max_connections = 300\nshared_buffers = 32MB\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        )
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start")
    server = PgServer(f"postgresql://exn@127.0.0.1:{port}/postgres", data, bin_dir, as_user, log)
    server.ca_file = ca_file
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
    return server


def server_certificate(root: Path, data: Path, owner: str | None) -> Path:
    """A CA and a certificate for 127.0.0.1 signed by it, for the server's TLS; the CA's
    certificate is returned for clients' ``sslrootcert``."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exchange-node test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        ), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (data / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (data / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(data / "server.key", 0o600)
    if owner is not None:
        for name in ("server.crt", "server.key"):
            shutil.chown(data / name, owner, owner)
    ca_file = root / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    os.chmod(ca_file, 0o644)
    return ca_file


def partial_run(as_user: tuple[str, ...]):
    def run(*cmd: str) -> None:
        result = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr or result.stdout}")

    return run


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get(ENV_URL)
    if url:
        server = PgServer(url)
        server.open_session()
        try:
            yield server
        finally:
            server.close_session()
        return
    root = Path(tempfile.mkdtemp(prefix="exn-pg-"))
    server = start_server(root)
    server.open_session()
    try:
        yield server
    finally:
        try:
            server.pg_ctl("stop", "-m", "immediate", "-w")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A URL of a new, empty database of its own for this test."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def open_store(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """``await open_store(**kw)``: a store on this test's backend (SQLite file in
    ``tmp_path``, or a database of its own); the same database on every call."""
    from exchange_node.store.postgresql import PostgresStore
    from exchange_node.store.sqlite import SqliteStore

    url = request.getfixturevalue("pg_url") if store_backend == "postgresql" else None

    async def open_it(**kw):
        if url is not None:
            return await PostgresStore.open(url, **kw)
        return await SqliteStore.open(tmp_path / "node.db", **kw)

    return open_it


@pytest.fixture
def node_store_backend(store_backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Nodes made by tests/node_helpers.py keep their store on this test's backend:
    a module opts in with ``pytestmark = pytest.mark.usefixtures("node_store_backend")``."""
    from tests import node_helpers

    if store_backend == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        node_helpers.NEW_DATABASE = lambda: server.url(server.create_database())
    try:
        yield store_backend
    finally:
        node_helpers.NEW_DATABASE = None


def stored_bytes(store) -> bytes:
    """Every value of every table of a PostgreSQL store, as bytes: what a test that
    looks for plaintext in a SQLite file looks through on a server."""
    tables = store._read(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() ORDER BY 1"
    )
    out = []
    for (table,) in tables:
        for row in store._read(f"SELECT * FROM {table}"):
            out += [v if isinstance(v, bytes) else str(v).encode() for v in row]
    return b"\n".join(out)
