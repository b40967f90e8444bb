"""Shared pieces of the reference container worker: states, errors, redaction.

Standard library only: the worker runs inside images that have nothing but python3.  Kept
light on purpose (no urllib, no ssl): every container starts a fresh interpreter, and a
container without input or result files never needs them (see :mod:`openers`).
"""

import os
import sys
import time
import traceback

STATE_SUCCESS = 3
STATE_FAILED = 4

# Seconds for every blocking socket operation (connect, each read/write) of every network call.
NET_TIMEOUT = float(os.environ.get("CC_WORKER_NET_TIMEOUT", "60"))
# Longest std_out / std_err tail and exception text sent in a callback.
TAIL_BYTES = 64 * 1024
EXCEPTION_CHARS = 16 * 1024
# Keys whose string values are secrets wherever they appear in settings or work descriptions.
SECRET_KEYS = {"password", "callback_key", "input_file_keys", "url", "token", "secret", "api_key"}


class WorkerError(Exception):
    """A failure with a description meant for the server (no secrets in it)."""

    def __init__(self, description, exit_code=1):
        super().__init__(description)
        self.description = description
        self.exit_code = exit_code


def log(message):
    print("cc-worker: " + message, file=sys.stderr, flush=True)


class Redactor:
    """Replaces known secret strings (passwords, keys, URLs) in texts that leave the container."""

    def __init__(self):
        self._secrets = set()

    def add(self, value):
        if isinstance(value, str) and len(value) >= 4:
            self._secrets.add(value)

    def add_from(self, obj, secret=False):
        """Collects the string values under SECRET_KEYS anywhere in a JSON-like object."""
        if isinstance(obj, dict):
            for key, value in obj.items():
                self.add_from(value, secret or key in SECRET_KEYS)
        elif isinstance(obj, list):
            for value in obj:
                self.add_from(value, secret)
        elif secret:
            self.add(obj)

    def __call__(self, text):
        if text is None:
            return None
        text = str(text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, "***")
        return text


def describe(error):
    """A one-line description of an exception (redacted later, when it is sent)."""
    if isinstance(error, WorkerError):
        return error.description
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def exception_text(redact):
    """The current exception's traceback, redacted and bounded."""
    text = redact(traceback.format_exc())
    if len(text) > EXCEPTION_CHARS:
        text = "...\n" + text[-EXCEPTION_CHARS:]
    return text


def backoff(attempt, base=0.5, cap=8.0):
    time.sleep(min(cap, base * (2**attempt)))


def file_size_mb(path):
    """Size in MB rounded up (the unit of CC-Container-Worker 0.10's telemetry), None when missing."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    return -(-size // (1024 * 1024))
