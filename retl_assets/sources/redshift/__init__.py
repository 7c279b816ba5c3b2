"""Amazon Redshift over the PostgreSQL wire protocol (psycopg 3), in a read-only session,
streamed with a cursor (DECLARE / FETCH): Redshift has no COPY TO STDOUT for ADBC."""

from retl_assets.sources.redshift.config import RedshiftConfig
from retl_assets.vendors import SourceFacts


def _connect(name, config, root):
    from retl_assets.project import resolve_secret
    from retl_assets.sources.redshift.credentials import IamAuth, PasswordAuth
    from retl_assets.sources.redshift.source import RedshiftSource

    if config.password is not None:
        auth = PasswordAuth(config.user, resolve_secret(config.password,
                                                        f"sources.{name}.password"))
    else:
        auth = IamAuth(cluster_identifier=config.cluster_identifier,
                       workgroup=config.workgroup, db_user=config.db_user,
                       region=config.region, profile=config.aws_profile)
    return RedshiftSource(name, config.host, config.port, config.database, auth,
                          sslmode=config.sslmode, schema=config.schema_)


FACTS = SourceFacts(
    config=RedshiftConfig, connect=_connect, dialect="redshift",
    tested="the PostgreSQL wire protocol against a real PostgreSQL server (no Redshift cluster)",
    read_only_session=True)
