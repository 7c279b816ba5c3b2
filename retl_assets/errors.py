"""retl's one error tree, built on `dagster.Failure` so the UI shows retl's own message.

    RetlError (dagster.Failure)
    ├── ProjectError            the project file is wrong (names the entry and field)   terminal
    ├── SourceError             the warehouse refused the query or could not be reached
    ├── ModelError              the model's rows break its contract (keys, mass delete)   terminal
    ├── LeaseHeldError          another run of the same model holds the model's lease     transient
    └── DestinationError        delivery failed as a whole
        ├── AuthError           the destination refused the credentials                 terminal
        ├── SetupError          the destination says the sync's setup is wrong          terminal
        └── UnreachableError    the destination could not be reached after retries      transient

Whether retrying can help is the class's `transient` marker, decided here once and never by
matching strings. A terminal error also tells Dagster's retry policy not to retry the run.
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


class LeaseHeldError(RetlError):
    """Another run of the same model is in progress."""

    transient = True


class DestinationError(RetlError):
    """A destination failed as a whole (not one record)."""


class AuthError(DestinationError):
    """The destination refused the credentials; retrying cannot help."""

    transient = False


class SetupError(DestinationError):
    """The destination refuses every record alike because of how the sync is set up (no such
    object, field or workspace); retrying cannot help until the project or the account
    changes."""

    transient = False


class UnreachableError(DestinationError):
    """The destination could not be reached or kept failing after every retry."""

    transient = True
