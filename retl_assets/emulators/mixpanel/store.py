"""The Mixpanel emulator's project: events deduplicated by Mixpanel's key, user profiles,
and the per-record validation /import (strict=1) and /engage apply.

Not thread-safe: the emulator calls it under its lock.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from retl_assets.emulators.common import Faults

MAX_EVENT_BYTES = 1_000_000
MAX_UPDATE_BYTES = 1_000_000
MAX_PROPERTIES = 255  # "fewer than 255 properties"
EARLIEST_S = 31_536_000  # 1971-01-01T00:00:00Z
FUTURE_S = 3600  # at most an hour ahead of Mixpanel's clock
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")
# Values Mixpanel refuses as distinct_id (and as $insert_id), compared case-insensitively.
DISALLOWED_IDS = frozenset({
    "00000000-0000-0000-0000-000000000000", "anon", "anonymous", "nil", "none", "null", "n/a",
    "na", "undefined", "unknown", "<nil>", "0", "-1", "true", "false", "[]", "{}",
})
PROFILE_OPS = ("$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete")


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _disallowed(value: Any) -> bool:
    return str(value).strip().lower() in DISALLOWED_IDS


def event_failure(event: Any, faults: Faults, now: float) -> tuple[str, str] | None:
    """(field, message) of why /import refuses `event`, or None when it is valid."""
    if not isinstance(event, dict):
        return "", "event must be a JSON object"
    if _size(event) > MAX_EVENT_BYTES:
        return "", "event exceeds the limit of 1MB"
    name = event.get("event")
    if not isinstance(name, str) or not name.strip():
        return "event", "'event' is invalid: must be a non-empty string"
    props = event.get("properties")
    if not isinstance(props, dict):
        return "properties", "'properties' is invalid: must be an object"
    if len(props) >= MAX_PROPERTIES:
        return "properties", f"'properties' is invalid: must have fewer than {MAX_PROPERTIES} keys"
    when = props.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        return "properties.time", ("'properties.time' is invalid: must be specified as seconds "
                                   "since epoch")
    seconds = when / 1000 if when >= 1e11 else when
    if seconds < EARLIEST_S or seconds > now + FUTURE_S:
        return "properties.time", ("'properties.time' is invalid: must be after 1971-01-01 and "
                                   "no more than 1 hour in the future")
    who = props.get("distinct_id")
    if not isinstance(who, str | int) or isinstance(who, bool) or _disallowed(who):
        return "properties.distinct_id", ("'properties.distinct_id' is invalid: must be a "
                                          "string and not a placeholder value")
    insert_id = props.get("$insert_id")
    if not (isinstance(insert_id, str) and INSERT_ID.fullmatch(insert_id)) \
            or _disallowed(insert_id):
        return "properties.$insert_id", ("'properties.$insert_id' is invalid: must be at most "
                                         "36 alphanumeric characters or '-'")
    if faults.poisons(event):
        path = faults.poison["path"] if faults.poison else ""
        return path, f"'{path}' is invalid: refused by the destination"
    return None


def update_failure(update: Any, faults: Faults) -> str | None:
    """Why /engage ignores `update`, or None when it is valid."""
    if not isinstance(update, dict):
        return "update must be a JSON object"
    token = update.get("$token")
    if not isinstance(token, str) or not token:
        return "token, missing or empty"
    who = update.get("$distinct_id")
    if not isinstance(who, str | int) or isinstance(who, bool) or str(who) == "":
        return "$distinct_id, missing or empty"
    ops = [op for op in PROFILE_OPS if op in update]
    if len(ops) != 1:
        return f"exactly one operation expected, one of {', '.join(PROFILE_OPS)}"
    op = ops[0]
    if op in ("$set", "$set_once", "$add", "$union", "$append", "$remove") \
            and not isinstance(update[op], dict):
        return f"{op} must be an object"
    if op == "$unset" and not isinstance(update[op], list):
        return "$unset must be a list of property names"
    if op == "$add" and any(isinstance(v, bool) or not isinstance(v, int | float)
                            for v in update[op].values()):
        return "$add values must be numbers"
    if _size(update) > MAX_UPDATE_BYTES:
        return "update exceeds the limit of 1MB"
    if faults.poisons(update):
        return "update refused by the destination"
    return None


class MixpanelProject:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.events: dict[tuple, dict[str, Any]] = {}  # Mixpanel's dedup key -> event
        self.profiles: dict[str, dict[str, Any]] = {}
        self.counts = {"events_imported": 0, "duplicates": 0, "profiles_created": 0,
                       "profiles_updated": 0, "profiles_deleted": 0, "updates_ignored": 0}

    def import_event(self, event: dict[str, Any]) -> None:
        props = event["properties"]
        key = (event["event"], props["time"], str(props["distinct_id"]), props["$insert_id"])
        if key in self.events:
            self.counts["duplicates"] += 1  # "only the latest ingested one" shows
        self.events[key] = copy.deepcopy(event)
        self.counts["events_imported"] += 1

    def apply(self, update: dict[str, Any]) -> None:
        who = str(update["$distinct_id"])
        if "$delete" in update:
            if self.profiles.pop(who, None) is not None:
                self.counts["profiles_deleted"] += 1
            return
        new = who not in self.profiles
        profile = self.profiles.setdefault(who, {})
        if "$set" in update:
            profile.update(copy.deepcopy(update["$set"]))
        elif "$set_once" in update:
            for k, v in update["$set_once"].items():
                profile.setdefault(k, copy.deepcopy(v))
        elif "$add" in update:
            for k, v in update["$add"].items():
                profile[k] = (profile.get(k) or 0) + v
        elif "$union" in update or "$append" in update:
            union = "$union" in update
            for k, v in update["$union" if union else "$append"].items():
                items = profile.setdefault(k, [])
                for item in v if union and isinstance(v, list) else [v]:
                    if not union or item not in items:
                        items.append(copy.deepcopy(item))
        elif "$remove" in update:
            for k, v in update["$remove"].items():
                if isinstance(profile.get(k), list) and v in profile[k]:
                    profile[k].remove(v)
        elif "$unset" in update:
            for k in update["$unset"]:
                profile.pop(k, None)
        self.counts["profiles_created" if new else "profiles_updated"] += 1

    def event_list(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(e) for e in self.events.values()]

    def profile_map(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.profiles)


__all__ = ["MixpanelProject", "event_failure", "update_failure"]
