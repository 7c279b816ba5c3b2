"""Clarify CRM: people upserted by email address, companies by domain, through its JSON:API
record endpoints in one workspace.

    POST {base}/v1/workspaces/{slug}/objects/{person|company}/records/bulk
         {"data": [{"type", "attributes": {"email_addresses": {"items": [...]}, ...}}]}
    DELETE {base}/v1/workspaces/{slug}/objects/{object}/records/{id}   (UNVERIFIED)
    Authorization: api-key <KEY>

Upsert matches a person on any one of its `email_addresses`, a company on any one of its
`domains` (docs/vendor-contracts.md section 7). The limits come from
clarify-api-docs.vercel.app, titled "Clarify API Beta"; who owns that site is not confirmed,
so they are probably, not certainly, Clarify's own:
- /records/bulk takes at most 25 records and is atomic: one invalid record refuses the
  whole batch, which the engine halves until the bad record stands alone (an upsert can be
  sent again, so the halving is safe);
- no strict per-second limit, but about one bulk request a second is the recommended pace
  (and 100 reads a minute); over the limit Clarify answers 429 and mentions no
  Retry-After, so the engine backs off from one second, doubling;
- errors are `{"errors": [{"status", "title", "detail"}]}` (400 a duplicate, 422 invalid).
We read a bulk answer as JSON:API `{"data": [{"id", "type", "attributes"}]}`, matched to
the records by their unique value (the per-record body of a bulk success is unpublished).

There is no bulk delete ("no way to bulk delete records today"): a delete is one request
per record, by the Clarify id retl kept from the upsert. Their pace is unpublished: ours
is 10 a second. A project's `rate_limit: "N/S"` replaces both paces with one (your
workspace's own), and `batch_size` lowers the 25.
"""

from __future__ import annotations

import json

import httpx

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    JsonApi,
    Record,
    json_batch,
    raise_for_status,
)
from retl_assets.destinations.clarify.config import ClarifyConfig
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import ProjectError, SetupError
from retl_assets.mapping import Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID

BASE_URL = "https://api.clarify.ai"
ACTIONS = {"clarify": ("upsert", MIRROR)}
# The unique (upsert) attribute of each object, a collection sent as {"items": [...]}.
MATCH = {"person": "email_addresses", "company": "domains"}
DEFAULT_COLUMN = {"person": "email", "company": "domain"}
ALIASES = {"people": "person", "persons": "person", "companies": "company"}
MAX_BATCH = 25  # records per /records/bulk request, as published
REQUEST_BYTES = 1024 * 1024  # unpublished: our conservative choice
BULK_RATE = (1, 1.0)  # the published pace: one bulk request, then a second's pause
DELETE_RATE = (10, 1.0)  # unpublished: our conservative choice


class ClarifyDestination(JsonApi):
    def __init__(self, name: str, api_key: str, workspace: str, base_url: str | None = None,
                 max_concurrency: int | None = None, batch_size: int | None = None):
        self.name = name
        self.base_url = f"{(base_url or BASE_URL).rstrip('/')}/v1/workspaces/{workspace}"
        self._headers = {"Authorization": f"api-key {api_key}",
                         "Content-Type": "application/json"}
        self.capabilities = Capabilities(
            records_per_request=min(batch_size or MAX_BATCH, MAX_BATCH),
            operation_batch={"delete": 1},  # no bulk delete
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=REQUEST_BYTES,
            max_concurrency=max_concurrency or 4,
            operation_limits={"upsert": BULK_RATE, "delete": DELETE_RATE},
            default_retry_after_s=1.0,  # a 429 without Retry-After: 1 s, then doubling
        )

    def __repr__(self) -> str:
        return f"ClarifyDestination({self.name!r}, {self.base_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> ClarifyWriter:
        return ClarifyWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base_url}/schemas", headers=self._headers)


class ClarifyWriter:
    def __init__(self, dest: ClarifyDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync
        where = f"syncs.{sync_name}"
        self.object = ALIASES.get(sync.object or "person", sync.object or "person")
        if self.object not in MATCH:
            raise ProjectError(f"{where}.object: Clarify syncs upsert person or company, "
                               f"not {sync.object!r}")
        self.match_field = MATCH[self.object]
        match = sync.match or {self.match_field: DEFAULT_COLUMN[self.object]}
        if list(match) != [self.match_field]:
            raise ProjectError(f"{where}.match: Clarify upserts a {self.object} by "
                               f"{self.match_field}; give {{{self.match_field}: <column>}}")
        self.match_column = match[self.match_field]

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "delete"}
        return {change: "upsert" for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        return Rules(top_level=frozenset({"attributes", "relationships"}),
                     container="attributes")

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "delete":
            return {("id",): Raw(DEST_ID)}
        # JSON:API keeps only type/id/attributes/relationships at the top: a dotted field
        # such as name.first_name belongs in attributes.
        tree: Tree = {("type",): Literal(self.object)}
        for path, expr in mapped.items():
            if path[0] not in ("attributes", "relationships"):
                path = ("attributes", *path)
            tree[path] = expr
        column = quote(self.match_column)
        tree[("attributes", self.match_field)] = Raw(
            f"json_object('items', json_array(CAST({column} AS VARCHAR)))")
        return tree

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "delete"

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == "delete":
            return "NULL"
        value = f"json_extract_string({payload}, '$.attributes.{self.match_field}.items[0]')"
        return (f"CASE WHEN coalesce(trim({value}), '') = '' THEN 'no value for the match "
                f"field {self.match_field} (column {self.match_column})' ELSE NULL END")

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        path = f"/objects/{self.object}/records"
        if operation == "upsert":
            return self._dest.build(client, "POST", f"{path}/bulk", json_batch(records, "data"))
        [record] = records  # operation_batch: one delete a request
        return self._dest.build(client, "DELETE", f"{path}/{record.dest_id}")

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if operation == "delete":
            if status != 404:  # 404: already gone, what a delete wants
                raise_for_status(response, retry_after)
            return Answer()
        if status == 404:
            # Every record would be refused alike: a wrong workspace or object stops the run.
            raise SetupError(f"HTTP 404 {_errors(response)} (check the destination's "
                             f"workspace and the sync's object)")
        if not response.is_success:
            raise_for_status(response, retry_after, f"HTTP {status}: {_errors(response)}")
        return self._ids(response, records)

    def _ids(self, response: httpx.Response, records: list[Record]) -> Answer:
        """Clarify's id of each record, matched by the unique value (order is not promised)."""
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            data = None
        answer = Answer()
        if not isinstance(data, list):
            return answer
        position = {}
        for i, r in enumerate(records):
            items = json.loads(r.payload)["attributes"][self.match_field]["items"]
            position[str(items[0]).lower()] = i
        for resource in data:
            if not isinstance(resource, dict) or resource.get("id") is None:
                continue
            values = ((resource.get("attributes") or {}).get(self.match_field) or {})
            for value in values.get("items", []) if isinstance(values, dict) else []:
                i = position.get(str(value).lower())
                if i is not None and i not in answer.ids:
                    answer.ids[i] = str(resource["id"])
        return answer


def _errors(response: httpx.Response) -> str:
    """Clarify's `{"errors": [{status, title, detail}]}` as one line: "title: detail"
    (and " (at pointer)" should an error carry JSON:API's source.pointer)."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        errors = None
    if not isinstance(errors, list) or not errors:
        return response.text[:300]
    parts = []
    for e in errors[:5]:
        if not isinstance(e, dict):
            continue
        text = ": ".join(str(e[k]) for k in ("title", "detail") if e.get(k))
        pointer = (e.get("source") or {}).get("pointer") if isinstance(e.get("source"), dict) \
            else None
        parts.append(f"{text} (at {pointer})" if pointer else text)
    return "; ".join(parts)[:500]


def connect(name: str, config: ClarifyConfig) -> ClarifyDestination:
    key = resolve_secret(config.api_key, f"destinations.{name}.api_key")
    return ClarifyDestination(name, key or "", config.workspace, config.base_url,
                              config.max_concurrency, config.batch_size)
