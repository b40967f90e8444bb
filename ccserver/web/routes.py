"""Routes with their guard at the door (Tahoe-LAFS's ``_authorized_route`` is the model).

A user endpoint is declared with :func:`authorized_route` instead of ``app.route``: the
request's credentials are checked before the handler runs, and the handler gets the
:class:`~ccserver.auth.guard.User` as its argument after the request.  So no handler can
forget the check, nor read a body before it: a client without credentials learns nothing
about what its body would have been answered (401 comes before 415 and 400).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from klein import Klein

from ccserver.auth.guard import User
from ccserver.errors import NotAllowed

Handler = TypeVar("Handler", bound=Callable[..., Any])


class Authenticates(Protocol):
    def authenticate(self, request: Any, allow_token: bool = True) -> Any: ...


class Guarded(Protocol):
    """What a Klein application's instance offers the guard: its authenticator."""

    @property
    def auth(self) -> Authenticates: ...


@dataclass(frozen=True)
class Authorization:
    """Who may pass: any user, with a token too unless ``tokens`` is false; only admins when
    ``admin_only`` says what they alone may do (for the 403's message)."""

    tokens: bool = True
    admin_only: str | None = None

    async def check(self, owner: Guarded, request: Any) -> User:
        user: User = await owner.auth.authenticate(request, allow_token=self.tokens)
        if self.admin_only is not None and not user.is_admin:
            raise NotAllowed(f"only admins may {self.admin_only}")
        return user


def authorized_route(
    app: Klein,
    url: str,
    *,
    methods: list[str],
    tokens: bool = True,
    admin_only: str | None = None,
) -> Callable[[Handler], Handler]:
    """``@app.route(url, methods=methods)`` for a handler ``(self, request, user, ...)``
    that runs only once ``user`` is authenticated (and an admin, when ``admin_only``)."""
    authorization = Authorization(tokens, admin_only)

    def decorate(handler: Handler) -> Handler:
        @app.route(url, methods=methods)
        @functools.wraps(handler)
        async def guarded(self: Guarded, request: Any, *args: Any, **kwargs: Any) -> Any:
            user = await authorization.check(self, request)
            result = handler(self, request, user, *args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        guarded.authorization = authorization  # type: ignore[attr-defined]  # read by tests and docs
        return guarded  # type: ignore[return-value]  # same call signature, minus the user

    return decorate


def authorization_of(handler: Any) -> Authorization | None:
    """The guard of a route handler; ``None`` for a public route."""
    return getattr(handler, "authorization", None)
