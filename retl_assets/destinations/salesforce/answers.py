"""What Salesforce's answers mean, shared by sObject Collections (writer.py) and Bulk API 2.0
jobs (bulk.py): whole-request errors as the engine's Answer, per-record errors as one line."""

from __future__ import annotations

import re
from typing import Any

import httpx

from retl_assets.destinations.base import Answer, status_answer
from retl_assets.destinations.retry import parse_retry_after

GONE = ("ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY")  # a delete already done
CONCURRENCY_WAIT_S = 2.0  # Salesforce says nothing of when a concurrent slot frees
FIELDS = re.compile(r"^[\w.,]*$")


def classify(response: httpx.Response, what: str) -> Answer | None:
    """What a whole-request answer means; None for 2xx. Salesforce's errors are a list of
    {message, errorCode}; `what` (object/external id field) names the sync's setup."""
    if 200 <= response.status_code < 300:
        return None
    code, message = error_code(response)
    text = f"HTTP {response.status_code}: {code}: {message}" if code else None
    status = response.status_code
    if code == "REQUEST_LIMIT_EXCEEDED":
        if "TotalRequests" in message:
            return Answer("stop", error=f"the org's daily API request limit is spent ({text})")
        return Answer("retry", error=text, retry_after=CONCURRENCY_WAIT_S)
    if status == 404 or (status == 400 and code == "INVALID_FIELD"):
        # The object, the external id field or a mapped field does not exist: no record
        # of this sync can land until the project or the org changes.
        return Answer("setup", error=f"{what}: {text}")
    answer = status_answer(response, parse_retry_after(response.headers.get("Retry-After")))
    if answer and text:
        answer.error = text
    return answer


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
