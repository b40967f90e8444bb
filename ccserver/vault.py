"""Secrets kept out of every document a query can reach.

0.10 stored a task's connector credentials, registry passwords and notification passwords in
the task document and masked them in answers by key name.  A query pipeline can rename a field
(``{"$project": {"x": "$input_files.connector_access.password"}}``) or test it in ``$match``,
so masking the answer is not enough.  Here the documents in the queryable collections never
hold a secret:

* a task's fields that hold a secret (keys containing ``key`` or ``password``, see
  :mod:`ccserver.documents`) are stored masked; their real values go to the ``secrets``
  collection under the task's id, which no endpoint queries, and are deleted once the task
  has ended and its notifications have taken what they need.  A data container's input files
  are kept the same way under its own id;
* callback keys and the keys of a data container's input files are not stored at all: they are
  derived from the daemon's secret key (a file of its own, outside the database) and the
  container's id, so a database reader cannot call back for a container or fetch its inputs;
* data containers are shared by tasks with identical input specs, credentials included.  The
  specs are compared through keyed digests (``input_file_digests``), never through the
  masked specs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from ccserver.documents import has_secret, is_secret, mask_secrets
from ccserver.scheduling.placement import input_key
from ccserver.storage.base import Document, Store

SECRETS = "secrets"
SERVER_KEY_BYTES = 32
CALLBACK_KEY_CHARS = 48


class ServerKeyError(Exception):
    """The daemon's secret key file cannot be read or created."""


def load_server_key(path: str | os.PathLike[str]) -> bytes:
    """The daemon's secret key, created (mode 0600, in a 0700 directory) on first use.

    Runs once while the service tree is built, before the reactor runs."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as e:
        raise ServerKeyError(f"{file}: cannot read the server's secret key: {e.strerror or e}") from None
    if data:
        if len(data) < SERVER_KEY_BYTES:
            raise ServerKeyError(f"{file}: the server's secret key is shorter than {SERVER_KEY_BYTES} bytes")
        return data
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_server_key(path)  # another process made it a moment ago
    except OSError as e:
        raise ServerKeyError(f"{file}: cannot create the server's secret key: {e.strerror or e}") from None
    key = os.urandom(SERVER_KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


class Vault:
    """Derives the keys containers use, and keeps documents' secrets apart from them."""

    def __init__(self, store: Store, server_key: bytes) -> None:
        self.store = store
        self._key = server_key

    # --- derived keys ---------------------------------------------------------------------

    def _derive(self, *parts: str) -> str:
        message = "\0".join(parts).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def callback_key(self, collection: str, container_id: Any) -> str:
        """The key a container sends with its callbacks (in its settings, never stored)."""
        return self._derive("callback", collection, str(container_id))[:CALLBACK_KEY_CHARS]

    def callback_key_matches(self, collection: str, container_id: Any, given: Any) -> bool:
        if not isinstance(given, str):
            return False
        expected = self.callback_key(collection, container_id)
        return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))

    def input_file_key(self, data_container_id: Any, index: int) -> str:
        """The path segment under which a data container serves its ``index``-th input."""
        return self._derive("input-file", str(data_container_id), str(index))[:CALLBACK_KEY_CHARS]

    def input_digest(self, spec: Any) -> str:
        """A keyed digest of an input file spec, credentials included: equal for equal specs."""
        return self._derive("input-spec", input_key(spec))

    # --- documents --------------------------------------------------------------------------

    def conceal(self, doc: Document) -> Document | None:
        """Mask ``doc``'s secrets in place; the ``secrets`` document keeping their values
        (``None`` when it has none).  A task also gets the digests of its input specs."""
        if "input_files" in doc and isinstance(doc["input_files"], list):
            doc["input_file_digests"] = [self.input_digest(spec) for spec in doc["input_files"]]
        hidden = {k: v for k, v in doc.items() if is_secret(k) or has_secret(v)}
        if not hidden:
            return None
        for k, v in hidden.items():
            doc[k] = mask_secrets({k: v})[k]
        return {"_id": doc["_id"], "fields": hidden}

    async def keep(self, secrets: list[Document]) -> None:
        if secrets:
            await self.store.insert_many(SECRETS, secrets)

    async def reveal(self, doc: Document, *, by_value: bool = False) -> Document:
        """``doc`` with its secrets (a new dict; ``doc`` as it is when it kept none).

        A document without secret fields kept none (:meth:`conceal` keeps exactly the fields
        it masks, and masking keeps their names): it costs no read.  ``by_value``: the
        document's secrets are masked values under ordinary names (a TES task's passwords in
        URLs, its ``env`` values), so the vault is always read."""
        if not by_value and not has_secret(doc):
            return doc
        kept = await self.store.find_one(SECRETS, {"_id": doc["_id"]})
        if not kept:
            return doc
        return {**doc, **kept.get("fields", {})}

    async def kept(self, ids: list[Any]) -> set[Any]:
        """Which of ``ids`` still have secrets kept."""
        if not ids:
            return set()
        found = await self.store.find(SECRETS, {"_id": {"$in": list(ids)}}, projection={"_id": 1})
        return {doc["_id"] for doc in found}

    async def forget(self, ids: list[Any]) -> None:
        """Delete the secrets of documents that have ended."""
        if ids:
            await self.store.delete_many(SECRETS, {"_id": {"$in": list(ids)}})


def digests(doc: Document) -> list[Any]:
    """The identities of a document's input specs for data-container sharing: its keyed
    digests, or (documents stored before digests existed) the canonical specs themselves."""
    found = doc.get("input_file_digests")
    if isinstance(found, list):
        return found
    return [input_key(spec) for spec in doc.get("input_files") or ()]
