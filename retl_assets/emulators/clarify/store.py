"""The in-memory workspace behind the Clarify emulator: people and companies, matched on
any one of their email addresses or domains, and the JSON:API shapes of their records.

No HTTP here: clarify.py parses requests, holds the lock and calls in; errors leave as
`Refused` carrying Clarify's error document, `{"errors": [{status, title, detail}]}`.
Facts come from docs/vendor-contracts.md section 7 (clarify-api-docs.vercel.app: bulk
takes 25 records and is atomic; 400 a duplicate, 404 an unknown id, 422 invalid); what
Clarify does not publish (the bulk answer, which status an oversized bulk gets, the
titles other than "Validation Error") is marked "emulator choice".
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from retl_assets.emulators.common import Faults, Refused, Reply

UNIQUE = {"person": "email_addresses", "company": "domains"}
OBJECTS = ("person", "company", "deal", "meeting", "task", "user")
NAME_PARTS = {"full_name", "first_name", "last_name"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
MAX_PAGE = 1000


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


INVALID = "Validation Error"  # Clarify's published title for a 422


def problem(status: int, title: str, detail: str, pointer: str | None = None) -> dict[str, Any]:
    """One error object. Clarify's example carries status (a number), title and detail;
    `source.pointer` (JSON:API's) is emulator choice, and our client does not need it."""
    error: dict[str, Any] = {"status": status, "title": title, "detail": detail}
    if pointer:
        error["source"] = {"pointer": pointer}
    return error


def refused(status: int, title: str, detail: str, pointer: str | None = None,
            headers: dict[str, str] | None = None) -> Refused:
    return Refused(status, {"errors": [problem(status, title, detail, pointer)]}, headers)


class Workspace:
    """Records of each object type, and an index of the unique values of people/companies.

    attributes: per object, the attributes that exist (others are refused); None accepts any.
    """

    def __init__(self, attributes: dict[str, set[str]] | None = None) -> None:
        self.attributes = attributes
        self.clear()

    def clear(self) -> None:
        self.records: dict[str, dict[str, dict[str, Any]]] = {o: {} for o in OBJECTS}
        self.index: dict[str, dict[str, str]] = {o: {} for o in UNIQUE}
        self.counts = {"created": 0, "updated": 0, "deleted": 0}

    def object(self, name: str) -> str:
        if name not in OBJECTS:
            raise refused(404, "Not Found", f"object {name!r} does not exist")
        return name

    # -- bulk upsert --------------------------------------------------------------------------

    def bulk_upsert(self, obj: str, body: Any, max_records: int, faults: Faults) -> Reply:
        """Validate every record, then apply all of them or none: Clarify's bulk is atomic,
        one invalid record refuses the batch."""
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            raise refused(400, "Bad Request", "expected {data: [{type, attributes}, ...]}",
                          "/data")
        if len(data) > max_records:
            # Emulator choice of status: Clarify publishes the limit, not its refusal.
            raise refused(422, INVALID, f"{len(data)} records, more than {max_records} in "
                          f"one bulk request", "/data")
        errors = []
        for i, item in enumerate(data):
            errors += self._invalid(obj, item, i, faults)
        if not errors:
            errors = self._conflicts(obj, data)
        if errors:
            status = 400 if all(e["status"] == 400 for e in errors) else 422
            raise Refused(status, {"errors": errors})
        return Reply(200, {"data": [self._upsert(obj, item["attributes"]) for item in data]})

    def _invalid(self, obj: str, item: Any, i: int, faults: Faults) -> list[dict[str, Any]]:
        at = f"/data/{i}"
        if not isinstance(item, dict) or not isinstance(item.get("attributes"), dict):
            return [problem(422, INVALID, "a record is {type, attributes}", at)]
        if "id" in item:  # published: an id in a POST body is a 422
            return [problem(422, INVALID, "id must not be sent when creating or upserting",
                            f"{at}/id")]
        if item.get("type") != obj:
            return [problem(422, INVALID,
                            f"type {item.get('type')!r} does not match the endpoint's {obj!r}",
                            f"{at}/type")]
        attrs = item["attributes"]
        errors = []
        if faults.poisons(item):
            errors.append(problem(422, INVALID, "value refused (poison)", at))
        known = (self.attributes or {}).get(obj)
        for name in attrs:
            if known is not None and name not in known and name != UNIQUE.get(obj):
                errors.append(problem(422, INVALID, f"{obj} has no attribute {name!r}",
                                      f"{at}/attributes/{name}"))
        unique = UNIQUE.get(obj)
        if unique:
            errors += _collection(obj, unique, attrs.get(unique), f"{at}/attributes/{unique}")
        if obj == "person" and "name" in attrs:
            errors += _name(attrs["name"], f"{at}/attributes/name")
        return errors

    def _conflicts(self, obj: str, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        unique = UNIQUE.get(obj)
        errors = []
        for i, item in enumerate(data if unique else []):
            ids = self._matches(obj, item["attributes"][unique]["items"])
            if len(ids) > 1:
                # Published: a duplicate (an email or domain collision) is a 400.
                detail = f"{unique} match more than one {obj}: {', '.join(sorted(ids))}"
                errors.append(problem(400, "Duplicate", detail, f"/data/{i}/attributes/{unique}"))
        return errors

    def _matches(self, obj: str, values: list[str]) -> set[str]:
        return {self.index[obj][v.lower()] for v in values if v.lower() in self.index[obj]}

    def _upsert(self, obj: str, attrs: dict[str, Any]) -> dict[str, Any]:
        unique = UNIQUE.get(obj)
        values = [v.lower() for v in attrs[unique]["items"]] if unique else []
        found = self._matches(obj, values)
        stamp = now_iso()
        if found:
            record = self.records[obj][found.pop()]
            current = record["attributes"]
            for name, value in attrs.items():
                if name == unique:  # emulator choice: a collection gains the new values
                    items = current[unique]["items"]
                    items += [v for v in values if v not in items]
                elif name == "name" and isinstance(value, dict) and isinstance(
                        current.get(name), dict):
                    current[name] = {**current[name], **value}
                else:
                    current[name] = copy.deepcopy(value)
            record["updated_at"] = stamp
            self.counts["updated"] += 1
        else:
            attributes = copy.deepcopy(attrs)
            if unique:
                attributes[unique] = {"items": list(dict.fromkeys(values))}
            record = {"id": str(uuid.uuid4()), "attributes": attributes,
                      "created_at": stamp, "updated_at": stamp}
            self.records[obj][record["id"]] = record
            self.counts["created"] += 1
        for v in values:
            self.index[obj][v] = record["id"]
        return self.resource(obj, record)

    # -- single records -----------------------------------------------------------------------

    def get(self, obj: str, record_id: str) -> Reply:
        record = self.records[obj].get(record_id)
        if record is None:
            raise refused(404, "Not Found", f"no {obj} with id {record_id}")
        return Reply(200, {"data": self.resource(obj, record)})

    def delete(self, obj: str, record_id: str) -> Reply:
        record = self.records[obj].pop(record_id, None)
        if record is None:
            raise refused(404, "Not Found", f"no {obj} with id {record_id}")
        unique = UNIQUE.get(obj)
        for v in record["attributes"].get(unique, {}).get("items", []) if unique else []:
            self.index[obj].pop(v.lower(), None)
        self.counts["deleted"] += 1
        return Reply(204)

    def page(self, obj: str, limit: int, offset: int, base: str) -> Reply:
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise refused(400, "Bad Request", f"page[limit] must be 1..{MAX_PAGE}")
        records = list(self.records[obj].values())
        total = len(records)
        links = {}
        if offset + limit < total:
            links["next"] = f"{base}?page[limit]={limit}&page[offset]={offset + limit}"
        if offset > 0:
            links["prev"] = f"{base}?page[limit]={limit}&page[offset]={max(offset - limit, 0)}"
        return Reply(200, {
            "data": [self.resource(obj, r) for r in records[offset:offset + limit]],
            "meta": {"total_records": total, "total_pages": -(-total // limit),
                     "offset": offset, "limit": limit},
            "links": links,
        })

    def resource(self, obj: str, record: dict[str, Any]) -> dict[str, Any]:
        attributes = {**copy.deepcopy(record["attributes"]),
                      "created_at": record["created_at"], "updated_at": record["updated_at"]}
        return {"type": obj, "id": record["id"], "attributes": attributes}

    def snapshot(self, obj: str) -> dict[str, dict[str, Any]]:
        """{id: attributes} of one object."""
        return {i: copy.deepcopy(r["attributes"]) for i, r in self.records[obj].items()}


def _collection(obj: str, name: str, value: Any, at: str) -> list[dict[str, Any]]:
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or not items:
        return [problem(422, INVALID, f"{name} must be {{items: [...]}} with at least one "
                        f"value to match a {obj} on", at)]
    pattern, what = (EMAIL, "email address") if obj == "person" else (DOMAIN, "domain")
    errors = []
    for j, v in enumerate(items):
        if not isinstance(v, str) or not pattern.match(v.lower()):
            errors.append(problem(422, INVALID, f"{v!r} is not a valid {what}",
                                  f"{at}/items/{j}"))
    return errors


def _name(value: Any, at: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, dict) or set(value) - NAME_PARTS or not all(
            v is None or isinstance(v, str) for v in value.values()):
        return [problem(422, INVALID,
                        "name is {full_name, first_name, last_name}, each a string", at)]
    return []
