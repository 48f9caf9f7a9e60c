"""What only the PostgreSQL store has: its configuration (the password never in the
file), its schema bookkeeping, and a node's audit commands on the server.

The behaviour both backends share is specified once, in the other store, delivery and
API tests, which run on each (tests/pg_harness.py).
"""

from __future__ import annotations

import asyncio
import os

import psycopg
import pytest

from exchange_node.config import ConfigError, load_config
from exchange_node.errors import ExchangeError
from exchange_node.node import open_store
from exchange_node.store.migrations import SCHEMA_VERSION
from exchange_node.store.postgresql import PostgresStore, redact, translate
from exchange_node.store.records import OutboxItem
from tests import node_helpers
from tests.node_helpers import fraud_notice, make_net, now_ms, run_cli, settled, wait_for
from tests.pg_harness import PASSWORD, PASSWORD_ROLE, selected_backends, server_certificate

JPN, PHL = "JPN-ISA", "PHL-DFA"


@pytest.fixture(autouse=True)
def _postgresql_selected(request):
    if "postgresql" not in selected_backends(request.config):
        pytest.skip("PostgreSQL is not among the selected --store-backend")


def config_with(tmp_path, store: str):
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nid = "JPN-ISA"\ncountry = "JPN"\n\n[store]\n{store}\n')
    return path


def test_placeholders_become_psycopgs_and_a_literal_percent_survives():
    assert translate("SELECT 1 WHERE a = ? AND b LIKE '5%'") == (
        "SELECT 1 WHERE a = %s AND b LIKE '5%%'"
    )


def test_a_password_in_the_url_is_refused_without_being_repeated(tmp_path):
    path = config_with(tmp_path, 'url = "postgresql://node:s3cret-pw@db.example/exchange"')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "password_file" in str(err.value) and "s3cret-pw" not in str(err.value)
    assert redact("postgresql://node:s3cret-pw@db:5432/x") == "postgresql://node@db:5432/x"


def test_a_url_that_is_not_postgresql_is_refused_with_the_expected_form(tmp_path):
    with pytest.raises(ConfigError, match=r"\[store\] url: expected a URL like postgresql://"):
        load_config(config_with(tmp_path, 'url = "mysql://db/exchange"'))


def test_a_missing_password_file_or_variable_is_named(tmp_path, monkeypatch):
    cfg = load_config(config_with(tmp_path, 'url = "postgresql://n@db/x"\npassword_file = "db.pw"'))
    with pytest.raises(ConfigError, match="password_file: cannot read"):
        cfg.store_password  # noqa: B018
    monkeypatch.delenv("EXN_TEST_DB_PW", raising=False)
    cfg = load_config(
        config_with(tmp_path, 'url = "postgresql://n@db/x"\npassword_env = "EXN_TEST_DB_PW"')
    )
    with pytest.raises(ConfigError, match="EXN_TEST_DB_PW is not set"):
        cfg.store_password  # noqa: B018


@pytest.mark.parametrize("source", ["file", "env"])
async def test_the_password_comes_from_the_file_or_variable_the_config_names(
    tmp_path, pg_server, monkeypatch, source
):
    if pg_server.data_dir is None:
        pytest.skip("needs the harness's own server (its password role)")
    schema = pg_server.create_database()
    url = pg_server.url(schema, user=PASSWORD_ROLE)
    if source == "file":
        (tmp_path / "db.pw").write_text(PASSWORD + "\n")
        os.chmod(tmp_path / "db.pw", 0o600)
        line = 'password_file = "db.pw"'
    else:
        monkeypatch.setenv("EXN_TEST_DB_PW", PASSWORD)
        line = 'password_env = "EXN_TEST_DB_PW"'
    cfg = load_config(config_with(tmp_path, f'url = "{url}"\n{line}'))
    store = await open_store(cfg)
    try:
        await store.set_meta("k", b"v")
        assert store.get_meta("k") == b"v"
    finally:
        await store.close()
    # Without it, the server refuses the connection: the password is really checked.
    with pytest.raises(ExchangeError) as err:
        await PostgresStore.open(url)
    assert err.value.code == "store_unavailable"


async def test_a_database_of_another_application_is_refused_and_left_alone(pg_server):
    url = pg_server.url(pg_server.create_database())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id BIGINT)")
    with pytest.raises(ExchangeError) as err:
        await PostgresStore.open(url)
    assert err.value.code == "store_not_ours"
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    assert tables == [("invoices",)]


async def test_a_schema_newer_than_this_release_is_refused(pg_url):
    await (await PostgresStore.open(pg_url)).close()  # created at this version, then
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE exchange_node_schema SET version = version + 1")
    with pytest.raises(ExchangeError) as err:
        await PostgresStore.open(pg_url)
    assert err.value.code == "store_schema_too_new"


async def test_processes_opening_a_new_database_at_once_migrate_it_once(pg_url):
    stores = await asyncio.gather(*(PostgresStore.open(pg_url) for _ in range(3)))
    try:
        infos = [await s.info() for s in stores]
        assert {i.schema_version for i in infos} == {SCHEMA_VERSION}
        assert stores[0]._read("SELECT count(*) FROM exchange_node_schema")[0][0] == 1
    finally:
        for s in stores:
            await s.close()


async def test_the_audit_commands_read_the_log_on_the_server(tmp_path, pg_server, capsys):
    node_helpers.NEW_DATABASE = lambda: pg_server.url(pg_server.create_database())
    try:
        net = await make_net(tmp_path, [JPN, PHL])
    finally:
        node_helpers.NEW_DATABASE = None
    jpn = await net[JPN].open()
    try:
        await jpn.submit(fraud_notice(), [PHL])
        await jpn.sign_checkpoint()
    finally:
        await net.stop_all()
    config = ["--config", str(net[JPN].config_path)]
    capsys.readouterr()
    assert await asyncio.to_thread(run_cli, [*config, "audit", "verify"]) == 0
    assert await asyncio.to_thread(run_cli, [*config, "audit", "show", "--kind",
                                             "notice.submitted"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "OK" in out and "notice.submitted" in out
    assert not (net[JPN].data / "node.sqlite").exists()  # nothing went to a file


async def test_a_sqlite_node_moved_to_postgresql_keeps_its_data_and_its_verified_audit_log(
    tmp_path, pg_server, capsys
):
    net = await make_net(tmp_path, [JPN, PHL])  # both on SQLite
    phl = await net[PHL].start()
    jpn = await net[JPN].start()
    sent = [(await jpn.submit(fraud_notice(f"P{i:07d}"), [PHL]))[0] for i in range(5)]
    await wait_for(lambda: settled(jpn.store, [s.message_id for s in sent]), what="delivery")
    token = await jpn.store.create_token("desk", "document_officer", "x" * 32, now_ms())
    await jpn.sign_checkpoint()
    root_before = jpn.audit.root()
    await net[JPN].stop()

    url = pg_server.url(pg_server.create_database())
    config = ["--config", str(net[JPN].config_path)]
    capsys.readouterr()
    args = [*config, "store", "migrate-to-postgresql", "--url", url]
    assert await asyncio.to_thread(run_cli, args) == 0
    out = capsys.readouterr().out
    assert "verified on PostgreSQL" in out and f'url = "{url}"' in out
    # Into a database that holds a node's data already: refused, nothing changed.
    assert await asyncio.to_thread(run_cli, args) != 0
    assert "store_target_not_empty" in capsys.readouterr().err

    with net[JPN].config_path.open("a") as f:
        f.write(f'\n[store]\nurl = "{url}"\n')
    jpn = await net[JPN].start()
    assert jpn.config.store.url and isinstance(jpn.store, PostgresStore)
    assert [jpn.store.message_status(s.message_id)[0].state for s in sent] == ["delivered"] * 5
    assert jpn.store.find_active_token(token.secret_hash) == token
    assert {p.node_id for p in jpn.store.list_peers()} == {PHL}
    assert jpn.audit.root(tree_size=_size_of(root_before, jpn)) == root_before
    # New rows continue after the copied ids, and delivery goes on from the server.
    (more,) = await jpn.submit(fraud_notice("P9999999"), [PHL])
    assert more.outbox_id > max(s.outbox_id for s in sent)
    await wait_for(lambda: settled(jpn.store, [more.message_id]), what="delivery after the move")
    assert phl.store.get_inbox(JPN, more.message_id) is not None
    await net.stop_all()


def _size_of(root: bytes, node) -> int:
    """The tree size whose root is ``root`` (the log grew since: start-up leaves)."""
    for size in range(node.audit.size, 0, -1):
        if node.audit.root(size) == root:
            return size
    raise AssertionError("the root before the move is not a prefix of the log")


async def test_a_peers_queue_is_leased_to_one_process_until_released_or_expired(pg_url):
    a, b = await PostgresStore.open(pg_url), await PostgresStore.open(pg_url)
    try:
        assert await a.claim_delivery(PHL, "proc-a", 60)
        assert not await b.claim_delivery(PHL, "proc-b", 60)  # held and live
        assert await a.claim_delivery(PHL, "proc-a", 60)  # renewed by its holder
        assert await b.claim_delivery(JPN, "proc-b", 60)  # another peer: free
        await a.release_delivery([PHL], "proc-a")
        assert await b.claim_delivery(PHL, "proc-b", 0.05)  # released: taken at once
        await wait_for(lambda: a.claim_delivery(PHL, "proc-a", 60), what="the expired lease")
        assert not await b.claim_delivery(PHL, "proc-b", 60)
    finally:
        await a.close()
        await b.close()


async def test_changes_made_by_another_process_are_notified(pg_url):
    listener, other = await PostgresStore.open(pg_url), await PostgresStore.open(pg_url)
    heard: list[str] = []
    stop = listener.listen(heard.append)
    try:
        # The listening connection is up once a first notification arrives.
        await wait_for(_notified(other, heard, "peers"), what="the listener")
        await other.enqueue([OutboxItem(PHL, b"\x01" * 16, b"sealed", b"payload", 1)])
        await other.create_token("desk", "document_officer", "y" * 32, 1)
        await wait_for(lambda: {"outbox:PHL-DFA", "tokens"} <= set(heard), what="notifications")
    finally:
        stop()
        await listener.close()
        await other.close()


def _notified(store, heard: list[str], what: str):
    async def check() -> bool:
        if what not in heard:
            await store.upsert_peer(PHL, b"card", "fp", at=now_ms())
        return what in heard

    return check


async def test_the_audit_log_records_its_public_key_on_the_server_as_raw_bytes(pg_url):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from exchange_node.audit.log import AuditLog

    key = Ed25519PrivateKey.generate()
    store = await PostgresStore.open(pg_url)
    try:
        with AuditLog(store.path, node_id=JPN, signing_key=key,
                      connection=store.audit_connection()) as log:  # fmt: skip
            log.sign_checkpoint(now_ms())
            raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            assert log.stored_public_key() == raw
            assert log.verify(key.public_key()).ok
    finally:
        await store.close()


async def test_a_deadlock_between_two_processes_is_retried_and_both_commit(pg_url):
    import threading

    a, b = await PostgresStore.open(pg_url), await PostgresStore.open(pg_url)
    await a.set_meta("k1", b"0")
    await a.set_meta("k2", b"0")
    b_holds_k2 = threading.Event()

    def work_a(tx):  # k1 then k2
        tx.get_meta("k1", lock=True)
        b_holds_k2.wait(10)
        tx.get_meta("k2", lock=True)
        tx.set_meta("k1", b"a")
        return "a"

    def work_b(tx):  # k2 then k1: the opposite order
        tx.get_meta("k2", lock=True)
        b_holds_k2.set()
        tx.get_meta("k1", lock=True)
        tx.set_meta("k2", b"b")
        return "b"

    try:
        done = await asyncio.gather(
            a.transaction(work_a, label="test"), b.transaction(work_b, label="test")
        )
        assert done == ["a", "b"]
        assert (a.get_meta("k1"), a.get_meta("k2")) == (b"a", b"b")
    finally:
        await a.close()
        await b.close()


async def test_tls_to_the_database_is_verified_when_the_url_asks_for_it(pg_server, tmp_path):
    if pg_server.ca_file is None:
        pytest.skip("needs the harness's own server (its certificate)")
    url = pg_server.url(pg_server.create_database())
    verified = f"{url}&sslmode=verify-full&sslrootcert={pg_server.ca_file}"
    store = await PostgresStore.open(verified)
    try:
        assert store._read("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [(True,)]
    finally:
        await store.close()
    # Another CA than the server's: the connection is refused, nothing is opened.
    (tmp_path / "d").mkdir()
    other = server_certificate(tmp_path, tmp_path / "d", owner=None)
    with pytest.raises(ExchangeError) as err:
        await PostgresStore.open(f"{url}&sslmode=verify-full&sslrootcert={other}")
    assert err.value.code == "store_unavailable" and "SSL" in str(err.value)
