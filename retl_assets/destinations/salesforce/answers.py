"""What Salesforce's answers mean, shared by sObject Collections (writer.py) and Bulk API 2.0
jobs (bulk.py): whole-request errors raised as retl's errors, per-record errors as one line."""

from __future__ import annotations

import re
from typing import Any

import httpx

from retl_assets.destinations.base import raise_for_status
from retl_assets.destinations.retry import parse_retry_after
from retl_assets.errors import QuotaSpent, RateLimited, SetupError

GONE = ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY")  # a delete already done
CONCURRENCY_WAIT_S = 2.0  # Salesforce says nothing of when a concurrent slot frees
FIELDS = re.compile(r"^[\w.,]*$")
CODE = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")  # UNABLE_TO_LOCK_ROW, as in messages


def check(response: httpx.Response, what: str) -> None:
    """Raise what a whole-request answer means; nothing for 2xx. Salesforce's errors are a
    list of {message, errorCode}; `what` (object/external id field) names the sync's setup."""
    status = response.status_code
    if 200 <= status < 300:
        return
    code, message = error_code(response)
    text = f"HTTP {status}: {code}: {message}" if code else None
    if code == "REQUEST_LIMIT_EXCEEDED":
        # One code for two limits; only its message says which ("TotalRequests Limit
        # exceeded." or "ConcurrentPerOrgLongTxn Limit exceeded.").
        if "TotalRequests" in message:
            raise QuotaSpent(f"the org's daily API request limit is spent ({text})",
                             status=status)
        raise RateLimited(str(text), status=status, retry_after=CONCURRENCY_WAIT_S)
    if status == 404 or (status == 400 and code == "INVALID_FIELD"):
        # The object, the external id field or a mapped field does not exist: no record
        # of this sync can land until the project or the org changes.
        raise SetupError(f"{what}: {text}")
    raise_for_status(response, parse_retry_after(response.headers.get("Retry-After")), text)


def error_code(response: httpx.Response) -> tuple[str, str]:
    """(errorCode, message) of the first error in a Salesforce error list; ("", "") else."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
    return str(first.get("errorCode", "")), str(first.get("message", ""))


def parse_error(text: str) -> dict[str, Any]:
    """`CODE:message:Field1,Field2 --` (a bulk result's sf__Error) as {statusCode, message,
    fields}, the shape of a collections error."""
    text = text.strip().removesuffix("--").strip()
    code, _, rest = text.partition(":")
    message, fields = rest, ""
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        if FIELDS.match(tail.strip()):
            message, fields = head, tail.strip()
    return {"statusCode": code, "message": message.strip(),
            "fields": [f for f in fields.split(",") if f]}


def codes(error: dict) -> set[str]:
    """The codes a per-record error carries: its statusCode, and any code its message wraps
    (a flow or trigger reports a lock held elsewhere under its own statusCode, with
    UNABLE_TO_LOCK_ROW in the message)."""
    return {str(error.get("statusCode")), *CODE.findall(str(error.get("message", "")))}


def record_error(errors: list) -> str:
    """Salesforce's per-record errors as one line: `CODE: message [fields]; ...`."""
    parts = []
    for e in errors:
        if not isinstance(e, dict):
            continue
        fields = e.get("fields") or []
        parts.append(f"{e.get('statusCode')}: {e.get('message')}"
                     + (f" [{', '.join(map(str, fields))}]" if fields else ""))
    return "; ".join(parts) or "refused without an error"
