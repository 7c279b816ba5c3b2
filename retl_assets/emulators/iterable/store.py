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


PROJECT_TYPES = ("hybrid", "email", "userId")
OTHER = {"email": "userId", "userId": "email"}
SUFFIX = {"email": "Emails", "userId": "UserIds"}
PLACEHOLDER_DOMAIN = "placeholder.email"
# A failure: (the failedUpdates key, the identifier value it lists), or ("disallowed", name).
Failure = tuple[str, str]


class IterableStore:
    """disallowed_event_names: event names the project refuses (disallowedEventNames).
    events_create_users: False answers an event for an unknown user with notFound*.
    project_type: how the project identifies users (Iterable's "Project Types and Unique
    Identifiers"): "hybrid" (email and userId, both unique), "email" (email unique, userId
    an updatable field) or "userId" (userId unique, email an updatable field)."""

    def __init__(self, disallowed_event_names: set[str], events_create_users: bool,
                 project_type: str = "hybrid") -> None:
        if project_type not in PROJECT_TYPES:
            raise ValueError(f"project_type must be one of {PROJECT_TYPES}, got {project_type!r}")
        self.disallowed_event_names = disallowed_event_names
        self.events_create_users = events_create_users
        self.project_type = project_type
        self.clear()

    def clear(self) -> None:
        self.users: list[dict[str, Any]] = []  # {email, userId, dataFields}
        # Lookups by identity stay O(1) as the project grows (a list scan made 20k users
        # quadratic and the emulator, not the vendor's limit, the bottleneck). A value maps
        # to a list: email-based projects do not enforce userId uniqueness, userID-based
        # projects do not enforce email uniqueness.
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

    def lookup_kind(self, item: dict[str, Any]) -> str | None:
        """Which identifier finds the user of `item`: email wins when both are given (hybrid
        and email-based projects; Iterable's "Creating and Identifying Users with Iterable
        APIs"), userId always in a userID-based project. None: the item names nobody this
        project can look up (no identifier, or an email alone in a userID-based project)."""
        given = [k for k in ("email", "userId") if item.get(k) not in (None, "")]
        if self.project_type == "userId":
            return "userId" if "userId" in given else None
        return given[0] if given else None

    def other_identifier(self, item: dict[str, Any], kind: str) -> str | None:
        """The identifier that is not the lookup key, given at the top level or in
        dataFields (how Iterable documents setting a userId in an email-based project): the
        value the user's profile takes."""
        other = OTHER[kind]
        value = item.get(other)
        if value in (None, ""):
            fields = item.get("dataFields")
            value = fields.get(other) if isinstance(fields, dict) else None
        if not isinstance(value, str) or not value:
            return None
        return value.lower() if other == "email" else value

    # -- users --------------------------------------------------------------------------------

    def user_failure(self, item: dict[str, Any], kind: str, faults: Faults) -> Failure | None:
        """Why `item` fails, as (failedUpdates key, identifier value), or None."""
        key = str(item[kind])
        invalid_data = (f"invalidData{SUFFIX[kind]}", key)
        if failure := self._identity_failure(item, kind):
            return failure
        fields = item.get("dataFields", {})
        if not isinstance(fields, dict) or faults.poisons(item):
            return invalid_data
        # An identifier in dataFields (the other one, e.g. a userId beside an email) that is
        # malformed is listed under its own key, by its own value: invalidEmails holds
        # "Malformed email addresses found either at the top level ... or in dataFields",
        # invalidUserIds the same for userIds (the spec's FailedUserUpdates).
        email = fields.get("email")
        if email is not None and not (isinstance(email, str) and EMAIL.match(email)):
            return ("invalidEmails", str(email))
        user_id = fields.get("userId")
        if user_id is not None and not valid_user_id(user_id):
            # The spec types userId a string; a number is malformed here (emulator choice).
            return ("invalidUserIds", str(user_id))
        for name, value in fields.items():
            known = self.field_types.get(name)
            if value is not None and known and known != json_type(value):
                return invalid_data  # a field's type cannot change
        user = self.find(kind, key)
        if user is None and kind == "userId" and self.project_type == "email" \
                and item.get("preferUserId") is not True:
            # "If only userId is passed ... and there is no matching user, Iterable returns
            # an error" unless preferUserId; which list names it is an emulator choice.
            return ("notFoundUserIds", key)
        other = OTHER[kind]
        value = self.other_identifier(item, kind)
        if value is not None and self._unique(other):
            holder = self.find(other, value)
            if holder is not None and holder is not user:
                return (f"conflict{SUFFIX[other]}", value)
        return None

    def update(self, item: dict[str, Any], kind: str) -> set[str]:
        """Apply one valid user: overwrite the top-level fields given; the fields it added to
        the project."""
        user = self.find(kind, str(item[kind]))
        if user is None:
            value = str(item[kind])
            user = {"email": None, "userId": None, "dataFields": {}}
            user[kind] = value.lower() if kind == "email" else value
            if self.project_type == "email" and kind == "userId":
                # preferUserId: Iterable gives the new user a placeholder email address.
                user["email"] = f"{uuid.uuid4().hex}@{PLACEHOLDER_DOMAIN}"
            self.users.append(user)
            self._add(user)
            self.counts["created"] += 1
        else:
            self.counts["updated"] += 1
        other = self.other_identifier(item, kind)
        if other is not None and user[OTHER[kind]] != other:
            self._remove(user)
            user[OTHER[kind]] = other  # "the userId field is updated/overwritten"
            self._add(user)
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
        gone = list(self._index[kind].get(value) or ())
        if not gone:
            return 0
        for user in gone:
            self._remove(user)
        ids = {id(u) for u in gone}
        self.users = [u for u in self.users if id(u) not in ids]
        self.counts["deleted"] += len(ids)
        return len(ids)

    # -- events -------------------------------------------------------------------------------

    def event_failure(self, event: dict[str, Any], kind: str, faults: Faults) -> Failure | None:
        """Why `event` fails, as (failedUpdates key, identifier value) or ("disallowed",
        eventName), or None."""
        key = str(event[kind])
        if failure := self._identity_failure(event, kind):
            return failure
        if event["eventName"] in self.disallowed_event_names:
            return ("disallowed", event["eventName"])
        if faults.poisons(event):
            return (f"invalid{SUFFIX[kind]}", key)
        if not self.events_create_users and self.find(kind, key) is None:
            return (f"notFound{SUFFIX[kind]}", key)
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

    # -- helpers ------------------------------------------------------------------------------

    def _identity_failure(self, item: dict[str, Any], kind: str) -> Failure | None:
        """A malformed or forgotten identifier: the lookup key, and the other one when it is
        given at the top level too."""
        kinds = [kind] + [OTHER[kind]] if item.get(OTHER[kind]) not in (None, "") else [kind]
        for which in kinds:
            value = item[which]
            if which == "email" and not (isinstance(value, str) and EMAIL.match(value)):
                return ("invalidEmails", str(value))
            if which == "userId" and not valid_user_id(value):
                return ("invalidUserIds", str(value))
        if str(item[kind]) in self.forgotten:
            return (f"forgotten{SUFFIX[kind]}", str(item[kind]))
        return None

    def _unique(self, kind: str) -> bool:
        """Whether the project enforces uniqueness of `kind` (the Project Types table)."""
        return self.project_type in ("hybrid", kind)

    def _add(self, user: dict[str, Any]) -> None:
        for kind in ("email", "userId"):
            if user[kind] is not None:
                self._index[kind].setdefault(user[kind], []).append(user)

    def _remove(self, user: dict[str, Any]) -> None:
        for kind in ("email", "userId"):
            entry = self._index[kind].get(user[kind]) if user[kind] is not None else None
            if entry is None:
                continue
            entry[:] = [u for u in entry if u is not user]
            if not entry:
                del self._index[kind][user[kind]]


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
