"""The in-memory CRM behind the HubSpot emulator: records, unique-value matching, the rules
of the batch endpoints, associations. No HTTP here: api.py parses requests, holds the
lock and calls in; errors leave as `Refused` carrying HubSpot's error body.

Facts come from docs/vendor-contracts.md section 1; where HubSpot publishes nothing, the
choice is marked "emulator choice" so nobody mistakes it for the vendor's behaviour.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retl_assets.emulators.common import Faults, Refused, Reply

MAX_BATCH_INPUTS = 100  # vendor-contracts: UNVERIFIED for v3, but every client batches by 100
# Only email is unique out of the box. A company's domain is not: HubSpot refuses it as an
# idProperty ("Unable to perform update/upsert by non-unique 0-2 property domain"), so
# companies are found with the search API and created with batch/create (vendor-contracts
# section 1). A portal's own unique properties are given with `unique_properties`.
DEFAULT_UNIQUE_PROPERTIES: dict[str, set[str]] = {"contacts": {"email"}, "companies": set()}
OBJECT_ALIASES = {  # v3/v4 paths accept singular names and type ids for the standard objects
    "contact": "contacts", "0-1": "contacts",
    "company": "companies", "0-2": "companies",
    "deal": "deals", "0-3": "deals",
    "ticket": "tickets", "0-5": "tickets",
}  # fmt: skip
OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5"}
# HUBSPOT_DEFINED unlabelled association types; 279 is in vendor-contracts, the rest from
# HubSpot's association type table (unverified here).
DEFAULT_ASSOCIATION_TYPES = {
    ("contacts", "companies"): 279, ("companies", "contacts"): 280,
    ("deals", "contacts"): 3, ("contacts", "deals"): 4,
    ("deals", "companies"): 341, ("companies", "deals"): 342,
}  # fmt: skip
# The property definitions GET /crm/v3/properties/{object}/{name} answers: HubSpot-defined
# properties the emulator knows by label (others are the portal's own, labelled by name).
DEFAULT_PROPERTY_LABELS = {
    "contacts": {"email": "Email", "firstname": "First Name", "lastname": "Last Name"},
    "companies": {"domain": "Company Domain Name", "name": "Company name"},
    "deals": {"dealname": "Deal Name", "amount": "Amount"},
}
PROPERTY_GROUPS = {"contacts": "contactinformation", "companies": "companyinformation",
                   "deals": "dealinformation", "tickets": "ticketinformation"}
# Loose on purpose: it catches what HubSpot refuses in practice (no @, no dot in the domain,
# spaces) without pretending to implement RFC 5322.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CASE_INSENSITIVE = {"email", "domain"}

# Records a request a correct client never sends (stats["contract_violations"]).
Violation = Callable[[str], None]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, message: str, category: str, **extra: Any) -> Refused:
    """HubSpot's error envelope; a fresh correlationId each time, like the real API."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    return Refused(status, {**body, "category": category, **extra})


def invalid_input(reason: str) -> Refused:
    return error(400, f"Invalid input JSON: {reason}", "VALIDATION_ERROR")


def standard_error(category: str, message: str, context: dict[str, Any],
                   **extra: Any) -> dict[str, Any]:
    """One entry of a batch answer's `errors`: HubSpot's StandardError, whose schema requires
    status, category, message, context, errors and links (the official client refuses an
    entry without them when it validates)."""
    return {"status": "error", "category": category, "message": message, "context": context,
            "errors": [], "links": {}, **extra}


def property_errors(details: list[dict[str, Any]]) -> str:
    """HubSpot puts the per-property detail as a JSON string inside `message`."""
    return "Property values were not valid: " + json.dumps(details, separators=(",", ":"))


def canonical_object(name: str) -> str:
    return OBJECT_ALIASES.get(name, name)


def _text(value: Any) -> str:
    """HubSpot stores every property value as a string; it answers with strings too."""
    if value is None:
        return ""  # emulator choice: null clears, as "" does
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class _Record:
    id: str
    properties: dict[str, str]
    created_at: str
    updated_at: str
    archived: bool = False
    keys: set[tuple[str, str]] = field(default_factory=set)  # its entries in the unique index


@dataclass
class _Input:
    index: int
    id: str  # the unique value as sent (HubSpot's id for idProperty hs_object_id)
    id_property: str
    properties: dict[str, str]
    trace_id: str | None
    raw: dict[str, Any]


class CrmStore:
    """Records per object type, a unique-value index over live records, associations.

    Not thread-safe: the emulator calls every method under its lock.
    """

    def __init__(
        self,
        unique_properties: dict[str, set[str]],
        properties: dict[str, set[str]] | None,
        multi_status: bool,
    ) -> None:
        self.unique = {canonical_object(k): set(v) for k, v in unique_properties.items()}
        self.properties = (
            None if properties is None
            else {canonical_object(k): set(v) for k, v in properties.items()}
        )  # fmt: skip
        self.multi_status = multi_status
        self.object_types = sorted(set(self.unique) | set(self.properties or {}))
        self.clear()

    def clear(self) -> None:
        self.records: dict[str, dict[str, _Record]] = {t: {} for t in self.object_types}
        self._index: dict[str, dict[tuple[str, str], str]] = {t: {} for t in self.object_types}
        self.associations: dict[tuple[str, str, str, str], int] = {}
        self._next_id = 1001
        self.counts = {"created": 0, "updated": 0, "archived": 0, "inputs_refused": 0}

    # -- reading ------------------------------------------------------------------------------

    def object_type(self, name: str) -> str:
        canonical = canonical_object(name)
        if canonical not in self.records:
            # Emulator choice of wording; HubSpot refuses unknown object types with a 400.
            raise error(400, f"Unable to infer object type from: {name}", "VALIDATION_ERROR")
        return canonical

    def snapshot(self, object_type: str, include_archived: bool = True) -> dict[str, Any]:
        return {
            rid: {
                "properties": dict(r.properties),
                "archived": r.archived,
                "createdAt": r.created_at,
                "updatedAt": r.updated_at,
            }
            for rid, r in self.records[object_type].items()
            if include_archived or not r.archived
        }

    def association_list(self) -> list[dict[str, Any]]:
        return [
            {"fromObject": f, "fromId": fid, "toObject": t, "toId": tid, "associationTypeId": k}
            for (f, fid, t, tid), k in sorted(self.associations.items())
        ]

    def public(self, object_type: str, record: _Record) -> dict[str, Any]:
        """A record as the API shows it, with the system properties HubSpot adds."""
        modified = "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"
        properties = {
            **record.properties,
            "hs_object_id": record.id,
            "createdate": record.created_at,
            modified: record.updated_at,
        }
        return {
            "id": record.id,
            "properties": properties,
            "createdAt": record.created_at,
            "updatedAt": record.updated_at,
            "archived": record.archived,
        }

    def get(self, object_type: str, key: str, id_property: str, archived: bool) -> Reply:
        if id_property == "hs_object_id":
            record = self.records[object_type].get(key)
        else:
            self._check_unique(object_type, id_property)
            rid = self._index[object_type].get((id_property, self._norm(id_property, key)))
            record = self.records[object_type].get(rid) if rid else None
        if record is None or record.archived != archived:
            raise error(
                404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND",
                context={"id": [key]},
            )  # fmt: skip
        return Reply(200, self.public(object_type, record))

    def page(self, object_type: str, limit: int, after: str | None, archived: bool) -> Reply:
        # Ids are numeric strings handed out in order, so the last id seen is the cursor.
        start = int(after) if after and after.isdigit() else 0
        chosen = sorted(
            (r for r in self.records[object_type].values()
             if r.archived == archived and int(r.id) > start),
            key=lambda r: int(r.id),
        )  # fmt: skip
        body: dict[str, Any] = {"results": [self.public(object_type, r) for r in chosen[:limit]]}
        if len(chosen) > limit:
            cursor = chosen[limit - 1].id
            body["paging"] = {"next": {"after": cursor, "link": f"?after={cursor}"}}
        return Reply(200, body)

    def property_definition(self, object_type: str, name: str) -> Reply:
        """A property's definition, with `hasUniqueValue` from the portal's unique properties.
        With `properties` declared, a property neither declared nor unique does not exist:
        404 (emulator wording; HubSpot's own is unverified). The official client's model
        requires name, label, type, fieldType, groupName, description and options."""
        known = self.properties.get(object_type) if self.properties is not None else None
        unique = self.unique.get(object_type, set())
        if known is not None and name not in known | unique | {"hs_object_id"}:
            raise error(404, f"Unable to find property {name} on {object_type}",
                        "OBJECT_NOT_FOUND")
        labels = {**DEFAULT_PROPERTY_LABELS.get(object_type, {}), "hs_object_id": "Record ID"}
        return Reply(200, {
            "name": name,
            "label": labels.get(name, name),
            "type": "number" if name == "hs_object_id" else "string",
            "fieldType": "number" if name == "hs_object_id" else "text",
            "description": "",
            "groupName": PROPERTY_GROUPS.get(object_type, f"{object_type}information"),
            "options": [],
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": name in unique,
            "hidden": False,
            "hubspotDefined": name in labels,
            "formField": name in labels and name != "hs_object_id",
            "archived": False,
        })

    # -- batch upsert -------------------------------------------------------------------------

    def upsert(self, object_type: str, body: Any, faults: Faults, violation: Violation) -> Reply:
        """Validate the whole batch, then apply it (see api.py's docstring for when one bad
        input refuses the batch and when it answers 207)."""
        started = now_iso()
        inputs = self._parse_upsert(object_type, body, violation)
        problems = {i.index: self._problems(object_type, i, faults) for i in inputs}
        problems = {index: details for index, details in problems.items() if details}
        traced = bool(inputs) and len({i.trace_id for i in inputs if i.trace_id}) == len(inputs)
        partial = (self.multi_status or traced) and not faults.reject_invalid_batches
        if problems and not partial:
            # HubSpot refuses the whole batch: nothing in it is stored.
            self.counts["inputs_refused"] += len(inputs)
            details = [d for index in sorted(problems) for d in problems[index]]
            raise error(400, property_errors(details), "VALIDATION_ERROR")

        results = [self._apply(object_type, i) for i in inputs if i.index not in problems]
        reply: dict[str, Any] = {"status": "COMPLETE", "results": results}
        status = 200
        if problems:
            status = 207
            self.counts["inputs_refused"] += len(problems)
            reply["numErrors"] = len(problems)
            reply["errors"] = [self._input_error(i, problems[i.index])
                               for i in inputs if i.index in problems]  # fmt: skip
        reply.update(startedAt=started, completedAt=now_iso())
        return Reply(status, reply)

    def _parse_upsert(self, object_type: str, body: Any, violation: Violation) -> list[_Input]:
        raw_inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(raw_inputs, list):
            violation("upsert body without an inputs list")
            raise invalid_input("expected an object with an 'inputs' list")
        if len(raw_inputs) > MAX_BATCH_INPUTS:
            violation(f"{len(raw_inputs)} inputs in one batch (limit {MAX_BATCH_INPUTS})")
            raise error(
                400,
                f"Batch of {len(raw_inputs)} inputs is larger than the limit of "
                f"{MAX_BATCH_INPUTS}",
                "VALIDATION_ERROR",
            )
        parsed: list[_Input] = []
        seen: dict[tuple[str, str], str] = {}
        for index, item in enumerate(raw_inputs):
            if not isinstance(item, dict) or not _is_id(item.get("id")):
                violation(f"input {index} without an id")
                raise invalid_input(f"input {index} needs a non-empty 'id'")
            id_property = item.get("idProperty") or "hs_object_id"
            if not isinstance(id_property, str):
                raise invalid_input(f"input {index}: 'idProperty' must be a string")
            self._check_unique(object_type, id_property, violation)
            props = item.get("properties", {})
            if not isinstance(props, dict) or not all(
                v is None or isinstance(v, str | int | float | bool) for v in props.values()
            ):
                violation(f"input {index} with non-scalar properties")
                raise invalid_input(f"input {index}: 'properties' must map names to values")
            key = str(item["id"])
            properties = {str(k): _text(v) for k, v in props.items()}
            if id_property != "hs_object_id":
                # The matched value is written onto the record (email = id).
                properties[id_property] = self._norm(id_property, key)
            norm = (id_property, self._norm(id_property, key))
            if norm in seen:
                # Emulator wording; one record twice in a batch has no defined outcome.
                violation(f"duplicate id {key!r} in one batch")
                raise error(
                    400, f"Duplicate IDs found in batch input: [{key}]", "VALIDATION_ERROR"
                )
            seen[norm] = key
            trace = item.get("objectWriteTraceId")
            parsed.append(_Input(index, key, id_property, properties,
                                 trace if isinstance(trace, str) and trace else None, item))
        return parsed

    def _check_unique(
        self, object_type: str, id_property: str, violation: Violation | None = None
    ) -> None:
        if id_property == "hs_object_id" or id_property in self.unique.get(object_type, ()):
            return
        if violation is not None:
            violation(f"idProperty {id_property!r} is not unique for {object_type}")
        type_id = OBJECT_TYPE_IDS.get(object_type, object_type)
        raise error(
            400,
            f"Unable to perform update/upsert by non-unique {type_id} property {id_property}",
            "VALIDATION_ERROR",
        )

    def _problems(self, object_type: str, item: _Input, faults: Faults) -> list[dict[str, Any]]:
        """Per-property details in HubSpot's form: {isValid, message, error, name}."""
        details: list[dict[str, Any]] = []

        def bad(name: str, code: str, message: str) -> None:
            details.append({"isValid": False, "message": message, "error": code, "name": name})

        if faults.poisons(item.raw):
            bad(faults.poison["path"] if faults.poison else "", "INVALID_VALUE",
                "Value refused by the emulator's poison fault")  # fmt: skip
        known = self.properties.get(object_type) if self.properties is not None else None
        if known is not None:
            allowed = known | self.unique.get(object_type, set()) | {"hs_object_id"}
            for name in item.properties:
                if name not in allowed:
                    bad(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        email = item.properties.get("email")
        if object_type == "contacts" and email and not EMAIL.match(email):
            bad("email", "INVALID_EMAIL", f"Email address {email} is invalid")
        if item.id_property == "hs_object_id":
            record = self.records[object_type].get(item.id)
            if record is None or record.archived:
                # Emulator choice: upsert cannot create a record with a chosen HubSpot id.
                bad("hs_object_id", "OBJECT_NOT_FOUND", f"Object {item.id} does not exist")
        return details

    def _input_error(self, item: _Input, details: list[dict[str, Any]]) -> dict[str, Any]:
        context: dict[str, list[str]] = {"ids": [item.id]} if item.id else {}
        if item.trace_id:
            context["objectWriteTraceId"] = [item.trace_id]
        return standard_error("VALIDATION_ERROR", property_errors(details), context)

    def _apply(self, object_type: str, item: _Input) -> dict[str, Any]:
        now = now_iso()
        records = self.records[object_type]
        rid: str | None = item.id
        if not item.id_property:
            rid = None  # batch create: always a new record
        elif item.id_property != "hs_object_id":
            key = (item.id_property, item.properties[item.id_property])
            rid = self._index[object_type].get(key)
        record = records.get(rid) if rid is not None else None
        created = record is None
        if record is None:
            record = _Record(str(self._next_id), {}, now, now)
            self._next_id += 1
            records[record.id] = record
            self.counts["created"] += 1
        else:
            self.counts["updated"] += 1
        record.properties.update(item.properties)
        record.updated_at = now
        self._reindex(object_type, record)
        result = {**self.public(object_type, record), "new": created}
        if item.trace_id:
            result["objectWriteTraceId"] = item.trace_id
        return result

    # -- batch create -------------------------------------------------------------------------

    def create(self, object_type: str, body: Any, faults: Faults, violation: Violation) -> Reply:
        """Batch create: every input is a new record, matched on nothing (how records of an
        object without a usable unique property, such as companies, are written). 201; a
        bad input refuses the batch (400) unless every input carries an objectWriteTraceId
        or `multi_status` is set (207). A unique value already held is a 409 CONFLICT for
        the whole batch, as HubSpot answers a duplicate contact email."""
        started = now_iso()
        raw_inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(raw_inputs, list):
            violation("create body without an inputs list")
            raise invalid_input("expected an object with an 'inputs' list")
        self._check_size(raw_inputs, violation)
        inputs: list[_Input] = []
        for index, item in enumerate(raw_inputs):
            props = item.get("properties", {}) if isinstance(item, dict) else None
            if not isinstance(props, dict) or not all(
                v is None or isinstance(v, str | int | float | bool) for v in props.values()
            ):
                violation(f"create input {index} without a properties object of scalars")
                raise invalid_input(f"input {index}: 'properties' must map names to values")
            if item.get("associations"):
                # Emulator limit, said out loud: retl associates through the v4 API instead.
                raise invalid_input(f"input {index}: the emulator serves no inline associations")
            trace = item.get("objectWriteTraceId")
            inputs.append(_Input(index, "", "", {str(k): _text(v) for k, v in props.items()},
                                 trace if isinstance(trace, str) and trace else None, item))
        for prop in sorted(self.unique.get(object_type, ())):
            values = [self._norm(prop, i.properties[prop]) for i in inputs
                      if i.properties.get(prop)]
            if len(values) != len(set(values)):
                # Emulator wording; one unique value twice in a batch has no defined outcome.
                violation(f"one {prop} twice in a create batch")
                raise error(400, f"Duplicate {prop} values found in batch input",
                            "VALIDATION_ERROR")
        for item in inputs:
            for prop in sorted(self.unique.get(object_type, ())):
                value = item.properties.get(prop)
                rid = self._index[object_type].get((prop, self._norm(prop, value))) if value \
                    else None
                if rid is not None:
                    label = "Contact" if object_type == "contacts" else "Object"
                    raise error(409, f"{label} already exists. Existing ID: {rid}", "CONFLICT")
        problems = {i.index: self._problems(object_type, i, faults) for i in inputs}
        problems = {index: details for index, details in problems.items() if details}
        traced = bool(inputs) and len({i.trace_id for i in inputs if i.trace_id}) == len(inputs)
        if problems and not ((self.multi_status or traced)
                             and not faults.reject_invalid_batches):
            self.counts["inputs_refused"] += len(inputs)
            details = [d for index in sorted(problems) for d in problems[index]]
            raise error(400, property_errors(details), "VALIDATION_ERROR")
        results = []
        for item in inputs:
            if item.index not in problems:
                result = self._apply(object_type, item)
                result.pop("new", None)  # batch create answers SimplePublicObject
                results.append(result)
        reply: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if problems:
            self.counts["inputs_refused"] += len(problems)
            reply["numErrors"] = len(problems)
            reply["errors"] = [self._input_error(i, problems[i.index])
                               for i in inputs if i.index in problems]  # fmt: skip
        reply.update(startedAt=started, completedAt=now_iso())
        return Reply(207 if problems else 201, reply)

    # -- batch read and update -----------------------------------------------------------------

    def read_batch(self, object_type: str, body: Any, violation: Violation) -> Reply:
        """Records by HubSpot id or by a unique property; 207 names the values not found."""
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not all(
            isinstance(i, dict) and _is_id(i.get("id")) for i in inputs
        ):
            violation("batch/read body is not {inputs: [{id}]}")
            raise invalid_input("expected {'inputs': [{'id': ...}]}")
        self._check_size(inputs, violation)
        id_property = body.get("idProperty") or "hs_object_id"
        self._check_unique(object_type, id_property, violation)
        started = now_iso()
        results, missing = [], []
        for item in inputs:
            key = str(item["id"])
            rid = key if id_property == "hs_object_id" else self._index[object_type].get(
                (id_property, self._norm(id_property, key)))
            if rid is not None and self._live(object_type, rid):
                results.append(self.public(object_type, self.records[object_type][rid]))
            else:
                missing.append(key)
        reply: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            reply.update(numErrors=1, errors=[self._not_found(object_type, missing)])
        reply.update(startedAt=started, completedAt=now_iso())
        return Reply(207 if missing else 200, reply)

    def update(self, object_type: str, body: Any, faults: Faults, violation: Violation) -> Reply:
        """Batch update by HubSpot id (no idProperty) or a unique property. Never creates:
        ids that name no live record come back in a 207 as OBJECT_NOT_FOUND (emulator choice
        of shape, after batch/read's; HubSpot documents 200 or 207 for batch/update)."""
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(inputs, list) and any(
            isinstance(i, dict) and i.get("idProperty") == "hs_object_id" for i in inputs
        ):
            violation("batch/update with idProperty hs_object_id (send the id alone)")
            raise error(400, "Unable to perform update/upsert by non-unique "
                        f"{OBJECT_TYPE_IDS.get(object_type, object_type)} property hs_object_id",
                        "VALIDATION_ERROR")  # fmt: skip
        started = now_iso()
        parsed = self._parse_upsert(object_type, body, violation)
        found, missing = [], []
        for item in parsed:
            rid = item.id if item.id_property == "hs_object_id" else self._index[
                object_type].get((item.id_property, item.properties[item.id_property]))
            if rid is not None and self._live(object_type, rid):
                item.id, item.id_property = rid, "hs_object_id"
                found.append(item)
            else:
                missing.append(item.id)
        problems = {i.index: self._problems(object_type, i, faults) for i in found}
        problems = {index: details for index, details in problems.items() if details}
        if problems and not self.multi_status:
            self.counts["inputs_refused"] += len(parsed)
            details = [d for index in sorted(problems) for d in problems[index]]
            raise error(400, property_errors(details), "VALIDATION_ERROR")
        results = [self._apply(object_type, i) for i in found if i.index not in problems]
        errors = [self._input_error(i, problems[i.index]) for i in found if i.index in problems]
        if missing:
            errors.append(self._not_found(object_type, missing))
        reply: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            self.counts["inputs_refused"] += len(problems) + len(missing)
            reply.update(numErrors=len(errors), errors=errors)
        reply.update(startedAt=started, completedAt=now_iso())
        return Reply(207 if errors else 200, reply)

    def _not_found(self, object_type: str, ids: list[str]) -> dict[str, Any]:
        name = {"contacts": "CONTACT", "companies": "COMPANY"}.get(object_type, object_type)
        return standard_error(
            "OBJECT_NOT_FOUND",
            f"Could not get some {name} objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            {"ids": ids},
        )

    def _check_size(self, inputs: list, violation: Violation) -> None:
        if len(inputs) > MAX_BATCH_INPUTS:
            violation(f"{len(inputs)} inputs in one batch (limit {MAX_BATCH_INPUTS})")
            raise error(400, f"Batch of {len(inputs)} inputs is larger than the limit of "
                        f"{MAX_BATCH_INPUTS}", "VALIDATION_ERROR")  # fmt: skip

    # -- archive ------------------------------------------------------------------------------

    def archive(self, object_type: str, body: Any, violation: Violation) -> Reply:
        raw_inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(raw_inputs, list) or not all(
            isinstance(i, dict) and _is_id(i.get("id")) for i in raw_inputs
        ):
            violation("archive body is not {inputs: [{id}]}")
            raise invalid_input("expected {'inputs': [{'id': ...}]}")
        if len(raw_inputs) > MAX_BATCH_INPUTS:
            violation(f"{len(raw_inputs)} inputs in one batch (limit {MAX_BATCH_INPUTS})")
            raise error(400, f"Batch of {len(raw_inputs)} inputs is larger than the limit of "
                        f"{MAX_BATCH_INPUTS}", "VALIDATION_ERROR")  # fmt: skip
        now = now_iso()
        for item in raw_inputs:
            record = self.records[object_type].get(str(item["id"]))
            if record is not None and not record.archived:
                # Kept, flagged, and out of the index: a later upsert creates a new record.
                record.archived = True
                record.updated_at = now
                self._reindex(object_type, record)
                self.counts["archived"] += 1
        return Reply(204)  # whether or not the records existed

    # -- associations -------------------------------------------------------------------------

    def associate(
        self, from_type: str, to_type: str, pairs: list[tuple[str, str]], single: bool
    ) -> Reply:
        started = now_iso()
        type_id = DEFAULT_ASSOCIATION_TYPES.get((from_type, to_type))
        if type_id is None:
            raise error(400, f"No default association from {from_type} to {to_type}",
                        "VALIDATION_ERROR")  # fmt: skip
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for from_id, to_id in pairs:
            missing = [f"{t} {i}" for t, i in ((from_type, from_id), (to_type, to_id))
                       if not self._live(t, i)]  # fmt: skip
            if missing:
                errors.append(standard_error("VALIDATION_ERROR",
                                             f"No such record: {', '.join(missing)}",
                                             {"fromId": [from_id], "toId": [to_id]}))
                continue
            self.associations[(from_type, from_id, to_type, to_id)] = type_id
            # HubSpot answers each pair in both directions, each with its own type id.
            reverse = DEFAULT_ASSOCIATION_TYPES.get((to_type, from_type), type_id)
            for (a, b), kind in (((from_id, to_id), type_id), ((to_id, from_id), reverse)):
                results.append({
                    "from": {"id": a},
                    "to": {"id": b},
                    "associationSpec": {"associationCategory": "HUBSPOT_DEFINED",
                                        "associationTypeId": kind},
                })  # fmt: skip
        if single and errors:
            # A lone PUT has nothing to partially succeed; emulator choice: refuse it.
            raise error(400, errors[0]["message"], "VALIDATION_ERROR",
                        context=errors[0]["context"])  # fmt: skip
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            # The SDK declares only 200 for batch/associate/default, with optional errors.
            body.update(numErrors=len(errors), errors=errors)
        body.update(startedAt=started, completedAt=now_iso())
        return Reply(200, body)

    # -- index --------------------------------------------------------------------------------

    def _live(self, object_type: str, rid: str) -> bool:
        record = self.records.get(object_type, {}).get(rid)
        return record is not None and not record.archived

    def _norm(self, prop: str, value: str) -> str:
        return value.strip().lower() if prop in CASE_INSENSITIVE else value

    def _reindex(self, object_type: str, record: _Record) -> None:
        index = self._index[object_type]
        for key in record.keys:
            if index.get(key) == record.id:
                del index[key]
        record.keys = set()
        if record.archived:
            return
        for prop in self.unique.get(object_type, ()):
            value = record.properties.get(prop)
            if value:
                key = (prop, self._norm(prop, value))
                index[key] = record.id  # emulator choice: the latest writer owns the value
                record.keys.add(key)


def _is_id(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() != ""
    return isinstance(value, int) and not isinstance(value, bool)
