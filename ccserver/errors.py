"""What can go wrong in the domain, said in the domain's words.

Domain modules (tasks, callbacks, queries, authentication, document checks) raise these and
know nothing of HTTP; :func:`ccserver.web.errors.render_failure` maps each kind to its status
code in one table.  The message of an error is what the client reads, so it names the
problem and never holds a secret.

The five kinds are the bases of that table; the specific exceptions below say what happened,
and an answer's status follows from the kind they are.  Some kinds are as in 0.10 rather than
what a newer API would pick: an unknown task id is :class:`Invalid` (a 400), not a 404.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses; ``message`` is for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- the kinds --------------------------------------------------------------------------


class Invalid(DomainError):
    """What was asked is malformed, or impossible in the current state."""


class Unauthenticated(DomainError):
    """Who asks could not be established: no, malformed or wrong credentials, or a lockout."""


class NotAllowed(DomainError):
    """Who asks is known, but may not do this."""


class NotFound(DomainError):
    """What was asked for does not exist."""


class Unavailable(DomainError):
    """The request is fine, but cannot be served now; the client may try again later."""


# --- what happened ----------------------------------------------------------------------


class NotStorable(Invalid):
    """A document the database cannot store as given (``$`` or ``.`` in keys, too deep)."""


class BadId(Invalid):
    """A string where an id belongs that is not one (24 hex digits)."""


class UnknownTask(Invalid):
    """A task id that does not exist, or that belongs to someone else (answered alike)."""


class QueryRefused(Invalid):
    """An aggregation pipeline that the query whitelist does not accept."""


class CallbackRefused(Invalid):
    """A container callback that is out of order, reports a failure, or names what is gone."""


class WrongCallbackKey(Unauthenticated):
    """A callback for an unknown container, or with a key that is not the container's."""


class BadCredentials(Unauthenticated):
    """Credentials missing, malformed, wrong, or of a locked-out user."""
