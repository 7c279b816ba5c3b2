"""HubSpot CRM v3: batch upsert by a unique property, batch archive by HubSpot's own id.

100 inputs a request; a rolling 10-second limit (100 requests on Free/Starter, 190 on
Professional/Enterprise) and a daily one. One invalid input refuses a whole upsert batch
(400 VALIDATION_ERROR), so the engine splits to isolate it; a 207 multi-status names the
failed inputs in `errors[].context.ids`. 429 comes without Retry-After: the next window.
"""

from __future__ import annotations

import json

import httpx
from pydantic import Field

from retl_assets.destinations.base import Answer, Capabilities, Record, status_answer
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import ProjectError
from retl_assets.mapping import Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, DestinationBase, Secret, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID

BASE_URL = "https://api.hubapi.com"
ACTIONS = {"hubspot": ("upsert", MIRROR, "archive")}
MAX_INPUTS = 100
REQUEST_BYTES = 3 * 1024 * 1024  # HubSpot refuses bodies over a few MB
DEFAULT_MATCH = {"contacts": "email", "companies": "domain"}


class HubSpotConfig(DestinationBase):
    access_token: Secret
    requests_per_10s: int = Field(100, ge=1, le=1000,
                                  description="100 on Free/Starter, 190 on Pro/Enterprise")


CONFIGS = {"hubspot": HubSpotConfig}


class HubSpotDestination:
    def __init__(self, name: str, token: str, base_url: str | None = None,
                 requests_per_10s: int = 100, max_concurrency: int | None = None,
                 batch_size: int | None = None):
        self.name = name
        self.base_url = (base_url or BASE_URL).rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.capabilities = Capabilities(
            records_per_request=min(batch_size or MAX_INPUTS, MAX_INPUTS),
            bytes_per_request=REQUEST_BYTES,
            bytes_per_record=REQUEST_BYTES,
            max_concurrency=max_concurrency or 4,
            rate_limit=(requests_per_10s, 10.0),
            default_retry_after_s=10.0,
            partial_failure="whole_batch",
        )

    def __repr__(self) -> str:
        return f"HubSpotDestination({self.name!r}, {self.base_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> HubSpotWriter:
        return HubSpotWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base_url}/crm/v3/objects/contacts",
                                    params={"limit": 1}, headers=self._headers)

    def post(self, client: httpx.AsyncClient, path: str, records: list[Record]) -> httpx.Request:
        body = ('{"inputs":[' + ",".join(r.payload for r in records) + "]}").encode()
        return client.build_request("POST", f"{self.base_url}{path}", content=body,
                                    headers=self._headers)


class HubSpotWriter:
    def __init__(self, dest: HubSpotDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync
        self.object = sync.object or "contacts"
        match = sync.match or ({DEFAULT_MATCH[self.object]: DEFAULT_MATCH[self.object]}
                               if self.object in DEFAULT_MATCH else None)
        if sync.action != "archive" and (not match or len(match) != 1):
            raise ProjectError(f"syncs.{sync_name}.match: give the one unique HubSpot property "
                               f"to upsert {self.object} by, e.g. {{email: email_column}}")
        self.id_property, self.id_column = next(iter((match or {"": ""}).items()))

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "archive"}
        if self._sync.action == "archive":
            return {"deleted": "archive"}
        return {change: "upsert" for change in self._sync.selects if change != "deleted"}

    def rules(self, operation: str) -> Rules:
        return Rules(top_level=frozenset({"properties"}), container="properties")

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "archive":
            return {("id",): Raw(DEST_ID)}
        return {("idProperty",): Literal(self.id_property),
                ("id",): Raw(f"CAST({quote(self.id_column)} AS VARCHAR)"), **mapped}

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "archive"

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == "archive":
            return "NULL"
        return (f"CASE WHEN coalesce(json_extract_string({payload}, '$.id'), '') = '' THEN "
                f"'no value for the match property {self.id_property} "
                f"(column {self.id_column})' ELSE NULL END")

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        return self._dest.post(client, f"/crm/v3/objects/{self.object}/batch/{operation}",
                               records)

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        if response.status_code == 429:
            body = _json(response)
            if body.get("policyName") == "DAILY":
                return Answer("stop", error=f"HubSpot daily limit reached: {body.get('message')}")
        failed = status_answer(response, parse_retry_after(response.headers.get("Retry-After")))
        if failed or operation == "archive":
            return failed or Answer("ok")
        return self._results(_json(response), records)

    def _results(self, body: dict, records: list[Record]) -> Answer:
        # Results come in no promised order: match them to inputs by the unique value.
        position = {json.loads(r.payload)["id"].lower(): i for i, r in enumerate(records)}
        answer = Answer("ok")
        for result in body.get("results", []):
            value = str((result.get("properties") or {}).get(self.id_property, "")).lower()
            if value in position:
                answer.ids[position[value]] = str(result.get("id"))
        for error in body.get("errors", []):
            message = f"{error.get('category', '')}: {error.get('message', '')}".strip(": ")
            for value in (error.get("context") or {}).get("ids", []):
                if str(value).lower() in position:
                    answer.rejected[position[str(value).lower()]] = message
        return answer


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def connect(name: str, config: HubSpotConfig) -> HubSpotDestination:
    token = resolve_secret(config.access_token, f"destinations.{name}.access_token")
    return HubSpotDestination(name, token or "", config.base_url, config.requests_per_10s,
                              config.max_concurrency, config.batch_size)
