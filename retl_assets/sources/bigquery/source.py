"""Google BigQuery through its REST API: jobs.query, then the result's pages as Arrow.

The client is google.cloud.bigquery.Client, built here rather than through dagster-gcp's
BigQueryResource: the resource takes neither an API endpoint (private endpoints, the
emulator) nor a credentials object, and passes a key only by writing it to a temporary file
named in GOOGLE_APPLICATION_CREDENTIALS, which changes the whole process's environment.

Rows come page by page (jobs.getQueryResults, at most 10 MB each) through
`RowIterator.to_arrow_iterable()` without the Storage Read API, and are re-batched to at most
BATCH_ROWS rows: memory holds one page, never the whole result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from retl_assets.errors import SourceError
from retl_assets.sources.base import Check, probe_sql, rebatch

SCOPES = ("https://www.googleapis.com/auth/bigquery",)
DEFAULT_ENDPOINT = "https://bigquery.googleapis.com"


def _static_token_credentials(token: str):
    """Credentials that send one access token as is. Refreshing is a no-op, so a refused
    token surfaces as the server's 401 (Unauthorized) rather than as a failed refresh."""
    import google.auth.credentials

    class StaticToken(google.auth.credentials.Credentials):
        def __init__(self, value: str) -> None:
            super().__init__()
            self.token = value

        def refresh(self, request: Any) -> None:
            pass

    return StaticToken(token)


def _no_credentials():
    """No credentials at all (an emulator, a test endpoint); a 401 is then the answer."""
    import google.auth.credentials

    class NoCredentials(google.auth.credentials.AnonymousCredentials):
        def refresh(self, request: Any) -> None:
            pass

    return NoCredentials()


class BigQuerySource:
    dialect = "bigquery"

    def __init__(self, name: str, *, project: str, dataset: str | None = None,
                 location: str | None = None, credentials_file: str | None = None,
                 access_token: str | None = None, api_endpoint: str | None = None,
                 retry_seconds: float = 120, root: Path | None = None) -> None:
        self.name = name
        self.project = project
        self.dataset = dataset
        self.location = location
        self.api_endpoint = api_endpoint
        self.retry_seconds = retry_seconds
        self._credentials_file = credentials_file  # a path, or the key's JSON: never log it
        self._access_token = access_token  # never log it
        self._root = root or Path.cwd()
        self.anonymous = False  # no credentials were found (only with api_endpoint)

    @property
    def endpoint(self) -> str:
        return self.api_endpoint or DEFAULT_ENDPOINT

    # -- the client ---------------------------------------------------------------------------

    def _credentials(self):
        import google.auth
        import google.auth.credentials
        import google.auth.exceptions

        if self._access_token:
            return _static_token_credentials(self._access_token)
        if self._credentials_file:
            return self._key_file(self._credentials_file.strip())
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
            return credentials
        except google.auth.exceptions.DefaultCredentialsError:
            if self.api_endpoint:  # an emulator or a test endpoint may need none
                self.anonymous = True
                return _no_credentials()
            raise

    def _key_file(self, value: str):
        """A service account's key (or a user's authorized_user file), by path or as JSON.
        Each type is loaded by its own class, so a file can only be what it says it is."""
        from google.oauth2 import credentials as user
        from google.oauth2 import service_account

        if not value.startswith("{"):
            path = Path(value).expanduser()
            if not path.is_absolute():
                path = self._root / path
            if not path.is_file():
                raise SourceError(f"source {self.name!r}: credentials_file {path} does not exist")
            value = path.read_text()
        try:
            info = json.loads(value)
            kind = info.get("type")
        except (ValueError, AttributeError):
            raise SourceError(f"source {self.name!r}: credentials_file is not a JSON key "
                              "file") from None
        try:
            if kind == "service_account":
                return service_account.Credentials.from_service_account_info(
                    info, scopes=SCOPES)
            if kind == "authorized_user":
                return user.Credentials.from_authorized_user_info(info, scopes=SCOPES)
        except (ValueError, KeyError):
            raise SourceError(f"source {self.name!r}: credentials_file is not a complete "
                              f"{kind} key") from None
        raise SourceError(f"source {self.name!r}: credentials_file of type {kind!r} is not "
                          "supported (service_account or authorized_user; for others, "
                          "use Application Default Credentials)")

    def _client(self):
        from google.cloud import bigquery

        options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
        job_config = bigquery.QueryJobConfig(use_legacy_sql=False)
        if self.dataset:
            job_config.default_dataset = (self.dataset if "." in self.dataset
                                          else f"{self.project}.{self.dataset}")
        return bigquery.Client(project=self.project, credentials=self._credentials(),
                               location=self.location, client_options=options,
                               default_query_job_config=job_config)

    def _retries(self):
        from google.cloud.bigquery import DEFAULT_RETRY
        from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

        return (DEFAULT_RETRY.with_timeout(self.retry_seconds),
                DEFAULT_JOB_RETRY.with_timeout(self.retry_seconds))

    def _query(self, client, sql: str):
        retry, job_retry = self._retries()
        return client.query_and_wait(sql, retry=retry, job_retry=job_retry)

    # -- Source -------------------------------------------------------------------------------

    @contextmanager
    def stream(self, sql: str) -> Iterator[pa.RecordBatchReader]:
        client = None
        try:
            try:
                client = self._client()
                rows = self._query(client, sql)
                batches = iter(rows.to_arrow_iterable(bqstorage_client=None))
                first = next(batches, None)
            except Exception as e:  # noqa: BLE001 - narrowed by _explain: only the API's and auth's errors
                raise self._failed(e) from None
            schema = first.schema if first is not None else pa.schema([])

            def pages() -> Iterator[pa.RecordBatch]:
                if first is not None:
                    yield first
                while True:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        return
                    except Exception as e:  # noqa: BLE001 - narrowed by _explain
                        raise self._failed(e) from None
                    yield batch

            yield rebatch(pa.RecordBatchReader.from_batches(schema, pages()))
        finally:
            if client is not None:
                client.close()

    def _failed(self, error: Exception) -> Exception:
        meaning = _explain(error, self.endpoint, self.anonymous)
        if meaning is None:
            return error
        return SourceError(f"source {self.name!r}: query failed: {meaning}")

    def check(self, tables: Iterable[str]) -> Check:
        from google.api_core import exceptions as api

        def answer(ok: bool, text: str) -> Check:
            return Check(ok, f"source {self.name!r} (BigQuery project {self.project}): {text}")

        tables = list(dict.fromkeys(tables))
        client = None
        try:
            retry, _ = self._retries()
            try:
                client = self._client()
                self._query(client, "SELECT 1")
            except api.NotFound:
                return answer(False, f"no such project {self.project}")
            except api.Forbidden as e:
                if _reason(e) in QUOTA_REASONS:
                    return answer(False, f"quota exceeded: {_first_line(e)}")
                return answer(False, f"the credentials may not run queries in project "
                              f"{self.project} (bigquery.jobs.create): {_first_line(e)}")
            except Exception as e:
                meaning = _explain(e, self.endpoint, self.anonymous)
                if meaning is None:
                    raise
                return answer(False, meaning)
            if self.dataset:
                dataset = (self.dataset if "." in self.dataset
                           else f"{self.project}.{self.dataset}")
                try:
                    client.get_dataset(dataset, retry=retry)
                except api.NotFound:
                    return answer(False, f"no such dataset {dataset}")
                except api.Forbidden:
                    return answer(False, f"the credentials may not see dataset {dataset}")
                except Exception as e:
                    meaning = _explain(e, self.endpoint, self.anonymous)
                    if meaning is None:
                        raise
                    return answer(False, meaning)
            for table in tables:
                try:
                    self._query(client, probe_sql(table))
                except api.Forbidden as e:
                    if _reason(e) in QUOTA_REASONS:
                        return answer(False, f"quota exceeded: {_first_line(e)}")
                    return answer(False, f"the credentials lack a grant to read table {table} "
                                  "(bigquery.tables.getData)")
                except api.NotFound:
                    dataset = self._dataset_of(table)
                    if dataset is not None:
                        try:
                            client.get_dataset(dataset, retry=retry)
                        except api.NotFound:
                            return answer(False, f"no such dataset {dataset} "
                                          f"(for table {table})")
                        except Exception:  # noqa: BLE001, S110 - the table's answer stands
                            pass
                    return answer(False, f"no such table {table} (or the credentials cannot "
                                  "see it)")
                except api.BadRequest as e:
                    return answer(False, f"cannot read table {table}: {_first_line(e)}")
                except Exception as e:
                    meaning = _explain(e, self.endpoint, self.anonymous)
                    if meaning is None:
                        raise
                    return answer(False, meaning)
            where = f"dataset {self.dataset}, " if self.dataset else ""
            return answer(True, f"reachable at {self.endpoint}, {where}"
                          f"{len(tables)} table(s) readable")
        finally:
            if client is not None:
                client.close()

    def version(self, tables: Iterable[str]) -> dict[str, Any]:
        """When each table last changed (tables.get's lastModifiedTime, a UTC datetime), by
        name as given: what the model's `source_changed` sensor compares between ticks.
        Raises SourceError."""
        client = None
        try:
            client = self._client()
            retry, _ = self._retries()
            return {table: client.get_table(self._table_id(table), retry=retry).modified
                    for table in tables}
        except Exception as e:
            meaning = _explain(e, self.endpoint, self.anonymous)
            if meaning is None:
                raise
            raise SourceError(f"source {self.name!r}: cannot read table facts: {meaning}") \
                from None
        finally:
            if client is not None:
                client.close()

    def _table_id(self, table: str) -> str:
        """`project.dataset.table` of a name as the models spell it."""
        from sqlglot import exp

        ref = exp.to_table(table, dialect="bigquery")
        dataset = ref.db or (self.dataset.split(".")[-1] if self.dataset else "")
        project = ref.catalog or (self.dataset.split(".")[0] if self.dataset and "."
                                  in self.dataset and not ref.db else self.project)
        if not dataset:
            raise SourceError(f"source {self.name!r}: table {table} names no dataset, and "
                              "the source has no default dataset")
        return f"{project}.{dataset}.{ref.name}"

    def _dataset_of(self, table: str) -> str | None:
        """`project.dataset` of a table name as the models spell it, for the message."""
        from sqlglot import exp

        try:
            ref = exp.to_table(table, dialect="bigquery")
        except Exception:  # noqa: BLE001 - an unparsable name: no dataset to name
            return None
        if ref.db:
            return f"{ref.catalog or self.project}.{ref.db}"
        return None


QUOTA_REASONS = {"rateLimitExceeded", "quotaExceeded"}


def _reason(error: Exception) -> str | None:
    try:
        return error.errors[0]["reason"]  # type: ignore[attr-defined]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _first_line(error: Exception) -> str:
    """The warehouse's own first line: BigQuery's error message, without the request's
    method and URL that the client puts before it."""
    text = None
    errors = getattr(error, "errors", None)
    if errors and isinstance(errors[0], dict):
        text = errors[0].get("message")
    text = text or getattr(error, "message", None) or str(error)
    return (str(text).strip().splitlines() or [type(error).__name__])[0]


def _explain(error: Exception, endpoint: str, anonymous: bool = False) -> str | None:
    """What an error of the client, its transport or its credentials means, by class; None
    for anything else (a bug, which should surface as itself)."""
    import google.auth.exceptions as auth
    import requests
    from google.api_core import exceptions as api

    while isinstance(error, api.RetryError) and error.cause is not None:
        error = error.cause  # the last failure behind a retry's deadline (retries nest)
    if isinstance(error, SourceError):
        return error.description.split(": ", 1)[-1]
    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          auth.TransportError, ConnectionError)):
        return f"cannot reach {endpoint}"
    if isinstance(error, auth.DefaultCredentialsError):
        return ("no credentials: set credentials_file (or access_token), or configure "
                "Application Default Credentials")
    if isinstance(error, auth.RefreshError | api.Unauthorized):
        if anonymous:
            return ("the server asks for credentials and none were found: set "
                    "credentials_file or access_token, or configure Application Default "
                    "Credentials")
        return "the server refused the credentials"
    if isinstance(error, auth.GoogleAuthError):
        return f"the credentials cannot be used: {type(error).__name__}"
    if isinstance(error, api.GoogleAPICallError):
        return _first_line(error)
    if isinstance(error, api.GoogleAPIError):
        return _first_line(error)
    return None
