"""HubSpot CRM v3: batch upsert by a unique property, batch update and archive by HubSpot's
own id, and v4 default associations to other objects' records.

100 inputs a request; a rolling 10-second limit (100 requests on Free/Starter, 190 on
Professional/Enterprise) and a daily one. One invalid input refuses a whole upsert batch
(400 VALIDATION_ERROR), so the engine splits to isolate it; a 207 multi-status names the
failed inputs in `errors[].context.ids`. 429 comes without Retry-After: the next window.

A record retl already wrote is updated by its HubSpot id, not upserted by its unique value:
when the value itself changes (a new email), an upsert would create a second contact. If
the id is gone (merged or deleted in HubSpot), the record is upserted by its value again.
Associations follow each delivered batch: the other records' ids are read by their unique
value (batch/read), then linked (batch/associate/default); a record whose other side is not
in HubSpot yet is rejected with that reason and retried next run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import httpx
from pydantic import Field

from retl_assets.destinations.base import (
    Answer,
    Capabilities,
    Exchange,
    JsonApi,
    Record,
    blank,
    first_problem,
    json_batch,
    json_body,
    status_answer,
)
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import ProjectError
from retl_assets.mapping import Column, Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, DestinationBase, Secret, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID

BASE_URL = "https://api.hubapi.com"
ACTIONS = {"hubspot": ("upsert", MIRROR, "archive")}
ASSOCIATES = {"hubspot"}
MAX_INPUTS = 100
REQUEST_BYTES = 3 * 1024 * 1024  # HubSpot refuses bodies over a few MB
DEFAULT_MATCH = {"contacts": "email", "companies": "domain"}
SIDE = "_associate"  # values for associations ride in the payload; stripped before sending
NOT_FOUND = "OBJECT_NOT_FOUND"


class HubSpotConfig(DestinationBase):
    access_token: Secret
    requests_per_10s: int = Field(100, ge=1, le=1000,
                                  description="100 on Free/Starter, 190 on Pro/Enterprise")


CONFIGS = {"hubspot": HubSpotConfig}


class HubSpotDestination(JsonApi):
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
            answers="results",  # upsert and update name each input; archive answers 204
            operation_answers={"archive": "whole"},
        )

    def __repr__(self) -> str:
        return f"HubSpotDestination({self.name!r}, {self.base_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> HubSpotWriter:
        return HubSpotWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base_url}/crm/v3/objects/contacts",
                                    params={"limit": 1}, headers=self._headers)


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
        # (other object, its unique property, model column)
        self.associations = [(obj, *next(iter(m.items())))
                             for obj, m in (sync.associations or {}).items()]
        self._found: dict[str, dict[str, str]] = {}  # object -> unique value -> HubSpot id

    def operations(self) -> dict[str, str]:
        if self._sync.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "archive"}
        if self._sync.action == "archive":
            return {"deleted": "archive"}
        return {change: "upsert" for change in self._sync.selects if change != "deleted"}

    def route(self, operation: str, dest_id: str | None) -> str:
        """A record retl wrote before goes by its HubSpot id (its email may have changed)."""
        return "update" if operation == "upsert" and dest_id else operation

    def rules(self, operation: str) -> Rules:
        return Rules(top_level=frozenset({"properties"}), container="properties")

    def payload(self, operation: str, mapped: Tree) -> Tree:
        if operation == "archive":
            return {("id",): Raw(DEST_ID)}
        side = {(SIDE, obj): Column(column) for obj, _, column in self.associations}
        return {("idProperty",): Literal(self.id_property),
                ("id",): Raw(f"CAST({quote(self.id_column)} AS VARCHAR)"), **mapped, **side}

    def needs_dest_id(self, operation: str) -> bool:
        return operation == "archive"

    def invalid_sql(self, operation: str, payload: str) -> str:
        if operation == "archive":
            return "NULL"
        reason = f"'no value for the match property {self.id_property} (column {self.id_column})'"
        return first_problem([(blank(payload, "$.id"), reason)])

    def request(self, client: httpx.AsyncClient, operation: str,
                records: list[Record]) -> httpx.Request:
        path = f"/crm/v3/objects/{self.object}/batch/{operation}"
        if operation == "archive" or (operation == "upsert" and not self.associations):
            return self._dest.build(client, "POST", path, json_batch(records, "inputs"))
        inputs = []
        for r in records:
            item = json.loads(r.payload)
            item.pop(SIDE, None)
            if operation == "update":
                # The unique value becomes a property: that is how an email changes.
                properties = {**item.get("properties", {}), self.id_property: item["id"]}
                item = {"id": r.dest_id, "properties": properties}
            inputs.append(item)
        return self._dest.build(client, "POST", path, json.dumps({"inputs": inputs}).encode())

    def read(self, response: httpx.Response, operation: str, records: list[Record]) -> Answer:
        if response.status_code == 429:
            body = json_body(response)
            if body.get("policyName") == "DAILY":
                return Answer("stop", error=f"HubSpot daily limit reached: {body.get('message')}")
        failed = status_answer(response, parse_retry_after(response.headers.get("Retry-After")))
        if failed or operation == "archive":
            return failed or Answer("ok")
        if operation == "update":
            position = {str(r.dest_id): i for i, r in enumerate(records)}
            return self._results(json_body(response), position, "id")
        position = {json.loads(r.payload)["id"].lower(): i for i, r in enumerate(records)}
        return self._results(json_body(response), position, self.id_property)

    def _results(self, body: dict, position: dict[str, int], by: str) -> Answer:
        # Results come in no promised order: match them to inputs by id or unique value.
        answer = Answer("ok")
        for result in body.get("results", []):
            value = result.get("id") if by == "id" else (result.get("properties") or {}).get(by)
            if str(value or "").lower() in position:
                answer.ids[position[str(value).lower()]] = str(result.get("id"))
        for error in body.get("errors", []):
            message = f"{error.get('category', '')}: {error.get('message', '')}".strip(": ")
            # `context` is free-form ({} in HubSpot's own example): an error may name no input.
            context = error.get("context") if isinstance(error.get("context"), dict) else {}
            named = [position[str(v).lower()] for v in context.get("ids") or []
                     if str(v).lower() in position]
            for i in named:
                answer.rejected[i] = message
            if not named:
                answer.unplaced.append(message)
        return answer

    async def follow_up(self, call: Exchange, operation: str, records: list[Record],
                        answer: Answer) -> None:
        """After a delivered batch: upsert what an update could not find, then associate."""
        if operation == "update":
            await self._upsert_gone(call, records, answer)
        if self.associations and operation in ("upsert", "update"):
            for obj, prop, _ in self.associations:
                await self._associate(call, obj, prop, records, answer)

    async def _upsert_gone(self, call: Exchange, records: list[Record], answer: Answer) -> None:
        for i in [i for i, e in answer.rejected.items() if e.startswith(NOT_FOUND)]:
            again = [replace(records[i], operation="upsert", dest_id=None)]
            result = await call("upsert", lambda c: self.request(c, "upsert", again),
                                lambda response: self.read(response, "upsert", again))
            del answer.rejected[i]
            answer.ids.pop(i, None)
            if result.kind != "ok" or 0 in result.rejected or 0 not in result.ids:
                answer.rejected[i] = result.rejected.get(0) or result.error or "not upserted"
            else:
                answer.ids[i] = result.ids[0]

    async def _associate(self, call: Exchange, obj: str, prop: str, records: list[Record],
                         answer: Answer) -> None:
        wanted: dict[int, str] = {}
        for i, r in enumerate(records):
            value = (json.loads(r.payload).get(SIDE) or {}).get(obj)
            if value not in (None, "") and i in answer.ids and i not in answer.rejected:
                wanted[i] = str(value)
        found = self._found.setdefault(obj, {})
        unknown = sorted({v.lower() for v in wanted.values()} - set(found))
        for start in range(0, len(unknown), MAX_INPUTS):
            chunk = unknown[start:start + MAX_INPUTS]
            body = {"idProperty": prop, "properties": [prop],
                    "inputs": [{"id": v} for v in chunk]}
            result = await call("read", self._post(f"/crm/v3/objects/{obj}/batch/read", body),
                                lambda response: self._found_ids(response, obj, prop))
            if result.kind != "ok":
                for i, value in wanted.items():
                    if value.lower() in chunk:
                        answer.rejected[i] = f"looking up {obj} by {prop}: {result.error}"
        pairs: dict[int, str] = {}
        for i, value in wanted.items():
            if i in answer.rejected:
                continue
            if value.lower() not in found:
                answer.rejected[i] = (f"association: no {obj} record with {prop} {value!r} in "
                                      f"HubSpot yet")
            else:
                pairs[i] = found[value.lower()]
        items = list(pairs.items())
        for start in range(0, len(items), MAX_INPUTS):
            chunk = items[start:start + MAX_INPUTS]
            body = {"inputs": [{"from": {"id": answer.ids[i]}, "to": {"id": to}}
                               for i, to in chunk]}
            path = f"/crm/v4/associations/{self.object}/{obj}/batch/associate/default"
            result = await call("associate", self._post(path, body),
                                partial(self._association_errors, chunk=chunk, answer=answer))
            if result.kind != "ok":
                for i, _ in chunk:
                    answer.rejected[i] = f"associating with {obj}: {result.error}"

    def _post(self, path: str, body: dict) -> Callable[[httpx.AsyncClient], httpx.Request]:
        """A request the engine can build (again, on a retry) on its own client."""
        content = json.dumps(body).encode()
        return lambda client: self._dest.build(client, "POST", path, content)

    def _found_ids(self, response: httpx.Response, obj: str, prop: str) -> Answer:
        failed = status_answer(response)
        if failed:
            return failed
        for result in json_body(response).get("results", []):
            value = (result.get("properties") or {}).get(prop)
            if value:
                self._found[obj][str(value).lower()] = str(result.get("id"))
        return Answer("ok")

    def _association_errors(self, response: httpx.Response, chunk: list[tuple[int, str]],
                            answer: Answer) -> Answer:
        failed = status_answer(response)
        if failed:
            return failed
        by_from = {answer.ids[i]: i for i, _ in chunk}
        for error in json_body(response).get("errors", []):
            for from_id in (error.get("context") or {}).get("fromId", []):
                if str(from_id) in by_from:
                    answer.rejected[by_from[str(from_id)]] = (
                        f"association: {error.get('message', error.get('category', ''))}")
        return Answer("ok")


def connect(name: str, config: HubSpotConfig) -> HubSpotDestination:
    token = resolve_secret(config.access_token, f"destinations.{name}.access_token")
    return HubSpotDestination(name, token or "", config.base_url, config.requests_per_10s,
                              config.max_concurrency, config.batch_size)
