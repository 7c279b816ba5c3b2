"""Snowflake through its Python connector (opened by dagster-snowflake's resource), which
streams the result's Arrow chunks. Snowflake has no read-only session: grant the role only
SELECT (and USAGE on the warehouse, database and schema)."""

from retl_assets.sources.snowflake.config import SnowflakeConfig
from retl_assets.vendors import SourceFacts


def _connect(name, config, root):
    from retl_assets.project import resolve_secret
    from retl_assets.sources.snowflake.source import Login, SnowflakeSource

    where = f"sources.{name}"
    key_path = config.private_key_path
    login = Login(
        password=resolve_secret(config.password, f"{where}.password"),
        private_key=resolve_secret(config.private_key, f"{where}.private_key"),
        private_key_path=str((root / key_path).resolve()) if key_path else None,
        passphrase=resolve_secret(config.private_key_passphrase,
                                  f"{where}.private_key_passphrase"),
    )
    return SnowflakeSource(name, config, login)


FACTS = SourceFacts(config=SnowflakeConfig, connect=_connect, dialect="snowflake",
                    tested="an emulator of its engine (fakesnow, in process and over HTTP)",
                    read_only_session=False, in_warehouse=True,
                    change_marker="SYSTEM$LAST_CHANGE_COMMIT_TIME")
