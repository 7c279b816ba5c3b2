"""retl's one error tree.

    RetlError
    ├── ProjectError            the project file is wrong (names the entry and field)
    ├── SourceError             the warehouse refused the query or could not be reached
    ├── ModelError              the model's rows break its contract (keys, mass delete)
    ├── LeaseHeldError          another run of the same model holds the model's lease
    └── DestinationError        delivery failed as a whole
        ├── AuthError           the destination refused the credentials (terminal)
        ├── SetupError          the destination says the sync's setup is wrong (terminal)
        └── UnreachableError    the destination could not be reached after retries

Whether to retry is decided by the class, never by matching strings.
"""

from __future__ import annotations


class RetlError(Exception):
    """Base of every error retl raises on purpose."""


class ProjectError(RetlError):
    """The project file is invalid; the message names the entry and field."""


class SourceError(RetlError):
    """A source could not run a model's query."""


class ModelError(RetlError):
    """A model's result breaks its contract (missing, null or duplicate keys; mass delete)."""


class LeaseHeldError(RetlError):
    """Another run of the same model is in progress."""


class DestinationError(RetlError):
    """A destination failed as a whole (not one record)."""


class AuthError(DestinationError):
    """The destination refused the credentials; retrying cannot help."""


class SetupError(DestinationError):
    """The destination refuses every record alike because of how the sync is set up (no such
    object, field or workspace); retrying cannot help until the project or the account
    changes."""


class UnreachableError(DestinationError):
    """The destination could not be reached or kept failing after every retry."""
