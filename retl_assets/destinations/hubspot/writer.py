"""HubSpot CRM v3: batch upsert by a unique property, batch update and archive by HubSpot's
own id, the search API for properties that are not unique, and v4 default associations.

100 inputs a request; a rolling 10-second limit (100 requests on Free/Starter, 190 on
Professional/Enterprise) and a daily one; searches 5 a second. One invalid input refuses a
whole batch (400 VALIDATION_ERROR), so the engine splits to isolate it; a 207 multi-status
names the failed inputs in `errors[].context.ids`. 429 comes without Retry-After: the next
window (a second for the search API's SECONDLY limit).

A record retl already wrote is updated by its HubSpot id, not matched by its value again:
when the value itself changes (a new email), an upsert would create a second contact. If
the id is gone (merged or deleted in HubSpot), the record is matched by its value again.

Matching by value: `email` on contacts is unique, so batch upsert does it. Any other match
property is looked up once per run (`GET /crm/v3/properties/{object}/{property}`,
`hasUniqueValue`). HubSpot refuses a property that is not unique (a company's `domain`) as
an upsert or read key, so such a batch is a *job*: search by the property (IN filter),
update the records found by id, create the rest (batch/create); a value two HubSpot records
share is rejected, never guessed. Actions `create` and `update` write only new, or only
existing, records. Associations follow each delivered batch: the other records' ids are
found by their value (batch/read when unique, search when not), then linked
(batch/associate/default); a record whose other side is not in HubSpot yet is rejected with
that reason and retried next run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import httpx

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
    raise_for_status,
)
from retl_assets.destinations.hubspot.config import HubSpotConfig
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import (
    ProjectError,
    QuotaSpent,
    RateLimited,
    RefusedRequest,
    RequestError,
    SetupError,
)
from retl_assets.mapping import Column, Literal, Raw, Rules, Tree
from retl_assets.project.load import resolve_secret
from retl_assets.project.schema import MIRROR, SyncConfig
from retl_assets.state.engine import quote
from retl_assets.state.store import DEST_ID

CREATE, UPDATE = "create", "update"  # sync modes: only new records, only existing ones
BASE_URL = "https://api.hubapi.com"
ACTIONS = {"hubspot": ("upsert", MIRROR, "archive", CREATE, UPDATE)}
MAX_INPUTS = 100
REQUEST_BYTES = 3 * 1024 * 1024  # HubSpot refuses bodies over a few MB
DEFAULT_MATCH = {"contacts": "email", "companies": "domain"}
KNOWN_UNIQUE = {("contacts", "email")}  # HubSpot's own; any other property is asked
SIDE = "_associate"  # values for associations ride in the payload; stripped before sending
NOT_FOUND = "OBJECT_NOT_FOUND"
SEARCHES_PER_S = 5  # per account; search answers carry no rate-limit headers
SEARCH_PAGE = 200  # results a search page holds at most
SEARCH_REACH = 10_000  # results a search can page through; beyond is a 400
IN_VALUES = 100  # values per IN filter (HubSpot publishes no limit; a batch holds 100)
SECONDLY_WAIT_S = 1.0  # a 429 of the per-second (search) limit
CONFLICT_ROUNDS = 3  # create-only: creates answered 409 (a race), looked up and sent again


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
            operation_limits={"search": (SEARCHES_PER_S, 1.0)},
            default_retry_after_s=10.0,
            answers="results",  # upsert, update and create name each input; archive: 204
            operation_answers={"archive": "whole"},
        )

    def __repr__(self) -> str:
        return f"HubSpotDestination({self.name!r}, {self.base_url!r})"

    def writer(self, sync_name: str, sync: SyncConfig) -> HubSpotWriter:
        return HubSpotWriter(self, sync_name, sync)

    def check_request(self, client: httpx.Client) -> httpx.Request:
        return client.build_request("GET", f"{self.base_url}/crm/v3/objects/contacts",
                                    params={"limit": 1}, headers=self._headers)


@dataclass
class _Job:
    """One batch a job carries: its records, their payloads, and the answer being built."""

    call: Exchange
    records: list[Record]
    payloads: list[dict]
    answer: Answer = field(default_factory=Answer)
    claimed: set[str] = field(default_factory=set)  # values this job may create

    def value(self, i: int) -> str:
        return str(self.payloads[i]["id"])


def _norm(value: object) -> str:
    """How HubSpot compares emails and domains: case and surrounding blanks do not count."""
    return str(value).strip().lower()


def _merge(total: Answer, part: Answer, index: list[int] | None = None) -> None:
    """Add a request's answer to the job's; `index` maps the request's records to the job's."""
    def at(i: int) -> int:
        return index[i] if index is not None else i

    total.ids.update({at(i): v for i, v in part.ids.items()})
    total.rejected.update({at(i): v for i, v in part.rejected.items()})
    total.codes.update({at(i): v for i, v in part.codes.items()})
    total.unplaced += part.unplaced


def _gone(answer: Answer) -> list[int]:
    """The records an update by id did not find (merged or deleted in HubSpot), taken out of
    the answer's rejections: the caller matches them by value again."""
    gone = [i for i in answer.rejected if answer.codes.get(i) == NOT_FOUND]
    for i in gone:
        del answer.rejected[i]
        del answer.codes[i]
    return gone


class HubSpotWriter:
    def __init__(self, dest: HubSpotDestination, sync_name: str, sync: SyncConfig):
        self.destination = dest.name
        self.capabilities = dest.capabilities
        self._dest = dest
        self._sync = sync
        self.action = sync.action
        self.object = sync.object or "contacts"
        match = sync.match or ({DEFAULT_MATCH[self.object]: DEFAULT_MATCH[self.object]}
                               if self.object in DEFAULT_MATCH else None)
        if sync.action != "archive" and (not match or len(match) != 1):
            raise ProjectError(f"syncs.{sync_name}.match: give the one HubSpot property "
                               f"to match {self.object} on, e.g. {{email: email_column}}")
        if sync.action in (CREATE, UPDATE) and sync.records == "deleted":
            raise ProjectError(f"syncs.{sync_name}.records: a `{sync.action}` sync writes "
                               f"added or updated rows, not deleted ones")
        self.id_property, self.id_column = next(iter((match or {"": ""}).items()))
        # (other object, its matching property, model column)
        self.associations = [(obj, *next(iter(m.items())))
                             for obj, m in (sync.associations or {}).items()]
        self.jobs = self._job_operations()
        self._unique: dict[tuple[str, str], bool] = dict.fromkeys(KNOWN_UNIQUE, True)
        # (object, property) -> value -> the HubSpot ids HubSpot answered for it this run
        self._ids: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._writing: set[str] = set()  # values a job of this run may be creating now
        self._untouched: set[str] = set()  # create-only: msgids of records found existing
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _job_operations(self) -> frozenset[str]:
        """The operations whose batches take several requests (see `job`)."""
        if self.action in (CREATE, UPDATE):
            return frozenset({self.action})
        if self.action == "archive" or (self.object, self.id_property) in KNOWN_UNIQUE:
            return frozenset()  # batch upsert and update by id, one request a batch
        return frozenset({"upsert", "update"})

    def operations(self) -> dict[str, str]:
        if self.action == MIRROR:
            return {"added": "upsert", "updated": "upsert", "deleted": "archive"}
        if self.action == "archive":
            return {"deleted": "archive"}
        if self.action in (CREATE, UPDATE):
            # What users expect of each mode unless `records:` says otherwise.
            default = ("added",) if self.action == CREATE else ("added", "updated")
            changes = default if self._sync.records is None else self._sync.selects
            return {change: self.action for change in changes}
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

    # -- one request a batch: upsert by a unique property, update by id, archive -------------

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
        self._check(response)
        if operation == "archive":
            return Answer()
        if operation == "update":
            position = {str(r.dest_id): i for i, r in enumerate(records)}
            return self._results(json_body(response), position, "id")
        position = {_norm(json.loads(r.payload)["id"]): i for i, r in enumerate(records)}
        return self._results(json_body(response), position, self.id_property)

    def _check(self, response: httpx.Response) -> None:
        """Raise what a failed answer means: a spent daily limit stops the run's sending; the
        search API's per-second limit is over in about a second."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if response.status_code == 429:
            body = json_body(response)
            if body.get("policyName") == "DAILY":
                raise QuotaSpent(f"HubSpot daily limit reached: {body.get('message')}",
                                 status=429)
            if body.get("policyName") == "SECONDLY":
                raise RateLimited(f"HTTP 429: {body.get('message')}", status=429,
                                  retry_after=retry_after or SECONDLY_WAIT_S)
        raise_for_status(response, retry_after)

    def _results(self, body: dict, position: dict[str, int], by: str) -> Answer:
        # Results come in no promised order: match them to inputs by id or by value.
        answer = Answer()
        for result in body.get("results", []):
            value = result.get("id") if by == "id" else (result.get("properties") or {}).get(by)
            if _norm(value or "") in position:
                answer.ids[position[_norm(value)]] = str(result.get("id"))
        for error in body.get("errors", []):
            message = f"{error.get('category', '')}: {error.get('message', '')}".strip(": ")
            # `context` is free-form ({} in HubSpot's own example): an error may name no input.
            context = error.get("context") if isinstance(error.get("context"), dict) else {}
            named = [position[_norm(v)] for v in context.get("ids") or [] if _norm(v) in position]
            for i in named:
                answer.rejected[i] = message
                if error.get("category"):
                    answer.codes[i] = str(error["category"])  # what follow-ups act on
            if not named:
                answer.unplaced.append(message)
        return answer

    # -- jobs: several requests a batch --------------------------------------------------------

    async def job(self, call: Exchange, operation: str, records: list[Record]) -> Answer:
        """One batch through as many requests as its mode needs, answered as a whole and
        indexed like `records`. A request that fails ends the job with its answer: writes
        by id are safe to repeat, and the one create a job sends comes last. Its error is
        the batch's: a refusal splits it, as it would one request."""
        job = _Job(call, records, [json.loads(r.payload) for r in records])
        try:
            if self.action == CREATE:
                await self._create_job(job)
            elif self.action == UPDATE:
                await self._update_job(job)
            else:
                await self._upsert_job(job)
        finally:
            self._writing -= job.claimed
        return job.answer

    async def _upsert_job(self, job: _Job) -> None:
        new = await self._update_held(job)
        if not new:
            return
        if await self._is_unique(job.call, self.object, self.id_property):
            await self._upsert_by_value(job, self._claim(job, new, creates=False))
            return
        mine = self._claim(job, new, creates=True)
        updates, creates = await self._found(job, mine)
        await self._update_found(job, updates)
        await self._create(job, creates)

    async def _found(self, job: _Job, mine: list[int]) -> tuple[dict[int, str], list[int]]:
        """Search the records' values: (index -> the one HubSpot id found, indexes found
        nowhere). A value several HubSpot records hold is rejected: retl will not guess."""
        found = await self._match(job, mine)
        one, none = {}, []
        for i in mine:
            ids = found.get(_norm(job.value(i)), [])
            if len(ids) > 1:
                job.answer.rejected[i] = self._ambiguous(job.value(i), ids, "update")
            elif ids:
                one[i] = ids[0]
            else:
                none.append(i)
        return one, none

    async def _update_job(self, job: _Job) -> None:
        """Update-only: a record HubSpot does not have is rejected, and stays owed until it
        exists there."""
        new = await self._update_held(job)
        mine = self._claim(job, new, creates=False)
        if not mine:
            return
        if await self._is_unique(job.call, self.object, self.id_property):
            missing = await self._update_by_value(job, mine)
        else:
            updates, missing = await self._found(job, mine)
            missing += await self._update_by_id(job, updates)
        for i in missing:
            job.answer.rejected[i] = (f"no HubSpot {self.object} with {self.id_property} "
                                      f"{job.value(i)!r}; an update-only sync never creates one")

    async def _create_job(self, job: _Job) -> None:
        """Create-only: a record HubSpot already has is left as it is and counts as
        delivered with its id (it is in the state the mode promises)."""
        pending = self._claim(job, await self._read_held(job), creates=True)
        if not pending:
            return
        # A unique value is simply created: HubSpot answers 409 CONFLICT when it is held
        # (for the whole batch), and only then are the values looked up.
        look = not await self._is_unique(job.call, self.object, self.id_property)
        conflict = None
        for _ in range(CONFLICT_ROUNDS):
            if look:
                pending = await self._keep_existing(job, pending)
            if not pending:
                return
            conflict = await self._create(job, pending, conflicts=True)
            if conflict is None:
                return
            look = True
        raise conflict

    async def _keep_existing(self, job: _Job, indexes: list[int]) -> list[int]:
        """Create-only: the records found in HubSpot by value, answered with their id and
        left untouched; returns the ones to create."""
        found = await self._match(job, indexes)
        rest = []
        for i in indexes:
            ids = found.get(_norm(job.value(i)), [])
            if len(ids) > 1:
                job.answer.rejected[i] = self._ambiguous(job.value(i), ids,
                                                         "keep as this record")
            elif ids:
                job.answer.ids[i] = ids[0]
                self._leave_alone(job.records[i])
            else:
                rest.append(i)
        return rest

    def _claim(self, job: _Job, indexes: list[int], creates: bool) -> list[int]:
        """The records this job matches by value: one a value (HubSpot refuses a value twice
        in one batch, and two creates would make two records), and, when the job may create,
        none whose value another job of this run is writing now. The others are sent again
        after them, when their value's id is known."""
        mine, seen = [], set()
        for i in indexes:
            value = _norm(job.value(i))
            if value in seen:
                job.answer.again[i] = (f"another record of this batch has {self.id_property} "
                                       f"{value}; sent after it")
            elif creates and value in self._writing:
                job.answer.again[i] = (f"another request of this run is writing "
                                       f"{self.id_property} {value}; sent after it")
            else:
                seen.add(value)
                mine.append(i)
        if creates:
            job.claimed = seen
            self._writing |= seen
        return mine

    def _leave_alone(self, record: Record) -> None:
        if self.associations:
            self._untouched.add(record.msgid)  # create-only: no association either

    # -- the requests of a job -----------------------------------------------------------------

    async def _update_held(self, job: _Job) -> list[int]:
        """Records retl holds an id for are updated by it; returns the records still to match
        by value (no id, or one HubSpot no longer has)."""
        held = {i: str(r.dest_id) for i, r in enumerate(job.records) if r.dest_id}
        gone = await self._update_by_id(job, held)
        return sorted([i for i in range(len(job.records)) if i not in held] + gone)

    async def _read_held(self, job: _Job) -> list[int]:
        """Create-only: records retl holds an id for are read by it, never written."""
        held = {i: str(r.dest_id) for i, r in enumerate(job.records) if r.dest_id}
        if held:
            part = await self._batch(job, "read", [{"id": rid} for rid in held.values()],
                                     {rid: i for i, rid in held.items()}, "id",
                                     properties=[self.id_property])
            _gone(part)  # not there any more: created by value below
            _merge(job.answer, part)
            for i in part.ids:
                self._leave_alone(job.records[i])
        return [i for i in range(len(job.records)) if i not in job.answer.ids
                and i not in job.answer.rejected]

    async def _update_by_id(self, job: _Job, targets: dict[int, str]) -> list[int]:
        """batch/update of records by HubSpot id; returns those HubSpot does not have."""
        if not targets:
            return []
        inputs = [{"id": rid, "properties": self._properties(job, i)}
                  for i, rid in targets.items()]
        part = await self._batch(job, "update", inputs, {rid: i for i, rid in targets.items()},
                                 "id")
        gone = _gone(part)
        _merge(job.answer, part)
        return gone

    async def _update_found(self, job: _Job, targets: dict[int, str]) -> None:
        for i in await self._update_by_id(job, targets):
            # Found by search a moment ago, gone now: matched again on the next run.
            job.answer.rejected[i] = f"{NOT_FOUND}: HubSpot {self.object} {targets[i]} is gone"

    async def _update_by_value(self, job: _Job, indexes: list[int]) -> list[int]:
        """batch/update by a unique property; returns the records HubSpot does not have."""
        # The value is sent as a property too, so that the answer names it.
        inputs = [{"idProperty": self.id_property, "id": job.value(i),
                   "properties": self._properties(job, i)} for i in indexes]
        part = await self._batch(job, "update", inputs,
                                 {_norm(job.value(i)): i for i in indexes}, self.id_property)
        missing = _gone(part)
        _merge(job.answer, part)
        return missing

    async def _upsert_by_value(self, job: _Job, indexes: list[int]) -> None:
        if not indexes:
            return
        records = [job.records[i] for i in indexes]
        part = await job.call("upsert", lambda client: self.request(client, "upsert", records),
                              lambda response: self.read(response, "upsert", records))
        _merge(job.answer, part, indexes)

    async def _create(self, job: _Job, indexes: list[int],
                      conflicts: bool = False) -> RefusedRequest | None:
        """batch/create; answers are matched back by value and their ids kept for the run.
        With `conflicts`, a 409 (a value already held) is returned rather than raised."""
        if not indexes:
            return None
        inputs = [{"properties": self._properties(job, i)} for i in indexes]
        try:
            answer = await self._batch(job, "create", inputs,
                                       {_norm(job.value(i)): i for i in indexes},
                                       self.id_property)
        except RefusedRequest as refused:
            if conflicts and refused.status == 409:
                return refused
            raise
        known = self._ids.setdefault((self.object, self.id_property), {})
        for i, rid in answer.ids.items():
            known[_norm(job.value(i))] = [rid]  # search may not show it for a while
        _merge(job.answer, answer)
        return None

    async def _batch(self, job: _Job, operation: str, inputs: list[dict],
                     position: dict[str, int], by: str, **around: object) -> Answer:
        """One batch request of the job's object; its results matched to the job's records
        through `position` (id or value -> index)."""
        body = {**around, "inputs": inputs}
        return await job.call(
            operation, self._post(f"/crm/v3/objects/{self.object}/batch/{operation}", body),
            partial(self._batch_answer, position=position, by=by))

    def _batch_answer(self, response: httpx.Response, position: dict[str, int],
                      by: str) -> Answer:
        self._check(response)
        return self._results(json_body(response), position, by)

    def _properties(self, job: _Job, i: int) -> dict:
        # The matched value is a property too: how a changed email or domain lands.
        return {**job.payloads[i].get("properties", {}), self.id_property: job.value(i)}

    def _post(self, path: str, body: dict) -> Callable[[httpx.AsyncClient], httpx.Request]:
        """A request the engine can build (again, on a retry) on its own client."""
        content = json.dumps(body).encode()
        return lambda client: self._dest.build(client, "POST", path, content)

    def _ambiguous(self, value: str, ids: list[str], verb: str) -> str:
        return (f"{len(ids)} {self.object} in HubSpot have {self.id_property} {value} "
                f"(ids {', '.join(ids)}); retl will not guess which to {verb}")

    # -- finding records by value ----------------------------------------------------------------

    async def lookup(self, call: Exchange, records: list[Record]) -> Answer:
        """Read-only, for a dry run: which records HubSpot holds by their match value (batch
        read when the property is unique, search otherwise). Answers the id of each one
        found, confirms the others as not there, and rejects a value several records share
        (a real run would refuse it too)."""
        job = _Job(call, records, [json.loads(r.payload) for r in records])
        found = await self._match(job, list(range(len(records))))
        for i in range(len(records)):
            ids = found.get(_norm(job.value(i)), [])
            if len(ids) > 1:
                job.answer.rejected[i] = self._ambiguous(job.value(i), ids, "update")
            elif ids:
                job.answer.ids[i] = ids[0]
            job.answer.confirmed.add(i)
        return job.answer

    async def _match(self, job: _Job, indexes: list[int]) -> dict[str, list[str]]:
        values = {_norm(job.value(i)) for i in indexes}
        return await self._known(job.call, self.object, self.id_property, values)

    async def _known(self, call: Exchange, obj: str, prop: str,
                     values: set[str]) -> dict[str, list[str]]:
        """value -> the ids of the `obj` records HubSpot has with `prop` = value: the ones
        this run already saw, then a lookup of the others."""
        known = self._ids.setdefault((obj, prop), {})
        unseen = sorted(values - set(known))
        if unseen:
            if await self._is_unique(call, obj, prop):
                found = await self._read_by_value(call, obj, prop, unseen)
            else:
                found = await self._search(call, obj, prop, unseen)
            known.update({v: ids for v, ids in found.items() if ids})
        return {v: known.get(v, []) for v in values}

    async def _read_by_value(self, call: Exchange, obj: str, prop: str,
                             values: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for start in range(0, len(values), MAX_INPUTS):
            body = {"idProperty": prop, "properties": [prop],
                    "inputs": [{"id": v} for v in values[start:start + MAX_INPUTS]]}
            await call("read", self._post(f"/crm/v3/objects/{obj}/batch/read", body),
                       partial(self._hits, prop=prop, into=found))
        return found

    async def _search(self, call: Exchange, obj: str, prop: str,
                      values: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for start in range(0, len(values), IN_VALUES):
            chunk = values[start:start + IN_VALUES]
            found.update(await self._search_values(call, obj, prop, chunk))
        return found

    async def _search_values(self, call: Exchange, obj: str, prop: str,
                             values: list[str]) -> dict[str, list[str]]:
        """Every record with `prop` IN values, page by page (200 a page, by id). A search
        reaches 10,000 results at most: past them, values seen twice are settled (they are
        ambiguous anyway) and the others are searched again on their own."""
        found: dict[str, list[str]] = {}
        after, seen = None, 0
        while True:
            body = {"filterGroups": [{"filters": [
                        {"propertyName": prop, "operator": "IN", "values": values}]}],
                    "properties": [prop], "limit": SEARCH_PAGE,
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]}
            if after is not None:
                body["after"] = after
            page: dict = {}
            await call("search", self._post(f"/crm/v3/objects/{obj}/search", body),
                       partial(self._hits, prop=prop, into=found, page=page))
            seen += len(page.get("results") or [])
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if after is None:
                return found
            if seen + SEARCH_PAGE > SEARCH_REACH:
                rest = [v for v in values if len(found.get(v, [])) < 2]
                if not rest or len(rest) == len(values):
                    return found
                return {**found, **await self._search_values(call, obj, prop, rest)}

    def _hits(self, response: httpx.Response, prop: str, into: dict[str, list[str]],
              page: dict | None = None) -> Answer:
        """Read a batch/read or search answer: value -> ids, into `into`."""
        self._check(response)
        body = json_body(response)
        for result in body.get("results", []):
            value = (result.get("properties") or {}).get(prop)
            if value and result.get("id") is not None:
                ids = into.setdefault(_norm(value), [])
                if str(result["id"]) not in ids:
                    ids.append(str(result["id"]))
        if page is not None:
            page.update(body)
        return Answer()

    # -- is a property unique? ---------------------------------------------------------------

    async def _is_unique(self, call: Exchange, obj: str, prop: str) -> bool:
        """Whether HubSpot keeps `prop`'s values unique on `obj`: asked once per run, however
        many workers ask at once."""
        key = (obj, prop)
        if key not in self._unique:
            async with self._asking():
                if key not in self._unique:
                    self._unique[key] = await self._ask_unique(call, obj, prop)
        return self._unique[key]

    def _asking(self) -> asyncio.Lock:
        # Each delivery runs its own event loop; a lock belongs to one.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _ask_unique(self, call: Exchange, obj: str, prop: str) -> bool:
        said: dict[str, bool] = {}
        path = f"/crm/v3/properties/{obj}/{prop}"

        def read(response: httpx.Response) -> Answer:
            if response.status_code == 403:
                # No schema scope (crm.schemas.*.read): search, which works for any property.
                said["unique"] = False
                return Answer()
            if response.status_code == 404:
                raise SetupError(f"HubSpot {obj} have no property {prop!r} "
                                 f"(GET {path} answered 404)")
            self._check(response)
            said["unique"] = json_body(response).get("hasUniqueValue") is True
            return Answer()

        await call("properties", lambda client: self._dest.build(client, "GET", path), read)
        return said["unique"]

    # -- after a delivered batch ---------------------------------------------------------------

    async def follow_up(self, call: Exchange, operation: str, records: list[Record],
                        answer: Answer) -> None:
        """After a delivered batch: upsert what an update could not find, then associate."""
        if operation == "update" and operation not in self.jobs:
            await self._upsert_gone(call, records, answer)
        if self.associations and operation != "archive":
            skip = {i for i, r in enumerate(records) if r.msgid in self._untouched}
            for obj, prop, _ in self.associations:
                await self._associate(call, obj, prop, records, answer, skip)
            self._untouched -= {r.msgid for r in records}

    async def _upsert_gone(self, call: Exchange, records: list[Record], answer: Answer) -> None:
        for i in _gone(answer):
            answer.ids.pop(i, None)
            again = [replace(records[i], operation="upsert", dest_id=None)]
            try:
                result = await call("upsert",
                                    partial(self.request, operation="upsert", records=again),
                                    partial(self.read, operation="upsert", records=again))
            except RequestError as failed:
                answer.rejected[i] = str(failed)
                continue
            if 0 in result.rejected or 0 not in result.ids:
                answer.rejected[i] = result.rejected.get(0) or "not upserted"
            else:
                answer.ids[i] = result.ids[0]

    async def _associate(self, call: Exchange, obj: str, prop: str, records: list[Record],
                         answer: Answer, skip: set[int]) -> None:
        wanted: dict[int, str] = {}
        for i, r in enumerate(records):
            value = (json.loads(r.payload).get(SIDE) or {}).get(obj)
            if value not in (None, "") and i in answer.ids and i not in answer.rejected \
                    and i not in skip:
                wanted[i] = str(value)
        if not wanted:
            return
        try:
            found = await self._known(call, obj, prop, {_norm(v) for v in wanted.values()})
        except RequestError as failed:
            for i in wanted:
                answer.rejected[i] = f"looking up {obj} by {prop}: {failed}"
            return
        pairs: dict[int, str] = {}
        for i, value in wanted.items():
            ids = found.get(_norm(value), [])
            if not ids:
                answer.rejected[i] = (f"association: no {obj} record with {prop} {value!r} in "
                                      f"HubSpot yet")
            elif len(ids) > 1:
                answer.rejected[i] = (f"association: {len(ids)} {obj} in HubSpot have {prop} "
                                      f"{value} (ids {', '.join(ids)}); retl will not guess "
                                      f"which to link")
            else:
                pairs[i] = ids[0]
        items = list(pairs.items())
        for start in range(0, len(items), MAX_INPUTS):
            chunk = items[start:start + MAX_INPUTS]
            body = {"inputs": [{"from": {"id": answer.ids[i]}, "to": {"id": to}}
                               for i, to in chunk]}
            path = f"/crm/v4/associations/{self.object}/{obj}/batch/associate/default"
            try:
                await call("associate", self._post(path, body),
                           partial(self._association_errors, chunk=chunk, answer=answer))
            except RequestError as failed:
                for i, _ in chunk:
                    answer.rejected[i] = f"associating with {obj}: {failed}"

    def _association_errors(self, response: httpx.Response, chunk: list[tuple[int, str]],
                            answer: Answer) -> Answer:
        self._check(response)
        by_from = {answer.ids[i]: i for i, _ in chunk}
        for error in json_body(response).get("errors", []):
            for from_id in (error.get("context") or {}).get("fromId", []):
                if str(from_id) in by_from:
                    answer.rejected[by_from[str(from_id)]] = (
                        f"association: {error.get('message', error.get('category', ''))}")
        return Answer()


def connect(name: str, config: HubSpotConfig) -> HubSpotDestination:
    token = resolve_secret(config.access_token, f"destinations.{name}.access_token")
    return HubSpotDestination(name, token or "", config.base_url, config.requests_per_10s,
                              config.max_concurrency, config.batch_size)
