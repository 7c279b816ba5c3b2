"""The CleverTap emulator's account: profiles by identity, events, deletes, and the
per-record checks of the upload API with CleverTap's record error codes
(developer.clevertap.com/docs/api-errors).

Not thread-safe: the emulator calls it under its lock.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

from retl_assets.emulators.common import Faults

ID_FIELDS = ("identity", "objectId", "FBID", "GPID")
KEY_BYTES, VALUE_BYTES = 120, 512
MAX_EVENT_PROPERTIES = 256
RESTRICTED_EVENTS = frozenset({  # system events a client may not raise
    "App Launched", "App Installed", "App Uninstalled", "Notification Sent",
    "Notification Viewed", "Notification Clicked", "UTM Visited", "Session Concluded",
})
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"\+[0-9]{6,15}")
# Profile fields CleverTap validates, with the code and message of a bad value.
PROFILE_CHECKS: dict[str, tuple[int, str, Any]] = {
    "Email": (515, "Email invalid", lambda v: isinstance(v, str) and EMAIL.fullmatch(v)),
    "Phone": (516, "Phone number invalid", lambda v: isinstance(v, str) and PHONE.fullmatch(v)),
    "Gender": (514, "Gender invalid", lambda v: v in ("M", "F", "O", "U")),
    "Employed": (517, "Employment status invalid", lambda v: v in ("Y", "N")),
    "Education": (518, "Education status invalid",
                  lambda v: v in ("School", "College", "Graduate")),
    "Married": (519, "Marital status invalid", lambda v: v in ("Y", "N")),
    "Age": (520, "Age invalid",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 150),
}


def _bytes(value: Any) -> int:
    return len(value.encode()) if isinstance(value, str) else len(str(value).encode())


def _identity(record: dict[str, Any]) -> str | None:
    for field in ID_FIELDS:
        value = record.get(field)
        if isinstance(value, str) and value.strip() or \
                isinstance(value, int) and not isinstance(value, bool):
            return f"{field}:{value}"
    return None


def _ts_ok(ts: Any) -> bool:
    """UNIX epoch seconds (milliseconds are not "epoch format" to CleverTap)."""
    if isinstance(ts, str) and ts.isdigit():
        ts = int(ts)
    return isinstance(ts, int) and not isinstance(ts, bool) and 0 < ts < 10 ** 11


def record_failure(record: Any, faults: Faults) -> tuple[int, str] | None:
    """(code, error) of why the upload API refuses `record`, or None when it is valid."""
    if not isinstance(record, dict) or record.get("type") not in ("profile", "event"):
        return 524, "Data neither event nor profile"
    if _identity(record) is None:
        return 523, "Missing identity"
    if "objectId" in record and not isinstance(record["objectId"], str):
        return 526, "objectId invalid"
    if "ts" in record and not _ts_ok(record["ts"]):
        return 525, "Timestamp not in UNIX epoch format"
    if record["type"] == "event":
        name = record.get("evtName")
        if not isinstance(name, str) or not name.strip():
            return 509, "Event name mandatory"
        # CleverTap's own Node library (clevertap 1.3.0) refuses an event without an evtData
        # object, and its README sends `evtData: {}` for an event without properties: the
        # emulator holds the API to the same rule (the API's own answer is unverified).
        data = record.get("evtData")
        if not isinstance(data, dict):
            return 512, "Invalid event structure: evtData must be an object"
        if name in RESTRICTED_EVENTS:
            return 513, "Raised a restricted system event"
        if len(data) > MAX_EVENT_PROPERTIES:
            return 522, "Event properties limit exceeded"
    else:
        data = record.get("profileData")
        if not isinstance(data, dict):
            return 512, "Invalid profile structure: profileData must be an object"
        for field, (code, error, ok) in PROFILE_CHECKS.items():
            if field in data and data[field] is not None and not ok(data[field]):
                return code, error
    for key, value in data.items():
        if _bytes(key) > KEY_BYTES:
            return 555, f"key longer than {KEY_BYTES} bytes: {key[:40]}..."
        if value is not None and _bytes(value) > VALUE_BYTES:
            return 555, f"value of {key[:40]} longer than {VALUE_BYTES} bytes"
    if faults.poisons(record):
        return 555, "Miscellaneous server error"
    return None


class CleverTapAccount:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}  # "identity:<value>" -> profile
        self.events: list[dict[str, Any]] = []
        self.counts = {"profiles_created": 0, "profiles_updated": 0, "events_uploaded": 0,
                       "records_failed": 0, "delete_requests": 0, "profiles_deleted": 0}

    def store(self, record: dict[str, Any]) -> None:
        who = _identity(record)
        assert who is not None
        ts = int(record["ts"]) if "ts" in record else int(time.time())
        if record["type"] == "event":
            self.events.append({"who": who, "evtName": record["evtName"],
                                "evtData": copy.deepcopy(record.get("evtData", {})), "ts": ts})
            self.counts["events_uploaded"] += 1
            return
        new = who not in self.profiles
        profile = self.profiles.setdefault(who, {"profileData": {}, "ts": ts})
        profile["profileData"].update(copy.deepcopy(record["profileData"]))
        profile["ts"] = ts
        self.counts["profiles_created" if new else "profiles_updated"] += 1

    def delete(self, field: str, values: list[str]) -> None:
        """Remove the profiles `field` (identity or objectId) names; unknown ones are no
        error."""
        self.counts["delete_requests"] += 1
        for value in values:
            if self.profiles.pop(f"{field}:{value}", None) is not None:
                self.counts["profiles_deleted"] += 1

    def profile_map(self) -> dict[str, dict[str, Any]]:
        """{identity value: profileData} of profiles identified by `identity`, plus the others
        under their "field:value" key."""
        return {(k.split(":", 1)[1] if k.startswith("identity:") else k):
                copy.deepcopy(p["profileData"]) for k, p in self.profiles.items()}

    def event_list(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.events)


__all__ = ["CleverTapAccount", "record_failure"]
