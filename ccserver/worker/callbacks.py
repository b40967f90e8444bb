"""Callbacks from a container to the server (cc-protocol §7)."""

import http.client
import json
import urllib.parse

from .common import NET_TIMEOUT, STATE_FAILED, STATE_SUCCESS, WorkerError, backoff, log

# HTTP answers worth another try: a proxy or a restarting server. Never a 4xx, never a 500 (the
# callback may have been processed, and a repeated callback would be out of order).
RETRY_STATUS = {502, 503, 504}


class CallbackError(WorkerError):
    """The server refused a callback or could not be reached: no further callback makes sense."""

    def __init__(self, description):
        super().__init__(description, exit_code=2)


class Callbacks:
    """Sends the callbacks of one container, numbered from 0 in the order they are sent."""

    def __init__(self, settings, redact, attempts=5, timeout=None):
        self.url = settings["callback_url"]
        self.key = settings["callback_key"]
        self.container_id = settings["container_id"]
        self.redact = redact
        self.attempts = attempts
        self.timeout = NET_TIMEOUT if timeout is None else timeout
        self.next_type = 0
        self.failed_sent = False  # a failed callback went out: nothing more to report
        # plain http.client over one kept-alive connection: a container's four callbacks cost
        # one connection, and the worker starts without urllib (and without ssl for http)
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.netloc.rsplit("@", 1)[-1]
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection = None

    def _connect(self):
        if self._connection is None:
            if self._https:
                from .openers import ssl_context

                self._connection = http.client.HTTPSConnection(
                    self._host, timeout=self.timeout, context=ssl_context(True)
                )
            else:
                self._connection = http.client.HTTPConnection(self._host, timeout=self.timeout)
        return self._connection

    def _drop(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def success(self, description, telemetry=None):
        return self.send(STATE_SUCCESS, description, telemetry=telemetry)

    def failed(self, description, exception=None, telemetry=None):
        return self.send(STATE_FAILED, description, exception=exception, telemetry=telemetry)

    def send(self, state, description, exception=None, telemetry=None):
        """POSTs the next callback; returns the decoded JSON answer (None when the body is not JSON)."""
        callback_type = self.next_type
        self.next_type += 1
        if state != STATE_SUCCESS:
            self.failed_sent = True
        body = {
            "callback_key": self.key,
            "callback_type": callback_type,
            "container_id": self.container_id,
            "content": {
                "state": state,
                "description": self.redact(description),
                "exception": self.redact(exception),
                "telemetry": telemetry,
            },
        }
        data = json.dumps(body).encode("utf-8")
        log(f"callback {callback_type} state {state}: {self.redact(description)}")
        last = None
        for attempt in range(self.attempts):
            if attempt:
                backoff(attempt - 1)
            try:
                connection = self._connect()
                connection.request(
                    "POST",
                    self._path,
                    body=data,
                    headers={"Content-Type": "application/json", "Accept": "application/json"},
                )
                answer = connection.getresponse()
                status, raw = answer.status, answer.read()
            except (TimeoutError, http.client.HTTPException, OSError) as e:
                self._drop()
                last = f"callback {callback_type} could not reach the server: {e}"
                log(self.redact(last))
                continue
            if status >= 400:
                detail = _error_body(raw)
                last = f"the server answered callback {callback_type} with HTTP {status}{detail}"
                if status in RETRY_STATUS:
                    self._drop()
                    continue
                raise CallbackError(self.redact(last)) from None
            try:
                return json.loads(raw.decode("utf-8")) if raw.strip() else None
            except ValueError:
                return None
        raise CallbackError(self.redact(f"{last} (after {self.attempts} attempts)"))


def _error_body(raw):
    text = raw[:2048].decode("utf-8", "replace").strip()
    return ": " + text if text else ""
