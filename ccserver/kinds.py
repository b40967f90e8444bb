"""The kinds of container ccserver runs, and what differs between them, said once.

Application, data and inspection containers are one thing (a container ccserver creates,
labels with its daemon id and its kind, and removes) with a few differences: the collection
that holds their documents, the image and command they run, the callback route they report
to, when they start, and what their end means.  Each :class:`Kind` says those differences;
the scheduler, the launcher, the life cycle, the callbacks and the cleanup ask the kind
instead of comparing collection names.

A new kind (a TES task's executor or staging container, say) is one more :class:`Kind` in
the :class:`Kinds` the daemon builds (``DEFAULT_KINDS.adding(kind)``) and passes to the
constructors of the parts that ask: the scheduler's loops then include it.  A kind without a
``collection`` has no documents the scheduler keeps; its containers belong to whoever runs
them (the cluster's inspections, a TES runner), and the cleanup leaves them alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ccserver.config import Config, auth_config


@dataclass(frozen=True)
class Image:
    """What a container of a kind runs."""

    image: str
    entry_point: str
    #: registry credentials (real, revealed values), or None
    auth: dict[str, str] | None = None


#: the image of a container, given the configuration and (for kinds owned by a task) the
#: task's document with its secrets revealed
ImageOf = Callable[[Config, "dict[str, Any] | None"], Image]


@dataclass(frozen=True)
class Kind:
    #: the value of the ``io.curious-containers.kind`` label and of the worker's ``container_type``
    name: str
    #: where its documents are (None: the scheduler keeps none; whoever runs it removes it)
    collection: str | None = None
    #: the callback route under the API prefix (None: it makes no callbacks)
    callback_path: str | None = None
    #: the field of its document that names the task it runs for (its end is that task's)
    task_field: str | None = None
    #: the field of its document listing the containers it needs (they must be processing
    #: before it starts), and their kind's name
    needs_field: str | None = None
    needs_kind: str | None = None
    #: processing once started (an application container); else once it says so in a
    #: callback (a data container, when its input files are there)
    processing_when_started: bool = False
    #: it succeeded once this many callbacks were recorded with success (None: it never
    #: ends by itself; it ends when nothing needs it any more)
    success_callbacks: int | None = None
    #: its address is recorded once it started (other containers download from it)
    serves_files: bool = False
    #: the vault keeps secrets of its own (forgotten when it ends)
    keeps_secrets: bool = False
    #: what it runs (None: not launched by the scheduler's launcher)
    image_of: ImageOf | None = None

    @property
    def documents(self) -> str:
        """Its collection, for a kind known to have one."""
        if self.collection is None:
            raise ValueError(f"{self.word}s have no documents")
        return self.collection

    @property
    def word(self) -> str:
        """How logs name one: "application container"."""
        return f"{self.name} container"


def _application_image(config: Config, task: dict[str, Any] | None) -> Image:
    assert task is not None, "an application container runs for a task"
    description = task["application_container_description"]
    return Image(
        description["image"],
        description.get("entry_point") or config.defaults.application_entry_point,
        description.get("registry_auth"),
    )


def _data_image(config: Config, task: dict[str, Any] | None) -> Image:
    dc = config.defaults.data_container
    return Image(dc.image, dc.entry_point, auth_config(dc.registry_auth))


APPLICATION = Kind(
    name="application",
    collection="application_containers",
    callback_path="/application-containers/callback",
    task_field="task_id",
    needs_field="data_container_ids",
    needs_kind="data",
    processing_when_started=True,
    success_callbacks=4,
    image_of=_application_image,
)
DATA = Kind(
    name="data",
    collection="data_containers",
    callback_path="/data-containers/callback",
    serves_files=True,
    keeps_secrets=True,
    image_of=_data_image,
)
#: run by the cluster before a node that was dead is used again; no documents
INSPECTION = Kind(name="inspection")


class Kinds:
    """The kinds known to one daemon, looked up by name (the label) or by collection.
    Immutable: :meth:`adding` makes a new one."""

    def __init__(self, *kinds: Kind) -> None:
        self._all = kinds
        self._by_name: dict[str, Kind] = {}
        self._by_collection: dict[str, Kind] = {}
        for kind in kinds:
            self._add(kind)

    def adding(self, *kinds: Kind) -> Kinds:
        return Kinds(*self._all, *kinds)

    def _add(self, kind: Kind) -> None:
        if kind.name in self._by_name:
            raise ValueError(f"container kind {kind.name!r} is registered already")
        if kind.collection is not None and kind.collection in self._by_collection:
            raise ValueError(
                f"collection {kind.collection!r} belongs to kind {self._by_collection[kind.collection].name!r}"
            )
        self._by_name[kind.name] = kind
        if kind.collection is not None:
            self._by_collection[kind.collection] = kind

    def named(self, name: str) -> Kind | None:
        return self._by_name.get(name)

    def of(self, collection: str) -> Kind | None:
        """The kind whose documents are in ``collection`` (None: not a container collection)."""
        return self._by_collection.get(collection)

    def __getitem__(self, collection: str) -> Kind:
        kind = self._by_collection.get(collection)
        if kind is None:
            raise KeyError(f"no container kind keeps its documents in {collection!r}")
        return kind

    def kept(self) -> Iterator[Kind]:
        """The kinds whose documents the scheduler keeps (in registration order)."""
        return iter(self._by_collection.values())

    def collections(self) -> tuple[str, ...]:
        return tuple(self._by_collection)

    def needing(self, kind: Kind) -> Iterator[Kind]:
        """The kinds whose containers need containers of ``kind``."""
        return (k for k in self._by_collection.values() if k.needs_kind == kind.name)


#: the kinds of 0.10
DEFAULT_KINDS = Kinds(APPLICATION, DATA, INSPECTION)
