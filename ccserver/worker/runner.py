"""Dispatch on settings.container_type, and the inspection container."""

import importlib
import json
import signal

from .callbacks import CallbackError, Callbacks
from .common import NET_TIMEOUT, Redactor, WorkerError, exception_text, log


def _module(name):
    """The module of one container type, imported only when needed: a worker starts once per
    container, and the data container's HTTP server is tens of milliseconds of imports that
    an application container never uses."""
    return importlib.import_module(f".{name}", __package__)


def inspect(settings):
    """One GET on inspection_url: 0 when it answers with a status below 400, 1 otherwise."""
    url = settings.get("inspection_url")
    if not url:
        log("inspection: no inspection_url in the settings")
        return 1
    urllib_request = importlib.import_module("urllib.request")
    opener = urllib_request.build_opener(urllib_request.HTTPSHandler(context=_module("openers").ssl_context(True)))
    try:
        with opener.open(urllib_request.Request(url), timeout=NET_TIMEOUT) as answer:
            answer.read(65536)
            log(f"inspection: HTTP {answer.status}")
    except Exception as e:
        log(f"inspection failed: {e}")
        return 1
    return 0


def _terminate(signum, frame):
    # docker stop / kill: leave at once (as PID 1 a container ignores SIGTERM without a handler);
    # SystemExit is no Exception, so no failed callback is sent for a container being removed.
    raise SystemExit(128 + signum)


def main(argv):
    if len(argv) >= 2 and argv[0] in ("--debug", "-d"):  # accepted like 0.10, no effect
        argv = argv[1:]
    if len(argv) != 1:
        log("usage: python3 /opt/container_worker '<settings JSON>'")
        return 64
    try:
        settings = json.loads(argv[0])
        container_type = settings["container_type"]
    except (ValueError, TypeError, KeyError) as e:
        log(f"the settings argument is not JSON with container_type: {e}")
        return 64
    signal.signal(signal.SIGTERM, _terminate)
    if container_type == "inspection":
        return inspect(settings)
    if container_type not in ("application", "data"):
        log(f"unknown container_type {container_type!r}")
        return 42
    run = _module(container_type).run
    redact = Redactor()
    redact.add(settings.get("callback_key"))
    try:
        callbacks = Callbacks(settings, redact)
    except KeyError as e:
        log(f"the settings lack {e}")
        return 64
    try:
        return run(settings, callbacks, redact)
    except CallbackError as e:
        log(e.description)
        return e.exit_code
    except Exception as e:
        description = e.description if isinstance(e, WorkerError) else f"worker error: {type(e).__name__}"
        log(redact(description))
        if not callbacks.failed_sent:
            try:
                callbacks.failed(description, exception=exception_text(redact))
            except CallbackError as ce:
                log(ce.description)
        return e.exit_code if isinstance(e, WorkerError) else 1
