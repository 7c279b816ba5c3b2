"""The Iterable emulator's project: users, events and the project's field types, and how
one user or event is judged (see iterable.py for the contract). Not thread-safe: the
emulator calls it under its lock.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from typing import Any

from retl_assets.emulators.common import Faults

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
USER_FAILURES = ("conflictEmails", "conflictUserIds", "forgottenEmails", "forgottenUserIds",
                 "invalidDataEmails", "invalidDataUserIds", "invalidEmails", "invalidUserIds",
                 "notFoundEmails", "notFoundUserIds")
EVENT_FAILURES = ("forgottenEmails", "forgottenUserIds", "invalidEmails", "invalidUserIds",
                  "notFoundEmails", "notFoundUserIds")


class IterableStore:
    """disallowed_event_names: event names the project refuses (disallowedEventNames).
    events_create_users: False answers an event for an unknown user with notFound*."""

    def __init__(self, disallowed_event_names: set[str], events_create_users: bool) -> None:
        self.disallowed_event_names = disallowed_event_names
        self.events_create_users = events_create_users
        self.clear()

    def clear(self) -> None:
        self.users: list[dict[str, Any]] = []  # {email, userId, dataFields}
        # Lookups by identity stay O(1) as the project grows (a list scan made 20k users
        # quadratic and the emulator, not the vendor's limit, the bottleneck).
        self._index: dict[str, dict[str, list[dict[str, Any]]]] = {"email": {}, "userId": {}}
        self.events: dict[str, dict[str, Any]] = {}  # by event id
        self.field_types: dict[str, str] = {}  # project-wide user field -> JSON type
        self.forgotten: set[str] = set()  # emails and userIds forgotten (GDPR)
        self.counts = {"created": 0, "updated": 0, "deleted": 0, "events": 0,
                       "items_failed": 0}

    def find(self, kind: str, value: str) -> dict[str, Any] | None:
        value = value.lower() if kind == "email" else value
        found = self._index[kind].get(value)
        return found[0] if found else None

    # -- users --------------------------------------------------------------------------------

    def user_failure(self, item: dict[str, Any], kind: str, faults: Faults) -> str | None:
        """The failedUpdates family (without its Emails/UserIds ending), or None."""
        if failure := self._identity_failure(item[kind], kind):
            return failure
        fields = item.get("dataFields", {})
        if not isinstance(fields, dict) or faults.poisons(item):
            return "invalidData"
        email = fields.get("email")
        if email is not None and not (isinstance(email, str) and EMAIL.match(email)):
            # Iterable lists it in invalidEmails; by email only when email is the identity,
            # else (emulator choice) as invalid data of the userId, so it maps to the user.
            return "invalid" if kind == "email" else "invalidData"
        for name, value in fields.items():
            known = self.field_types.get(name)
            if value is not None and known and known != json_type(value):
                return "invalidData"  # a field's type cannot change
        return None

    def update(self, item: dict[str, Any], kind: str) -> set[str]:
        """Apply one valid user: overwrite the top-level fields given; the fields it added to
        the project."""
        user = self.find(kind, str(item[kind]))
        if user is None:
            value = str(item[kind])
            user = {"email": None, "userId": None, "dataFields": {}}
            user[kind] = value.lower() if kind == "email" else value
            self.users.append(user)
            self._index[kind].setdefault(user[kind], []).append(user)
            self.counts["created"] += 1
        else:
            self.counts["updated"] += 1
        fields = item.get("dataFields") or {}
        merge = item.get("mergeNestedObjects") is True
        for name, value in fields.items():
            old = user["dataFields"].get(name)
            if merge and isinstance(old, dict) and isinstance(value, dict):
                value = {**old, **value}
            user["dataFields"][name] = copy.deepcopy(value)
        new = {n for n, v in fields.items() if v is not None and n not in self.field_types}
        for name, value in fields.items():
            if value is not None:
                self.field_types.setdefault(name, json_type(value))
        return new

    def delete(self, kind: str, value: str) -> int:
        """Delete by email, or every user sharing a userId; how many went."""
        value = value.lower() if kind == "email" else value
        before = len(self.users)
        if not self._index[kind].pop(value, None):
            return 0
        self.users = [u for u in self.users if u[kind] != value]
        self.counts["deleted"] += before - len(self.users)
        return before - len(self.users)

    # -- events -------------------------------------------------------------------------------

    def event_failure(self, event: dict[str, Any], kind: str, faults: Faults) -> str | None:
        """A failedUpdates family, "disallowed", or None."""
        if failure := self._identity_failure(event[kind], kind):
            return failure
        if event["eventName"] in self.disallowed_event_names:
            return "disallowed"
        if faults.poisons(event):
            return "invalid"
        if not self.events_create_users and self.find(kind, str(event[kind])) is None:
            return "notFound"
        return None

    def track(self, event: dict[str, Any], kind: str) -> None:
        if self.find(kind, str(event[kind])) is None:
            self.update({kind: event[kind]}, kind)
        stored = {k: copy.deepcopy(v) for k, v in event.items()
                  if k in ("email", "userId", "eventName", "id", "createdAt", "dataFields")}
        stored.setdefault("id", uuid.uuid4().hex)
        stored.setdefault("createdAt", int(time.time()))
        if stored["id"] not in self.events:
            self.counts["events"] += 1
        self.events[stored["id"]] = stored  # an event's id is an upsert key

    def _identity_failure(self, value: Any, kind: str) -> str | None:
        if kind == "email" and not (isinstance(value, str) and EMAIL.match(value)):
            return "invalid"
        if kind == "userId" and not valid_user_id(value):
            return "invalid"
        if str(value) in self.forgotten:
            return "forgotten"
        return None


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string"


def valid_user_id(value: Any) -> bool:
    """Not empty, at most 512 characters, printable ASCII without a trailing space."""
    return (isinstance(value, str) and value.isascii() and value.isprintable()
            and value == value.rstrip() and 0 < len(value) <= 512)
