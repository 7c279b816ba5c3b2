"""The throwaway PostgreSQL server starts and serves real ADBC sessions."""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa

from retl_assets_tests.pg_server import PostgresServer, postgres_server  # noqa: F401


def test_select_one(postgres_server: PostgresServer) -> None:
    assert postgres_server.dsn == f"postgresql://retl@127.0.0.1:{postgres_server.port}/warehouse"
    with pg.connect(postgres_server.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1, current_database(), current_user")
        assert cur.fetchone() == (1, "warehouse", "retl")


def test_table_round_trip_as_arrow(postgres_server: PostgresServer) -> None:
    with pg.connect(postgres_server.dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE pg_server_smoke (id BIGINT PRIMARY KEY, email TEXT)")
            cur.executemany(
                "INSERT INTO pg_server_smoke VALUES ($1, $2)",
                [(1, "a@example.com"), (2, "b@example.com")],
            )
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT id, email FROM pg_server_smoke ORDER BY id")
            table = cur.fetch_arrow_table()
    assert table.schema.field("id").type == pa.int64()
    assert table.to_pylist() == [
        {"id": 1, "email": "a@example.com"},
        {"id": 2, "email": "b@example.com"},
    ]
