"""The CRM search API of the HubSpot emulator: `POST /crm/v3/objects/{object}/search`.

docs/vendor-contracts.md section 1 ("Search") has the sources. What HubSpot publishes:
filterGroups are ORed, the filters inside one group ANDed; at most 5 groups, 6 filters in a
group and 18 in all (the August 2024 changelog said 5 x 10 and 25; the current guide says
5 x 6 and 18, and the emulator keeps to the stricter); `limit` 10 by default and at most
200; paging with `paging.next.after`; no more than 10,000 results reachable by paging
(beyond is a 400); a query of at most 3,000 characters; archived records never found. The
rate limit (5 a second per account) and the missing rate-limit headers are the emulator's
gate (api.py). Where HubSpot says nothing (the wording of a 400, the order of results
without `sorts`, how NEQ treats a record without the property), the choice is marked
"emulator choice".

No HTTP and no lock here: the emulator calls `search` under its lock.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from retl_assets.emulators.common import Reply
from retl_assets.emulators.hubspot.store import CrmStore, error, invalid_input

MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
DEFAULT_LIMIT = 10
MAX_LIMIT = 200
MAX_RESULTS = 10_000
MAX_QUERY_CHARS = 3_000
OPERATORS = {  # the official client's enum
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN", "HAS_PROPERTY",
    "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
}  # fmt: skip
# The properties a search returns when the request names none (HubSpot's search guide).
DEFAULT_PROPERTIES = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
                 "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    "deals": ("amount", "closedate", "createdate", "dealname", "dealstage",
              "hs_lastmodifieddate", "hs_object_id", "pipeline"),
}  # fmt: skip
TOKEN = re.compile(r"[^\W_]+")


def search(crm: CrmStore, object_type: str, body: Any) -> Reply:
    """One page of the live records of `object_type` that match `body`."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise invalid_input("expected a search request object")
    groups = _groups(body.get("filterGroups") or [])
    limit = _integer(body.get("limit"), DEFAULT_LIMIT, "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise error(400, f"limit must be between 1 and {MAX_LIMIT}, got {limit}",
                    "VALIDATION_ERROR")  # emulator wording
    after = _integer(body.get("after"), 0, "after")
    if after < 0 or after + limit > MAX_RESULTS:
        raise error(400, f"Search results are limited to {MAX_RESULTS:,}: after {after} with "
                    f"limit {limit} pages beyond them", "VALIDATION_ERROR")  # emulator wording
    query = body.get("query")
    if query is not None and not isinstance(query, str):
        raise invalid_input("query must be a string")
    if query and len(query) > MAX_QUERY_CHARS:
        raise error(400, f"query is longer than {MAX_QUERY_CHARS} characters",
                    "VALIDATION_ERROR")
    wanted = body.get("properties")
    if wanted is not None and not (isinstance(wanted, list)
                                   and all(isinstance(p, str) for p in wanted)):
        raise invalid_input("properties must be a list of property names")
    sorts = _sorts(body.get("sorts") or [])

    found = []
    for record in crm.records[object_type].values():
        if record.archived:
            continue
        props = crm.public(object_type, record)["properties"]
        if (not groups or any(all(_matches(props, f) for f in g) for g in groups)) and (
                not query or _contains(props, query)):
            found.append((record, props))
    # Emulator choice without sorts: by id, oldest first (HubSpot promises no order).
    found.sort(key=lambda pair: int(pair[0].id))
    for name, descending in reversed(sorts):
        # Emulator choice: records without the property come last either way.
        unset = [pair for pair in found if pair[1].get(name) in (None, "")]
        found = sorted((pair for pair in found if pair[1].get(name) not in (None, "")),
                       key=lambda pair, n=name: _sort_key(pair[1][n]),
                       reverse=descending) + unset

    chosen = found[after:after + limit]
    names = list(wanted) if wanted else list(DEFAULT_PROPERTIES.get(
        object_type, ("createdate", "hs_lastmodifieddate", "hs_object_id")))
    modified = "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"
    for always in ("hs_object_id", "createdate", modified):
        if always not in names:
            names.append(always)
    results = []
    for record, props in chosen:
        public = crm.public(object_type, record)
        public["properties"] = {n: props.get(n) for n in names}  # null when not set
        results.append(public)
    reply: dict[str, Any] = {"total": len(found), "results": results}
    if after + limit < len(found):
        cursor = str(after + limit)
        reply["paging"] = {"next": {"after": cursor, "link": f"?after={cursor}"}}
    return Reply(200, reply)


def _groups(raw: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(raw, list) or not all(isinstance(g, dict) for g in raw):
        raise invalid_input("filterGroups must be a list of {filters: [...]}")
    if len(raw) > MAX_GROUPS:
        raise error(400, f"Too many filter groups: {len(raw)} (at most {MAX_GROUPS})",
                    "VALIDATION_ERROR")
    groups, total = [], 0
    for group in raw:
        filters = group.get("filters") or []
        if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
            raise invalid_input("filters must be a list of filter objects")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise error(400, f"Too many filters in a group: {len(filters)} (at most "
                        f"{MAX_FILTERS_PER_GROUP})", "VALIDATION_ERROR")  # fmt: skip
        total += len(filters)
        for f in filters:
            _check_filter(f)
        groups.append(filters)
    if total > MAX_FILTERS:
        raise error(400, f"Too many filters: {total} (at most {MAX_FILTERS})",
                    "VALIDATION_ERROR")
    return groups


def _check_filter(f: dict[str, Any]) -> None:
    name, operator = f.get("propertyName"), f.get("operator")
    if not isinstance(name, str) or not name:
        raise invalid_input("every filter needs a propertyName")
    if operator not in OPERATORS:
        raise invalid_input(f"operator {operator!r} is not one of {sorted(OPERATORS)}")
    if operator in ("IN", "NOT_IN"):
        values = f.get("values")
        if not isinstance(values, list) or not values:
            raise invalid_input(f"{operator} on {name} needs a non-empty 'values' list")
    elif operator == "BETWEEN":
        if f.get("value") is None or f.get("highValue") is None:
            raise invalid_input(f"BETWEEN on {name} needs 'value' and 'highValue'")
    elif operator not in ("HAS_PROPERTY", "NOT_HAS_PROPERTY") and f.get("value") is None:
        raise invalid_input(f"{operator} on {name} needs a 'value'")


def _integer(value: Any, default: int, name: str) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise invalid_input(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_input(f"{name} must be an integer, got {value!r}") from None


def _sorts(raw: Any) -> list[tuple[str, bool]]:
    """[(property, descending)]: the official client types sorts as strings ("createdate",
    "-createdate"); HubSpot's guide shows {propertyName, direction}. Both are read."""
    if not isinstance(raw, list):
        raise invalid_input("sorts must be a list")
    out = []
    for item in raw:
        if isinstance(item, str) and item.strip("-"):
            out.append((item.lstrip("-"), item.startswith("-")))
        elif isinstance(item, dict) and isinstance(item.get("propertyName"), str):
            out.append((item["propertyName"],
                        str(item.get("direction", "ASCENDING")).upper() == "DESCENDING"))
        else:
            raise invalid_input(f"cannot read sort {item!r}")
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equal(actual: str, wanted: Any) -> bool:
    # Emulator choice, as HubSpot behaves for email and domain: case-insensitive text.
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None:
        return a == w
    return actual.strip().lower() == _text(wanted).strip().lower()


def _compare(actual: str, wanted: Any) -> int:
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None:
        return (a > w) - (a < w)
    x, y = actual.lower(), _text(wanted).lower()
    return (x > y) - (x < y)


def _matches(props: dict[str, Any], f: dict[str, Any]) -> bool:
    operator = f["operator"]
    raw = props.get(f["propertyName"])
    present = raw not in (None, "")
    if operator == "HAS_PROPERTY":
        return present
    if operator == "NOT_HAS_PROPERTY":
        return not present
    actual = "" if raw is None else str(raw)
    if operator in ("NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN"):
        # Emulator choice: a record without the property is "not equal" too.
        positive = {"NEQ": "EQ", "NOT_IN": "IN", "NOT_CONTAINS_TOKEN": "CONTAINS_TOKEN"}
        return not present or not _matches(props, {**f, "operator": positive[operator]})
    if not present:
        return False
    if operator == "EQ":
        return _equal(actual, f["value"])
    if operator == "IN":
        return any(_equal(actual, v) for v in f["values"])
    if operator == "CONTAINS_TOKEN":
        pattern = _text(f["value"]).lower()
        return any(fnmatch.fnmatchcase(token, pattern)
                   for token in TOKEN.findall(actual.lower()))
    if operator == "BETWEEN":
        return _compare(actual, f["value"]) >= 0 and _compare(actual, f["highValue"]) <= 0
    order = _compare(actual, f["value"])
    return {"LT": order < 0, "LTE": order <= 0, "GT": order > 0, "GTE": order >= 0}[operator]


def _contains(props: dict[str, Any], query: str) -> bool:
    """Emulator choice for `query`: a case-insensitive substring of any property value."""
    needle = query.strip().lower()
    return any(needle in str(v).lower() for v in props.values() if v)


def _sort_key(value: Any) -> tuple[int, float, str]:
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value).lower())
