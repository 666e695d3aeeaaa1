"""The PostgreSQL fixture (tests/pgfixture.py) that the service's database tests stand on:
a real server that keeps its data across a stop and a start, refuses connections while
stopped, listens on 127.0.0.1 only, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

if TYPE_CHECKING:  # imported by pytest as a plugin, so that its asserts are rewritten
    from pgfixture import PostgresCluster, PostgresFactory

# The fixtures postgres, postgres_factory and postgres_url, registered once for the session.
pytest_plugins = ["pgfixture"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_cluster_keeps_its_data_across_a_stop_and_a_start(postgres: PostgresCluster) -> None:
    assert postgres.url == f"postgresql+psycopg://flowray@127.0.0.1:{postgres.port}/flowray"
    engine = sqlalchemy.create_engine(postgres.url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE runs (id text PRIMARY KEY, status text)"))
            conn.execute(sqlalchemy.text("INSERT INTO runs VALUES ('r-1', 'success')"))
        postgres.stop()
        engine.dispose()  # the pooled connection died with the server
        with pytest.raises(OperationalError) as refused:
            engine.connect()
        assert f'connection to server at "127.0.0.1", port {postgres.port} failed: ' \
               f"Connection refused" in str(refused.value)
        postgres.start()
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT id, status FROM runs")).all()
        assert [tuple(r) for r in rows] == [("r-1", "success")]
    finally:
        engine.dispose()


def test_it_listens_on_127_0_0_1_only_and_trusts_local_connections_only(
        postgres: PostgresCluster) -> None:
    engine = sqlalchemy.create_engine(postgres.url)
    try:
        with engine.connect() as conn:
            listen = conn.execute(sqlalchemy.text("SHOW listen_addresses")).scalar()
            rules = conn.execute(sqlalchemy.text(
                "SELECT type, address, auth_method FROM pg_hba_file_rules "
                "ORDER BY line_number")).all()
            sockets = conn.execute(sqlalchemy.text("SHOW unix_socket_directories")).scalar()
    finally:
        engine.dispose()
    assert listen == "127.0.0.1"
    assert [tuple(r) for r in rules] == [("local", None, "trust"),
                                         ("host", "127.0.0.1", "trust")]
    assert sockets == str(postgres.sockets)
    assert postgres.sockets.is_relative_to(postgres.root)
    if os.geteuid() == 0:  # PostgreSQL refuses root: its server runs as the postgres user
        pid = postgres.postmaster_pid()
        assert pid is not None
        uid = Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0]
        assert int(uid) == postgres.root.stat().st_uid != 0


def test_a_closed_cluster_leaves_no_process_and_no_folder(
        postgres_factory: PostgresFactory) -> None:
    cluster = postgres_factory()
    pid = cluster.postmaster_pid()
    assert pid is not None and _alive(pid)
    cluster.close()
    assert not _alive(pid)
    assert not cluster.root.exists()
    cluster.close()  # twice is harmless


def test_postgres_url_is_a_new_empty_database_of_the_shared_cluster(
        postgres_url: str, postgres_factory: PostgresFactory) -> None:
    other = postgres_factory.new_database()
    assert other != postgres_url
    assert other.rsplit("/", 1)[0] == postgres_url.rsplit("/", 1)[0]  # the same server
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = 'public'")).scalar()
            conn.execute(sqlalchemy.text("CREATE TABLE t (x int)"))
    finally:
        engine.dispose()
    assert tables == 0
