"""Mixpanel: user profiles through /engage, events through /import.

/engage takes a JSON array of up to 2,000 updates `{$token, $distinct_id, $set | $delete}`;
the project token in each update is its only credential. It always answers 200: with
`verbose=1` a `{status: 1 | 0, error}` object, where 1 means at least one update was valid,
so retl checks every update before sending and a 0 refuses the whole batch (the engine
splits it to find the bad one).

/import takes up to 2,000 events and 10 MB a request, each with `event`, `properties.time`,
`properties.distinct_id` and `properties.$insert_id` (retl's idempotency key, Mixpanel's
dedup key), over HTTP Basic: a service account with `project_id`, or the project token as
user name. With `strict=1` a 400 lists `failed_records` while the valid events were still
imported: a partial success. 429 comes without Retry-After; Mixpanel asks for exponential
backoff from 2 s up to 60 s with 1-5 s of jitter. Rate: 2 GB of JSON a minute, about 30k
events a second, per project.
"""

from __future__ import annotations

import base64
import json
import random

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    Record,
    blank,
    first_problem,
    json_batch,
    json_body,
    raise_for_status,
)
from retl_assets.destinations.mixpanel.config import EVENTS_PER_MINUTE, MixpanelConfig
from retl_assets.errors import AuthError, ProjectError, RateLimited, RefusedRequest
from retl_assets.mapping import Column, Literal, Raw, Rules, Tree
from retl_assets.mapping.values import epoch_sql, sql_of
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID, KEYTEXT, MSGID

HOSTS = {  # region -> (ingestion API, app API)
    "us": ("https://api.mixpanel.com", "https://mixpanel.com"),
    "eu": ("https://api-eu.mixpanel.com", "https://eu.mixpanel.com"),
    "in": ("https://api-in.mixpanel.com", "https://in.mixpanel.com"),
}
ACTIONS = {"mixpanel": ("profile", "track", MIRROR)}
MAX_RECORDS = 2000  # events per /import request, updates per /engage request
REQUEST_BYTES = 10 * 1000 * 1000  # /import: 10 MB uncompressed (taken as decimal MB: safe)
RECORD_BYTES = 1000 * 1000  # an event, or a profile update, under 1 MB
TOKEN_ROOM = 80  # bytes retl adds to each /engage update ("$token": "...") after the cut
BYTES_PER_MINUTE = 2 * 1024 ** 3  # of uncompressed JSON, over a rolling minute, per project
BACKOFF_START_S, BACKOFF_CAP_S = 2.0, 60.0

SET, DELETE, IMPORT = "set", "delete", "import"
PROFILE_TOP = frozenset({"$distinct_id", "$set", "$ignore_alias", "$ip", "$time",
                         "$latitude", "$longitude"})
EVENT_TOP = frozenset({"event", "properties"})


class MixpanelDestination:
    def __init__(self, name: str, token: str, base_url: str | None = None, *,
                 region: str = "us", project_id: str | None = None,
                 service_account: tuple[str, str] | None = None,
                 rate_limit: tuple[int, float] = (EVENTS_PER_MINUTE, 60.0),
                 max_concurrency: int | None = None, batch_size: int | None = None):
        self.name = name
        api, app = HOSTS[region]
        self.api_url = (base_url or api).rstrip("/")
        self.app_url = (base_url or app).rstrip("/")
        self.project_id = project_id
        self.has_service_account = service_account is not None
        self._token_json = json.dumps(token)
        user, secret = service_account or (token, "")
        # Secrets live only inside header values; repr() never shows them.
        self._import_auth = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        records = min(batch_size or MAX_RECORDS, MAX_RECORDS)
        self.capabilities = Capabilities(
            records_per_request=records,
            bytes_per_request=REQUEST_BYTES - records * TOKEN_ROOM,
            bytes_per_record=RECORD_BYTES,
            # Mixpanel: "10-20 concurrent clients sending 2K events per batch".
            max_concurrency=max_concurrency or 10,
            # The limit is in events (and bytes); the engine limits requests, so requests a
            # window = events a window / events a request, over a window a little longer
            # than the vendor's so that queueing on the way never tips its window over.
            rate_limit=(max(1, rate_limit[0] // records), rate_limit[1] * 1.02 + 0.25),
            # ...and 2 GB of JSON a minute, which large events reach before the event count.
            byte_rate=(BYTES_PER_MINUTE, 60 * 1.02 + 0.25),
            default_retry_after_s=BACKOFF_START_S,
            deduplicates=True,  # /import drops a repeated $insert_id
        )

    def __repr__(self) -> str:
        return f"MixpanelDestination({self.name!r}, {self.api_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> MixpanelWriter:
        return MixpanelWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        if self.has_service_account:
            # The documented read-only call for service accounts: who am I.
            return client.build_request("GET", f"{self.app_url}/api/app/me",
                                        headers={"Authorization": self._import_auth})
        # A project token has no read call; an empty /import checks it and imports nothing.
        return client.build_request("POST", f"{self.api_url}/import", params=self._params(),
                                    content=b"[]", headers=self._import_headers())

    def engage(self, client: httpx.AsyncClient, records: list[Record]) -> httpx.Request:
        # The token goes in here, not in the payload, so it never reaches samples or logs.
        head = '{"$token":' + self._token_json + ","
        parts = [head + r.payload[1:] if r.payload != "{}" else head[:-1] + "}"
                 for r in records]
        return client.build_request(
            "POST", f"{self.api_url}/engage", params={"verbose": "1", "ip": "0"},
            content=("[" + ",".join(parts) + "]").encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"})

    def import_(self, client: httpx.AsyncClient, records: list[Record]) -> httpx.Request:
        return client.build_request(
            "POST", f"{self.api_url}/import", params=self._params(),
            content=json_batch(records),
            headers=self._import_headers())

    def _params(self) -> dict[str, str]:
        params = {"strict": "1"}
        if self.project_id:
            params["project_id"] = self.project_id
        return params

    def _import_headers(self) -> dict[str, str]:
        return {"Authorization": self._import_auth, "Content-Type": "application/json",
                "Accept": "application/json"}


class MixpanelWriter:
    def __init__(self, dest: MixpanelDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync
        self._streak = 0  # 429s in a row: Mixpanel asks for exponential backoff
        if sync.action not in ACTIONS["mixpanel"]:
            raise ProjectError(f"syncs.{sync_name}.action: mixpanel offers "
                               f"{', '.join(ACTIONS['mixpanel'])}, not {sync.action!r}")
        match = sync.match or {}
        if len(match) > 1 or (match and next(iter(match)) not in ("distinct_id",
                                                                  "$distinct_id")):
            raise ProjectError(f"syncs.{sync_name}.match: Mixpanel identifies people by "
                               f"distinct_id; give {{distinct_id: <column>}}")
        self.distinct_column = next(iter(match.values()), None)
        if sync.action == "track" and self.distinct_column is None and sync.mapping is not None \
                and not ({"distinct_id", "properties.distinct_id"} & set(sync.mapping)):
            raise ProjectError(f"syncs.{sync_name}: a track sync needs the person of each "
                               f"event: match: {{distinct_id: <column>}}")

    def operations(self) -> dict[str, str]:
        if self._sync.action == "track":
            return {change: IMPORT for change in self._sync.selects if change != "deleted"}
        if self._sync.action == MIRROR:
            return {"added": SET, "updated": SET, "deleted": DELETE}
        return {change: SET for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        if operation == IMPORT:
            return Rules(top_level=EVENT_TOP, container="properties",
                         as_string=frozenset({"event"}))
        return Rules(top_level=PROFILE_TOP, container="$set")

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == DELETE:
            return {("$distinct_id",): Raw(DEST_ID), ("$delete",): Literal("")}
        if operation == SET:
            who = mapped.get(("$distinct_id",))
            if self.distinct_column is not None or who is None:
                who = Raw(f"CAST({quote(self.distinct_column)} AS VARCHAR)"
                          if self.distinct_column else KEYTEXT)  # default: the primary key
            rest = {p: e for p, e in mapped.items() if p != ("$distinct_id",)}
            return {("$distinct_id",): who, **rest}
        tree = dict(mapped)
        props = ("properties",)
        if self.distinct_column is not None:
            tree[props + ("distinct_id",)] = Column(self.distinct_column)
        if (who := tree.get(props + ("distinct_id",))) is not None:
            tree[props + ("distinct_id",)] = Raw(f"CAST(({sql_of(who)}) AS VARCHAR)")
        if (when := tree.get(props + ("time",))) is not None:
            tree[props + ("time",)] = Raw(epoch_sql(sql_of(when), "ms"))
        tree.setdefault(props + ("$insert_id",), Raw(MSGID))
        return tree

    def needs_dest_id(self, operation: str) -> bool:
        # A delete addresses the distinct_id retl set, so it only touches profiles retl wrote.
        return operation == DELETE

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == DELETE:
            return "NULL"

        def missing(path: str) -> str:
            return blank(payload, path)

        size = (f"strlen({payload}) > {RECORD_BYTES}",
                f"'the update is ' || strlen({payload}) || ' bytes, over Mixpanel''s 1 MB'")
        if operation == SET:
            column = self.distinct_column or "the primary key"
            checks = [(missing('$."$distinct_id"'), f"'no $distinct_id (from {column})'"), size]
        else:
            insert_id = f"json_extract_string({payload}, '$.properties.\"$insert_id\"')"
            checks = [
                (missing("$.event"), "'no event name (map a column to event)'"),
                (missing("$.properties.distinct_id"),
                 "'no properties.distinct_id (set match: {distinct_id: <column>})'"),
                ((f"json_extract({payload}, '$.properties.time') IS NULL "
                 f"OR json_type({payload}, '$.properties.time') NOT IN ('BIGINT', 'UBIGINT')"),
                 "'properties.time is missing or not a timestamp (map one to time)'"),
                (f"NOT regexp_full_match(coalesce({insert_id}, ''), '[A-Za-z0-9-]{{1,36}}')",
                 "'properties.$insert_id must be 1-36 letters, digits or -'"),
                size,
            ]
        return first_problem(checks)

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        if operation == IMPORT:
            return self._dest.import_(client, records)
        return self._dest.engage(client, records)

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        status = response.status_code
        if status == 429:
            raise RateLimited(f"HTTP 429: {response.text[:300]}", status=status,
                              retry_after=self._backoff())
        self._streak = 0
        if operation == IMPORT:
            body = json_body(response)
            if status == 400 and isinstance(body.get("failed_records"), list) \
                    and body["failed_records"]:
                return self._partial(body, records)
            raise_for_status(response)
            imported = body.get("num_records_imported")
            return Answer(counted=imported if isinstance(imported, int) else None)
        raise_for_status(response)
        return self._engaged(response, operation, records)

    def _backoff(self) -> float:
        """Mixpanel's advice: from 2 s, doubling up to 60 s, plus 1-5 s of jitter."""
        delay = min(BACKOFF_CAP_S, BACKOFF_START_S * 2 ** self._streak)
        self._streak += 1
        return delay + random.uniform(1.0, 5.0)

    def _partial(self, body: dict, records: list[Record]) -> Answer:
        """A 400 under strict=1: the events it lists failed, every other one was imported."""
        by_insert_id: dict[str, int] | None = None
        answer = Answer()
        for failure in body["failed_records"]:
            if not isinstance(failure, dict):
                continue
            # The docs' example names the key $insert_id, the OpenAPI schema insert_id.
            insert_id = failure.get("$insert_id", failure.get("insert_id"))
            index = failure.get("index")
            if not (isinstance(index, int) and 0 <= index < len(records)
                    and (insert_id is None or _insert_id(records[index]) == insert_id)):
                if by_insert_id is None:
                    by_insert_id = {_insert_id(r): i for i, r in enumerate(records)}
                index = by_insert_id.get(insert_id)
                if index is None:
                    answer.unplaced.append(str(failure.get("message") or failure))
                    continue
            field = failure.get("field") or ""
            message = str(failure.get("message") or body.get("error") or "failed validation")
            answer.rejected[index] = f"{field}: {message}" if field and field not in message \
                else message
        if isinstance(body.get("num_records_imported"), int):
            answer.counted = body["num_records_imported"]
        if len(answer.rejected) < len(body["failed_records"]) and not answer.rejected:
            # Nothing could be matched to our events: let the engine isolate them.
            raise RefusedRequest(f"HTTP 400: {json.dumps(body)[:300]}", status=400)
        return answer

    def _engaged(self, response: httpx.Response, operation: str,
                 records: list[Record]) -> Answer:
        body = json_body(response)
        if body:
            ok, error = body.get("status") in (1, "1"), str(body.get("error") or "")
        else:  # without verbose, the body is a bare 1 or 0
            ok, error = response.text.strip() == "1", ""
        if not ok:
            error = error or "Mixpanel found no valid update in the request"
            if "token" in error.lower():
                raise AuthError(f"/engage: {error}")
            raise RefusedRequest(f"/engage: {error}", status=response.status_code)
        answer = Answer()
        if operation == SET and self._sync.action == MIRROR:
            for i, r in enumerate(records):
                answer.ids[i] = str(json.loads(r.payload).get("$distinct_id"))
        return answer


def _insert_id(record: Record) -> str | None:
    try:
        return json.loads(record.payload)["properties"]["$insert_id"]
    except (ValueError, KeyError, TypeError):
        return None


def connect(name: str, config: MixpanelConfig) -> MixpanelDestination:
    token = resolve_secret(config.project_token, f"destinations.{name}.project_token") or ""
    account = None
    if config.service_account_user is not None:
        secret = resolve_secret(config.service_account_secret,
                                f"destinations.{name}.service_account_secret") or ""
        account = (config.service_account_user, secret)
    return MixpanelDestination(name, token, config.base_url, region=config.region,
                               project_id=config.project_id, service_account=account,
                               rate_limit=(config.rate_limit_events,
                                           config.rate_limit_seconds),
                               max_concurrency=config.max_concurrency,
                               batch_size=config.batch_size)
