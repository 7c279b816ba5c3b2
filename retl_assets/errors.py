"""retl's one error tree, built on `dagster.Failure` so the UI shows retl's own message.

    RetlError (dagster.Failure)
    ├── ProjectError            the project file is wrong (names the entry and field)   terminal
    ├── SourceError             the warehouse refused the query or could not be reached
    ├── ModelError              the model's rows break its contract (keys, mass delete) terminal
    ├── LeaseHeldError          another run of the same model holds its lease           transient
    ├── DestinationError        delivery failed as a whole
    │   ├── AuthError           the destination refused the credentials                 terminal
    │   ├── SetupError          the destination says the sync's setup is wrong          terminal
    │   └── UnreachableError    the destination could not be reached after retries      transient
    └── RequestError            one request did not succeed: what next is its class
        ├── RetryableAnswer     5xx, 408, an answer retl cannot pair: back off          transient
        │   └── RateLimited     429, a busy slot: wait as the vendor asks               transient
        ├── RefusedRequest      the batch is refused whole: split to find the record    terminal
        └── QuotaSpent          nothing more may be sent this run: rows stay owed       transient

Whether retrying can help is the class's `transient` marker, decided here once and never by
matching strings. A terminal error also tells Dagster's retry policy not to retry the run.

A writer's `read()` raises a RequestError, or AuthError / SetupError, for an answer that is
not a success; the delivery engine catches them by class, so every request (a batch, a job's
step, a follow-up) gets the same decision:
- RetryableAnswer: sent again after a backoff, at most `max_retries` times; RateLimited waits
  as the vendor says instead, up to the engine's wait cap. Then the records stay owed (unsent).
- RefusedRequest: the batch is halved until the record it refuses stands alone (rejected).
- QuotaSpent: the run sends nothing more; its records stay owed and the ledger is committed.
- AuthError, SetupError: the delivery stops and the run fails, naming the destination.
RequestErrors never leave the engine; AuthError, SetupError and UnreachableError do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Failure


class RetlError(Failure):
    """Base of every error retl raises on purpose."""

    # True: the same run may succeed later unchanged (a network fault, a busy lease).
    # False: someone must change the project, the data or the account first.
    transient: bool | None = None

    def __init__(self, message: str, metadata: Mapping[str, Any] | None = None):
        super().__init__(description=message, metadata=metadata,
                         allow_retries=self.transient is not False)

    def __reduce__(self):  # picklable across Dagster's process boundaries
        return (type(self), (self.description, self.metadata))


class ProjectError(RetlError):
    """The project file is invalid; the message names the entry and field."""

    transient = False


class SourceError(RetlError):
    """A source could not run a model's query."""


class ModelError(RetlError):
    """A model's result breaks its contract (missing, null or duplicate keys; mass delete)."""

    transient = False


class MassDeleteError(ModelError):
    """A run would delete more of the model than `max_delete_fraction` allows (or all of it)."""


class LeaseHeldError(RetlError):
    """Another run of the same model is in progress."""

    transient = True


class DestinationError(RetlError):
    """A destination failed as a whole (not one record)."""

    refusal = "failed"  # what the destination did, in the message that names it

    def naming(self, destination: str) -> DestinationError:
        """The same error, its message naming the destination (a writer's read() knows the
        vendor's words, the engine which destination said them)."""
        return type(self)(f"destination {destination!r} {self.refusal}: {self.description}",
                          self.metadata)


class AuthError(DestinationError):
    """The destination refused the credentials; retrying cannot help."""

    transient = False
    refusal = "refused the credentials"


class SetupError(DestinationError):
    """The destination refuses every record alike because of how the sync is set up (no such
    object, field or workspace); retrying cannot help until the project or the account
    changes."""

    transient = False
    refusal = "refused the sync's setup"


class UnreachableError(DestinationError):
    """The destination could not be reached or kept failing after every retry."""

    transient = True


class RequestError(RetlError):
    """One request did not succeed; the subclass says what the delivery engine does next.
    `status`: the HTTP status of the answer, when there was one (data, never parsed back out
    of the message)."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds the vendor asked for (RateLimited)

    def __reduce__(self):
        return (_rebuild, (type(self), self.description, self.status, self.retry_after))


def _rebuild(cls: type[RequestError], message: str, status: int | None,
             retry_after: float | None) -> RequestError:
    return cls(message, status=status, retry_after=retry_after)


class RetryableAnswer(RequestError):
    """A passing failure (5xx, 408, an answer that cannot be paired with the records): the
    same request may succeed when sent again."""

    transient = True


class RateLimited(RetryableAnswer):
    """The vendor asks to slow down (429, a concurrency cap): wait its Retry-After (or, when
    it gives none, its documented window) and send again; not counted as a failed try."""


class RefusedRequest(RequestError):
    """The vendor refused the request's records as a batch (one bad record refuses all):
    resending the same batch cannot help, halving it isolates the record at fault."""

    transient = False


class QuotaSpent(RequestError):
    """The vendor's quota for the day (or the org) is spent: nothing more may be sent this
    run; the records stay owed for the next one."""

    transient = True
