"""Every TES route but the service descriptions is behind the guard."""

from __future__ import annotations

from ccserver.web.api import API
from ccserver.web.routes import Authorization, authorization_of
from ccserver.web.tes_routes import TesRoutes

PUBLIC = {"service_info", "legacy_service_info", "openapi_document"}


def test_every_tes_route_but_the_descriptions_is_guarded() -> None:
    names = {rule.endpoint for rule in TesRoutes.app.url_map.iter_rules()}
    routes = {name: getattr(TesRoutes, name) for name in names}
    unguarded = {name for name, handler in routes.items() if authorization_of(handler) is None}
    assert unguarded == PUBLIC
    guarded = set(routes) - PUBLIC
    assert guarded == {"create_task", "list_tasks", "get_task", "cancel_task"}
    assert all(authorization_of(routes[name]) == Authorization() for name in guarded)


def test_the_api_mounts_both_dialects() -> None:
    rules = {rule.rule for rule in API.app.url_map.iter_rules()}
    assert {"/ga4gh/tes/v1/", "/v1/"} <= rules
