"""Google BigQuery through its REST API (google-cloud-bigquery), pages read as Arrow."""

from retl_assets.sources.bigquery.config import BigQueryConfig
from retl_assets.vendors import SourceFacts


def _connect(name, config, root):
    from retl_assets.project import resolve_secret
    from retl_assets.sources.bigquery.source import BigQuerySource

    where = f"sources.{name}"
    return BigQuerySource(
        name, project=config.project, dataset=config.dataset, location=config.location,
        credentials_file=resolve_secret(config.credentials_file, f"{where}.credentials_file"),
        access_token=resolve_secret(config.access_token, f"{where}.access_token"),
        api_endpoint=config.api_endpoint, retry_seconds=config.retry_seconds, root=root)


FACTS = SourceFacts(config=BigQueryConfig, connect=_connect, dialect="bigquery",
                    tested="an emulator of its REST API (answered by DuckDB)",
                    read_only_session=False,
                    change_marker="tables.get lastModifiedTime")
