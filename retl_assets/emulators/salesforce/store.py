"""The records of an emulated Salesforce org, and the rules every write meets, whichever API
(sObject Collections or Bulk API 2.0) carried it. docs/vendor-contracts.md section 2.

One upsert by external id (`upsert`) and one delete by Salesforce id (`delete`) are the
only writes; the HTTP module and the bulk jobs call them record by record and shape the
answers. Every record error is Salesforce's `{statusCode, message, fields}`.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FIELD_CHARS = 32_000  # a text field's longest value
EXTERNAL_ID = "External_Id__c"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$")
ID_CHARS = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class SObjectType:
    """What the org knows of one object: its id prefix, required fields, external id fields,
    email fields and (optionally) every field that exists."""

    name: str
    prefix: str
    required: frozenset[str] = frozenset()
    external_ids: frozenset[str] = frozenset({EXTERNAL_ID})
    emails: frozenset[str] = frozenset({"Email"})
    fields: frozenset[str] | None = None  # None: any field name exists
    # (relationship name, lookup field, parent object): `Account: {External_Id__c: x}` on a
    # Contact sets AccountId. A custom `X__r` needs none: it sets `X__c`, pointing at the
    # object its nested `attributes.type` names, else (emulator choice) at `X__c`.
    lookups: tuple[tuple[str, str, str], ...] = ()


DEFAULT_OBJECTS = {
    "Account": SObjectType("Account", "001", frozenset({"Name"}),
                           lookups=(("Parent", "ParentId", "Account"),)),
    "Contact": SObjectType("Contact", "003", frozenset({"LastName"}),
                           lookups=(("Account", "AccountId", "Account"),
                                    ("ReportsTo", "ReportsToId", "Contact"))),
    "Lead": SObjectType("Lead", "00Q", frozenset({"LastName", "Company"})),
}
TYPE_HINT = "attributes.type"  # a nested reference's `attributes.type`, flattened


def error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


@dataclass
class SfRecord:
    id: str
    type: str
    fields: dict[str, Any]
    created: str
    modified: str
    deleted: bool = False
    keys: set[tuple[str, str, str]] = field(default_factory=set)  # its index entries


@dataclass
class Org:
    """Every record of every object, with the external-id index. Not thread-safe: the
    emulator calls it under its lock."""

    objects: dict[str, SObjectType] = field(default_factory=lambda: dict(DEFAULT_OBJECTS))
    records: dict[str, SfRecord] = field(default_factory=dict)  # 15-char id -> record
    counts: dict[str, int] = field(
        default_factory=lambda: {"created": 0, "updated": 0, "deleted": 0})
    _index: dict[tuple[str, str, str], str] = field(default_factory=dict)
    _next: int = 1

    def clear(self) -> None:
        self.records.clear()
        self._index.clear()
        self.counts = {"created": 0, "updated": 0, "deleted": 0}
        self._next = 1

    def sobject(self, name: str) -> SObjectType | None:
        """The object's type; any custom object (`X__c`) exists with no required field."""
        if name in self.objects:
            return self.objects[name]
        if name.endswith("__c") and len(name) > 3:
            prefix = "a0" + BASE62[(sum(map(ord, name)) % 52) + 10]
            self.objects[name] = SObjectType(name, prefix)
            return self.objects[name]
        return None

    def snapshot(self, sobject: str) -> dict[str, dict[str, Any]]:
        """{id: fields} of the live records of one object."""
        return {r.id: dict(r.fields) for r in self.records.values()
                if r.type == sobject and not r.deleted}

    # -- checks -------------------------------------------------------------------------------

    def unknown_fields(self, sobject: SObjectType, names: list[str]) -> list[str]:
        """Names the object has no field for; a reference (`Rel.Field`) is unknown when its
        relationship is (the org refuses the whole request or job, as for any field)."""
        known = (sobject.fields or frozenset()) | sobject.external_ids
        out = []
        for name in names:
            head, dot, _ = name.partition(".")
            if dot:
                if self.lookup(sobject, head) is None:
                    out.append(name)
            elif sobject.fields is not None and head not in known:
                out.append(name)
        return out

    def lookup(self, sobject: SObjectType, relationship: str,
               hint: str | None = None) -> tuple[str, str] | None:
        """(lookup field, parent object) a relationship name stands for, or None."""
        for name, field_name, parent in sobject.lookups:
            if name == relationship:
                return field_name, hint or parent
        if relationship.endswith("__r") and len(relationship) > 3:
            return relationship[:-3] + "__c", hint or relationship[:-3] + "__c"
        return None

    def resolve(self, sobject: SObjectType,
                fields: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Replace each reference by external id (`Account.External_Id__c: x`) with the
        lookup field it sets (`AccountId: <the parent's id>`); the errors Salesforce gives a
        record whose reference names no record, or names it by more than one field."""
        flat: dict[str, Any] = {}
        refs: dict[str, dict[str, Any]] = {}
        for name, value in fields.items():
            head, dot, rest = name.partition(".")
            if dot:
                refs.setdefault(head, {})[rest] = value
            else:
                flat[name] = value
        errors = []
        for relationship, parts in refs.items():
            hint = parts.pop(TYPE_HINT, None)
            target = self.lookup(sobject, relationship, hint if isinstance(hint, str) else None)
            parent = self.sobject(target[1]) if target else None
            if target is None or parent is None:
                errors.append(error("INVALID_FIELD", f"No such column '{relationship}' on "
                                    f"entity '{sobject.name}'"))  # fmt: skip
                continue
            if len(parts) != 1:
                errors.append(error("INVALID_FIELD", "More than 1 field provided in an "
                                    f"external foreign key reference in entity: {parent.name}"))
                continue
            (key_field, value), = parts.items()
            if key_field != "Id" and key_field not in parent.external_ids:
                # Emulator wording: Salesforce matches a reference on an external id or Id.
                errors.append(error("INVALID_FIELD", f"{key_field} is not an external id "
                                    f"field of {parent.name}", [relationship]))  # fmt: skip
                continue
            if _blank(value):
                flat[target[0]] = None  # emulator choice: an empty reference clears the lookup
                continue
            found = (self.records.get(str(value)[:15]) if key_field == "Id"
                     else self.find(parent, key_field, value))
            if found is None or found.deleted or found.type != parent.name:
                errors.append(error("INVALID_FIELD", f"Foreign key external ID: {value} not "
                                    f"found for field {key_field} in entity {parent.name}"))
                continue
            flat[target[0]] = found.id
        return flat, errors

    def problems(self, sobject: SObjectType, fields: dict[str, Any],
                 existing: SfRecord | None) -> list[dict[str, Any]]:
        """What Salesforce says of one record's values, before anything is saved."""
        errors = []
        if "Id" in fields:
            errors.append(error("INVALID_FIELD", "Id cannot be set in an upsert by external id",
                                ["Id"]))
        missing = [f for f in sorted(sobject.required)
                   if (existing is None and _blank(fields.get(f)))
                   or (f in fields and _blank(fields[f]))]
        if missing:
            errors.append(error("REQUIRED_FIELD_MISSING",
                                f"Required fields are missing: [{', '.join(missing)}]", missing))
        for name in sorted(sobject.emails & set(fields)):
            value = fields[name]
            if not _blank(value) and not EMAIL.match(str(value)):
                errors.append(error("INVALID_EMAIL_ADDRESS",
                                    f"{name}: invalid email address: {value}", [name]))
        for name, value in fields.items():
            if isinstance(value, str) and len(value) > FIELD_CHARS:
                errors.append(error(
                    "STRING_TOO_LONG",
                    f"{name}: data value too large: {value[:40]}... (max length={FIELD_CHARS})",
                    [name]))
        return errors

    # -- writes -------------------------------------------------------------------------------

    def find(self, sobject: SObjectType, id_field: str, value: Any) -> SfRecord | None:
        rid = self._index.get((sobject.name, id_field, _norm(value)))
        return self.records.get(rid) if rid else None

    def upsert(self, sobject: SObjectType, id_field: str, fields: dict[str, Any],
               extra: list[dict[str, Any]] | None = None, apply: bool = True) -> dict[str, Any]:
        """One record by external id: Salesforce's UpsertResult. `extra` errors (a duplicate
        in the same request, a poisoned value) fail it like its own; `apply=False` checks
        without saving (allOrNone)."""
        value = fields.get(id_field)
        if _blank(value):
            return _failed(error("MISSING_ARGUMENT", f"{id_field} not specified", [id_field]))
        existing = self.find(sobject, id_field, value)
        fields, unresolved = self.resolve(sobject, fields)
        errors = [*(extra or []), *unresolved, *self.problems(sobject, fields, existing)]
        if errors:
            return _failed(*errors, rid=existing.id if existing else None)
        if not apply:
            return {"id": None, "success": True, "created": existing is None, "errors": []}
        now = now_iso()
        if existing is None:
            existing = SfRecord(self._new_id(sobject), sobject.name, {}, now, now)
            self.records[existing.id[:15]] = existing
            self.counts["created"] += 1
            created = True
        else:
            self.counts["updated"] += 1
            created = False
        existing.fields.update(fields)
        existing.modified = now
        self._reindex(sobject, existing)
        return {"id": existing.id, "success": True, "created": created, "errors": []}

    def delete(self, rid: str, apply: bool = True) -> dict[str, Any]:
        """One record by its Salesforce id: Salesforce's DeleteResult; `apply=False` checks
        without deleting (allOrNone)."""
        if not ID_CHARS.match(rid or ""):
            return _failed(error("MALFORMED_ID", f"malformed id {rid}"), upsert=False)
        record = self.records.get(rid[:15])
        if record is None:
            return _failed(error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"),
                           upsert=False)
        if record.deleted:
            return _failed(error("ENTITY_IS_DELETED", "entity is deleted"), upsert=False)
        if not apply:
            return {"id": record.id, "success": True, "errors": []}
        record.deleted = True  # to the recycle bin: kept, out of the external-id index
        record.modified = now_iso()
        self._reindex(self.objects[record.type], record)
        self.counts["deleted"] += 1
        return {"id": record.id, "success": True, "errors": []}

    def _new_id(self, sobject: SObjectType) -> str:
        n, digits = self._next, ""
        self._next += 1
        while n:
            n, d = divmod(n, 62)
            digits = BASE62[d] + digits
        base = sobject.prefix + "5g" + digits.rjust(10, "0")
        return base + _suffix(base)

    def _reindex(self, sobject: SObjectType, record: SfRecord) -> None:
        for key in record.keys:
            if self._index.get(key) == record.id[:15]:
                del self._index[key]
        record.keys = set()
        if record.deleted:
            return
        for name in sobject.external_ids:
            value = record.fields.get(name)
            if not _blank(value):
                key = (sobject.name, name, _norm(value))
                self._index[key] = record.id[:15]
                record.keys.add(key)


def _failed(*errors: dict[str, Any], rid: str | None = None,
            upsert: bool = True) -> dict[str, Any]:
    if upsert:
        return {"id": rid, "success": False, "created": False, "errors": list(errors)}
    return {"id": rid, "success": False, "errors": list(errors)}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _norm(value: Any) -> str:
    # External ids are case-insensitive unless the field is marked case-sensitive.
    return str(value).strip().lower()


def _suffix(base: str) -> str:
    """The three characters that make a 15-character id case-insensitive (18 characters)."""
    out = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(base[chunk * 5:chunk * 5 + 5]) if c.isupper())
        out += SUFFIX[bits]
    return out


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


# -- Bulk API 2.0 ingest jobs -------------------------------------------------------------------

JOB_STATES = ("Open", "UploadComplete", "InProgress", "JobComplete", "Failed", "Aborted")
TERMINAL = ("JobComplete", "Failed", "Aborted")
OPERATIONS = ("upsert", "delete")  # the emulator serves these two of Salesforce's six
INTERNAL_BATCH = 10_000  # Salesforce cuts a job's data into batches of this many records
NULL = "#N/A"  # a CSV value that sets the field to null (an empty value leaves it alone)


@dataclass
class IngestJob:
    id: str
    object: str
    operation: str
    external_id: str | None
    line_ending: str
    api_version: str
    created: str
    state: str = "Open"
    data: str | None = None
    polls: int = 0
    error_message: str | None = None
    header: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Created, input
    failed: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Error, input
    unprocessed: list[list[str]] = field(default_factory=list)  # input

    def info(self) -> dict[str, Any]:
        body = {
            "id": self.id, "operation": self.operation, "object": self.object,
            "createdById": "005000000000001AAA", "createdDate": self.created,
            "systemModstamp": now_iso(), "state": self.state, "concurrencyMode": "Parallel",
            "contentType": "CSV", "apiVersion": float(self.api_version),
            "jobType": "V2Ingest", "lineEnding": self.line_ending, "columnDelimiter": "COMMA",
            "numberRecordsProcessed": len(self.successful) + len(self.failed),
            "numberRecordsFailed": len(self.failed), "retries": 0, "totalProcessingTime": 0,
        }
        if self.external_id:
            body["externalIdFieldName"] = self.external_id
        if self.state == "Open":
            body["contentUrl"] = f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches"
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


def run_job(org: Org, job: IngestJob, poison, records_left: int) -> int:
    """Process an uploaded job as Salesforce would, batch by batch; the records it used of
    the org's daily bulk allowance. `poison(fields)` is the emulator's poison fault."""
    data = job.data or ""
    if job.line_ending == "LF" and "\r\n" in data:
        return _fail(job, "ClientInputError : LineEnding is invalid on user data. Current "
                          "LineEnding setting is LF", [])
    rows = list(csv.reader(io.StringIO(data, newline="")))
    if not rows:
        return _fail(job, "InvalidBatch : Records not found", [])
    job.header, rows = rows[0], rows[1:]
    sobject = org.sobject(job.object)
    assert sobject is not None  # checked when the job was created
    need = "Id" if job.operation == "delete" else job.external_id
    if need and need not in job.header:
        return _fail(job, f"InvalidBatch : Field name not provided: {need}", rows)
    unknown = org.unknown_fields(sobject, [h for h in job.header if h != "Id"])
    if unknown:
        return _fail(job, f"InvalidBatch : Field name not found : {unknown[0]}", rows)
    if any(len(r) != len(job.header) for r in rows):
        return _fail(job, "InvalidBatch : Wrong number of columns in a record", rows)
    used = 0
    for start in range(0, len(rows), INTERNAL_BATCH):
        chunk = rows[start:start + INTERNAL_BATCH]
        if used + len(chunk) > records_left:
            _fail(job, "InvalidBatch : Daily limit of bulk records exceeded", rows[start:])
            return used
        used += len(chunk)
        values = [{h: (None if v == NULL else v) for h, v in zip(job.header, row) if v != ""}
                  for row in chunk]
        seen: dict[str, int] = {}
        for fields in values:
            key = _norm(fields.get(need or "", ""))
            seen[key] = seen.get(key, 0) + 1
        for row, fields in zip(chunk, values):
            if job.operation == "delete":
                result = org.delete(str(fields.get("Id", "")))
            else:
                extra = []
                if need and seen.get(_norm(fields.get(need, "")), 0) > 1:
                    extra.append(error("DUPLICATE_VALUE", f"Duplicate external id specified: "
                                       f"{fields.get(need)}", [need]))
                if poison(fields):
                    extra.append(error("FIELD_CUSTOM_VALIDATION_EXCEPTION",
                                       "Value refused by the emulator's poison fault"))
                result = org.upsert(sobject, need or "", fields, extra)
            if result["success"]:
                job.successful.append([result["id"], str(result.get("created", False)).lower(),
                                       *row])
            else:
                first = result["errors"][0]
                text = f"{first['statusCode']}:{first['message']}:{','.join(first['fields'])} --"
                job.failed.append([result["id"] or "", text, *row])
    job.state = "JobComplete"
    return used


def _fail(job: IngestJob, message: str, rows: list[list[str]]) -> int:
    job.state = "Failed"
    job.error_message = message
    job.unprocessed.extend(rows)
    return 0
