"""PostgreSQL through ADBC, which streams Arrow via COPY, in a read-only session."""

from retl_assets.sources.postgres.config import PostgresConfig
from retl_assets.vendors import SourceFacts


def _connect(name, config, root):
    from retl_assets.project import resolve_secret
    from retl_assets.sources.postgres.source import PostgresSource

    where = f"sources.{name}"
    dsn = resolve_secret(config.dsn, f"{where}.dsn")
    if dsn:
        return PostgresSource(name, dsn)
    return PostgresSource.from_fields(
        name, config.host, config.port, config.user,
        resolve_secret(config.password, f"{where}.password"), config.database or "")


FACTS = SourceFacts(config=PostgresConfig, connect=_connect, dialect="postgres",
                    tested="a real engine (a PostgreSQL server the tests start)",
                    read_only_session=True, in_warehouse=True)
