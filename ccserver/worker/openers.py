"""HTTP openers of the connectors (urllib, TLS): imported only by containers that move files."""

import ssl
import urllib.request

from .common import WorkerError


def ssl_context(ssl_verify=True):
    if ssl_verify is False:
        return ssl._create_unverified_context()
    return ssl.create_default_context()


class _RewindBody:
    """Rewinds a request body file before an auth handler repeats the request after a 401."""

    def http_error_401(self, req, fp, code, msg, headers):
        if hasattr(req.data, "seek"):
            req.data.seek(0)
        return super().http_error_401(req, fp, code, msg, headers)


class _DigestHandler(_RewindBody, urllib.request.HTTPDigestAuthHandler):
    pass


class _BasicHandler(_RewindBody, urllib.request.HTTPBasicAuthHandler):
    pass


def opener_for(url, auth=None, ssl_verify=True):
    """An urllib opener for one connector: TLS verification as asked, basic (sent at once) or digest auth."""
    handlers = [urllib.request.HTTPSHandler(context=ssl_context(ssl_verify))]
    if auth:
        auth_type = str(auth.get("auth_type", "basic")).lower()
        username, password = auth.get("username", ""), auth.get("password", "")
        if auth_type == "basic":
            manager = urllib.request.HTTPPasswordMgrWithPriorAuth()
            manager.add_password(None, url, username, password, is_authenticated=True)
            handlers.append(_BasicHandler(manager))
        elif auth_type == "digest":
            manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
            manager.add_password(None, url, username, password)
            handlers.append(_DigestHandler(manager))
        else:
            raise WorkerError(f"unknown auth_type {auth_type!r} (basic or digest)")
    return urllib.request.build_opener(*handlers)
