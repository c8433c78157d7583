"""``docs.changes`` (DocumentChange) and ``index.events`` (IndexEvent)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from schemas.base import Event

ContentType = Literal["text/plain", "text/markdown", "text/x-rst", "text/html"]

#: Milvus collection names: a letter or underscore, then letters, digits, underscores.
COLLECTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
#: Suffixes of the companion collections Eddy keeps beside a collection (``X_docs``: its document
#: states; ``<EDDY_COLLECTION>_vetted``: the curator's vetted questions): no name may end with one (any case).
RESERVED_SUFFIXES = ("_docs", "_vetted")


def reserved_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a collection (it ends with a reserved suffix), or None when it can."""
    for suffix in RESERVED_SUFFIXES:
        if name.lower().endswith(suffix):
            return (f"collection name {name!r} ends with {suffix!r}, a suffix reserved for Eddy's companion "
                    f"collections ({', '.join(RESERVED_SUFFIXES)})")
    return None


def _check_collection(name: str | None) -> str | None:
    if name is not None and (problem := reserved_name_problem(name)) is not None:
        raise ValueError(problem)
    return name


#: A collection a change or a query names: :data:`COLLECTION_PATTERN`, no :data:`RESERVED_SUFFIXES`.
CollectionName = Annotated[str | None, AfterValidator(_check_collection)]


class DocumentChange(Event):
    """A document was created/updated (``upsert``) or removed (``delete``). Keyed by :meth:`record_key`.

    ``version`` is monotonic per document: the indexer ignores a change whose version is
    not newer than the newest it has applied. ``acl`` lists the groups allowed to read the
    document; empty means public. ``text`` is required for ``upsert`` and must be empty for
    ``delete``. ``collection`` names the collection (a namespace of documents that queries can
    target) the document belongs to; unset = the worker's default collection (``EDDY_COLLECTION``).
    """

    op: Literal["upsert", "delete"]
    doc_id: str = Field(min_length=1, max_length=512)
    version: int = Field(ge=0, description="monotonic per doc_id, e.g. publish time in microseconds; at most the "
                         "current time in microseconds since the epoch (plus the indexer's version_skew_s), or the "
                         "change is refused")
    source: str = Field("", max_length=256, description="name of the producer/collection of documents")
    uri: str = Field("", max_length=2048, description="where a reader can open the document")
    title: str = Field("", max_length=1024)
    text: str = Field("", description="full document text (upsert only)")
    content_type: ContentType = "text/plain"
    acl: list[str] = Field(default_factory=list, description="groups allowed to read; empty = public")
    metadata: dict[str, str] = Field(default_factory=dict)
    collection: CollectionName = Field(
        None, pattern=COLLECTION_PATTERN, description="target collection; unset = the worker's default collection "
        "(names ending in _docs or _vetted are reserved)",
    )

    def record_key(self) -> str:
        """Kafka key of this change: ``doc_id``, or ``<collection>:<doc_id>`` when a collection is named,
        so that compaction of ``docs.changes`` keeps the newest change per document per collection."""
        return self.doc_id if self.collection is None else f"{self.collection}:{self.doc_id}"

    @model_validator(mode="after")
    def _check_op(self) -> DocumentChange:
        if self.op == "upsert" and not self.text.strip():
            raise ValueError("empty document: an upsert needs non-blank text (publish op=delete to remove a document)")
        if self.op == "delete" and self.text:
            raise ValueError("a delete carries no text")
        return self


class IndexEvent(Event):
    """One per processed DocumentChange: what the indexer did and how fresh the index is. Keyed by ``doc_id``.

    ``status``: ``indexed`` (chunks written), ``unchanged`` (same content, nothing embedded),
    ``deleted``, ``stale`` (older than the version already applied; ignored),
    ``superseded`` (a newer version of the doc arrived in the same batch), ``refused`` (the version
    breaks the version rule: above the current time in microseconds plus ``version_skew_s``; nothing
    written), ``conflict`` (a newer version was written by another owner while this one was being
    written: this change's rows were removed again, and the newer version may miss chunks until it is
    published again).
    ``lag_ms`` is the time from the change's ``occurred_at`` to the moment its chunks were
    searchable in Milvus, in milliseconds.
    """

    doc_id: str
    version: int
    change_id: str = Field(description="event_id of the DocumentChange this reports on")
    status: Literal["indexed", "unchanged", "deleted", "stale", "superseded", "refused", "conflict"]
    chunks_total: int = Field(ge=0, description="chunks of the document now in the index")
    chunks_embedded: int = Field(ge=0, description="chunks whose content was new and got embedded")
    chunks_deleted: int = Field(ge=0, description="stale chunks removed")
    chunks_unchanged: int = Field(ge=0, description="chunks kept as they were (content already indexed)")
    collection: str
    embedder: str
    chunker: str
    lag_ms: float = Field(ge=0)
