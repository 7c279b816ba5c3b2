"""The in-memory account behind the Conversion emulator: contacts (by userId and email),
events (by eventId), custom objects (by type and id) related to contacts.

No HTTP here: conversion.py parses requests, holds the lock and calls in. A whole request
refused leaves as `Refused` with Conversion's `{"message"}` body; an item that fails gets
its own result. Facts are from docs/vendor-contracts.md section 8 (events: Conversion's
"track event" and "batch track events" pages). Still UNVERIFIED there, so marked "emulator
choice" here: the field names of a failed item's error, and everything about custom objects.
"""

from __future__ import annotations

import copy
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from retl_assets.emulators.common import Faults, Refused, Reply

MAX_CONTACTS = 1000
MAX_EVENTS = 200
MAX_OBJECTS = 200  # emulator choice, as the client's (UNVERIFIED)
MAX_EXPORT = 1000
SUBSCRIPTION = {"NOT_SUBSCRIBED", "SUBSCRIBED", "UNSUBSCRIBED", "BOUNCED", "COMPLAINED"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def bad_request(message: str) -> Refused:
    return Refused(400, {"message": message})


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ItemError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code, self.message = code, message


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _object(item: dict[str, Any], name: str) -> dict[str, Any]:
    value = item.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ItemError("invalid_field", f"{name} must be an object")
    return value


class Account:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}  # cnvContactId -> contact
        self.by_email: dict[str, str] = {}
        self.by_user: dict[str, str] = {}
        self.events: dict[str, dict[str, Any]] = {}  # eventId -> event
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}  # type -> id -> object
        self.counts = {"created": 0, "updated": 0, "deleted": 0, "events_created": 0,
                       "events_updated": 0, "objects_created": 0, "objects_updated": 0,
                       "item_errors": 0}

    # -- lookups ------------------------------------------------------------------------------

    def find(self, user_id: str | None, email: str | None) -> dict[str, Any] | None:
        """userId wins; else email. An email held by a contact with another userId is a
        conflict (vendor-contracts: `conflicting_identifier`)."""
        if user_id and user_id in self.by_user:
            return self.contacts[self.by_user[user_id]]
        if email and email.lower() in self.by_email:
            contact = self.contacts[self.by_email[email.lower()]]
            if user_id and contact["userId"] and contact["userId"] != user_id:
                raise ItemError("conflicting_identifier",
                                f"{email} belongs to a contact with another userId")
            return contact
        return None

    def _identity(self, item: Any) -> tuple[str | None, str | None]:
        if not isinstance(item, dict):
            raise ItemError("invalid_item", "item is not an object")
        user_id, email = _text(item.get("userId")), _text(item.get("email"))
        if not user_id and not email:
            raise ItemError("missing_identifier", "userId or email is required")
        if email and not EMAIL.match(email):
            raise ItemError("invalid_email", f"{email!r} is not a valid email address")
        return user_id, email

    # -- contacts -----------------------------------------------------------------------------

    def upsert_contacts(self, body: Any, faults: Faults) -> Reply:
        items = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_CONTACTS:
            raise bad_request(f"contacts must be an array of 1 to {MAX_CONTACTS} contacts")
        options = {k: bool(body.get(k)) for k in ("updateOnly", "preserveExistingFields")}
        results = []
        for item in items:
            try:
                if faults.poisons(item):
                    raise ItemError("invalid_field", "value refused (poison)")
                contact, created = self._upsert_contact(item, **options)
                results.append({"success": True, "cnvContactId": contact["cnvContactId"],
                                "contactCreated": created})
            except ItemError as e:
                self.counts["item_errors"] += 1
                results.append({"success": False, "error": e.code, "message": e.message})
        return Reply(200, {"data": {"results": results}})

    def _upsert_contact(self, item: Any, updateOnly: bool,
                        preserveExistingFields: bool) -> tuple[dict[str, Any], bool]:
        user_id, email = self._identity(item)
        fields = _object(item, "fields")
        company = _object(item, "companyFields")
        status = item.get("subscriptionStatus")
        if status is not None and status not in SUBSCRIPTION:
            raise ItemError("invalid_subscription_status", f"{status!r} is not a status")
        contact = self.find(user_id, email)
        if contact is None:
            if updateOnly:
                raise ItemError("contact_not_found", "no contact matches and updateOnly is set")
            if not email:
                raise ItemError("email_required", "an email is required to create a contact")
            contact = {"cnvContactId": f"cnv_{uuid.uuid4().hex[:16]}", "userId": None,
                       "email": None, "fields": {}, "companyFields": {},
                       "subscriptionStatus": "NOT_SUBSCRIBED", "createdAt": now_iso()}
            self.contacts[contact["cnvContactId"]] = contact
            created = True
        else:
            created = False
        if email and email.lower() != (contact["email"] or "").lower():
            if email.lower() in self.by_email:
                raise ItemError("conflicting_identifier", f"{email} belongs to another contact")
            self.by_email.pop((contact["email"] or "").lower(), None)
            contact["email"] = email
            self.by_email[email.lower()] = contact["cnvContactId"]
        if user_id and user_id != contact["userId"]:
            self.by_user.pop(contact["userId"] or "", None)
            contact["userId"] = user_id
            self.by_user[user_id] = contact["cnvContactId"]
        for target, values in (("fields", fields), ("companyFields", company)):
            for name, value in values.items():
                if preserveExistingFields and contact[target].get(name) is not None:
                    continue
                contact[target][name] = copy.deepcopy(value)
        if status is not None:
            contact["subscriptionStatus"] = status
        contact["updatedAt"] = now_iso()
        self.counts["created" if created else "updated"] += 1
        return contact, created

    def delete_by_email(self, email: str) -> Reply:
        cid = self.by_email.pop(email.lower(), None)
        if cid is None:
            raise Refused(404, {"message": "Contact not found"})
        contact = self.contacts.pop(cid)
        self.by_user.pop(contact["userId"] or "", None)
        self.counts["deleted"] += 1
        return Reply(200, {"success": True, "message": "Contact deleted"})

    def get_by_email(self, email: str) -> Reply:
        cid = self.by_email.get(email.lower())
        if cid is None:
            raise Refused(404, {"message": "Contact not found"})
        return Reply(200, {"data": copy.deepcopy(self.contacts[cid])})

    def export(self, body: Any) -> Reply:
        body = body if isinstance(body, dict) else {}
        limit = body.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_EXPORT:
            raise bad_request(f"limit must be 1 to {MAX_EXPORT}")
        ids = sorted(self.contacts)
        start = int(body["cursor"]) if str(body.get("cursor", "")).isdigit() else 0
        page = ids[start:start + limit]
        more = start + limit < len(ids)
        return Reply(200, {"data": [copy.deepcopy(self.contacts[i]) for i in page],
                           "pagination": {"nextCursor": str(start + limit) if more else None}})

    # -- events -------------------------------------------------------------------------------

    def track(self, body: Any, faults: Faults) -> Reply:
        """{"events": [...]} (1-200) -> 200 {"data": {processed, tracked, failed, results}},
        one result per event in request order; a failed event does not fail the request."""
        items = body.get("events") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_EVENTS:
            raise bad_request(f"events must be an array of 1 to {MAX_EVENTS} events")
        results = []
        for item in items:
            try:
                if faults.poisons(item):
                    raise ItemError("invalid_field", "value refused (poison)")
                event = self._track(item)
                results.append({"success": True, "cnvEventId": event["cnvEventId"],
                                "cnvContactId": event["cnvContactId"]})
            except ItemError as e:
                self.counts["item_errors"] += 1
                # Emulator choice: Conversion's examples show only successful results, so
                # the name and shape of a failed result's error field are unverified.
                results.append({"success": False,
                                "error": {"code": e.code, "message": e.message}})
        tracked = sum(1 for r in results if r["success"])
        return Reply(200, {"data": {"processed": len(items), "tracked": tracked,
                                    "failed": len(items) - tracked, "results": results}})

    def _track(self, item: Any) -> dict[str, Any]:
        user_id, email = self._identity(item)
        name = _text(item.get("event"))
        if not name:  # required; the name is `event` (not event_name, not name)
            raise ItemError("missing_event", "event is required")
        stamp = item.get("timestamp")
        if stamp is not None and not (isinstance(stamp, str) and ISO.match(stamp)):
            raise ItemError("invalid_timestamp", f"{stamp!r} is not an ISO 8601 timestamp")
        data = _object(item, "data")
        contact = self.find(user_id, email)
        if contact is None:  # events never create contacts
            raise ItemError("contact_not_found", "no contact matches userId or email")
        event_id = _text(item.get("eventId")) or uuid.uuid4().hex
        old = self.events.get(event_id)  # a repeated eventId updates the event in place
        event = {"eventId": event_id,
                 "cnvEventId": old["cnvEventId"] if old else f"evt_{uuid.uuid4().hex[:16]}",
                 "cnvContactId": contact["cnvContactId"], "event": name,
                 "timestamp": stamp or now_iso(), "data": data}
        self.events[event_id] = event
        self.counts["events_updated" if old else "events_created"] += 1
        return event

    # -- custom objects (UNVERIFIED: our design, mirroring the contacts batch) ---------------

    def upsert_objects(self, object_type: str, body: Any, faults: Faults) -> Reply:
        items = body.get("objects") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_OBJECTS:
            raise bad_request(f"objects must be an array of 1 to {MAX_OBJECTS} objects")
        results = []
        for item in items:
            try:
                if faults.poisons(item):
                    raise ItemError("invalid_field", "value refused (poison)")
                obj, created = self._upsert_object(object_type, item)
                results.append({"success": True, "cnvObjectId": obj["cnvObjectId"],
                                "objectCreated": created})
            except ItemError as e:
                self.counts["item_errors"] += 1
                results.append({"success": False, "error": e.code, "message": e.message})
        return Reply(200, {"data": {"results": results}})

    def _upsert_object(self, object_type: str, item: Any) -> tuple[dict[str, Any], bool]:
        user_id, email = self._identity(item)
        object_id = _text(item.get("id")) if isinstance(item.get("id"), str) else None
        if not object_id:
            raise ItemError("missing_id", "id is required")
        fields = _object(item, "fields")
        relationship = _object(item, "relationshipFields")
        contact = self.find(user_id, email)
        if contact is None:  # objects relate to a contact; they never create one
            raise ItemError("contact_not_found", "no contact matches userId or email")
        store = self.objects.setdefault(object_type, {})
        created = object_id not in store
        obj = store.setdefault(object_id, {"id": object_id, "fields": {}, "relationships": {},
                                           "cnvObjectId": f"obj_{uuid.uuid4().hex[:16]}"})
        obj["fields"].update(copy.deepcopy(fields))
        link = obj["relationships"].setdefault(contact["cnvContactId"], {})
        link.update(copy.deepcopy(relationship))
        self.counts["objects_created" if created else "objects_updated"] += 1
        return obj, created
