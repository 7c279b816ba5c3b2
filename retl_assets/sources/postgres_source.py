"""PostgreSQL (and Redshift, same wire protocol) through ADBC, which streams Arrow via COPY."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pyarrow as pa

from retl_assets.errors import SourceError


class PostgresSource:
    def __init__(self, name: str, dsn: str):
        self.name = name
        self._dsn = dsn  # holds the password: never log it

    @classmethod
    def from_fields(cls, name: str, host: str, port: int, user: str | None,
                    password: str | None, database: str) -> PostgresSource:
        auth = quote(user or "", safe="")
        if password:
            auth += ":" + quote(password, safe="")
        at = f"{auth}@" if auth else ""
        return cls(name, f"postgresql://{at}{host}:{port}/{quote(database, safe='')}")

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg

        try:
            con = pg.connect(self._dsn)
        except adbc_driver_manager.Error as e:
            raise SourceError(f"source {self.name!r}: cannot connect: {_clean(e)}") from None
        try:
            cur = con.cursor()
            try:
                cur.execute(sql)
                reader = cur.fetch_record_batch()
            except adbc_driver_manager.Error as e:
                raise SourceError(f"source {self.name!r}: query failed: {_clean(e)}") from None
            yield _normalise(reader)
        finally:
            con.close()


def _normalise(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Give types the driver leaves opaque a real Arrow type: NUMERIC becomes a decimal
    (precision and scale from its typmod; float64 when unconstrained), others their text."""
    fields, casts = [], {}
    for i, f in enumerate(reader.schema):
        if isinstance(f.type, pa.BaseExtensionType) and getattr(f.type, "type_name", "") == "numeric":
            typmod = int((f.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
            target = pa.float64()
            if typmod >= 4 and ((typmod - 4) >> 16) <= 38:
                target = pa.decimal128((typmod - 4) >> 16, (typmod - 4) & 0xFFFF)
            casts[i] = target
        elif isinstance(f.type, pa.BaseExtensionType) and f.type.extension_name == "arrow.opaque":
            casts[i] = f.type.storage_type
        fields.append(pa.field(f.name, casts.get(i, f.type), f.nullable))
    if not casts:
        return reader
    schema = pa.schema(fields)

    def batches():
        for batch in reader:
            cols = [c.storage.cast(casts[i]) if i in casts else c
                    for i, c in enumerate(batch.columns)]
            yield pa.RecordBatch.from_arrays(cols, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _clean(error: Exception) -> str:
    # The driver's message is useful; its first line is enough and never holds the DSN.
    return str(error).strip().splitlines()[0]
