"""The faust adapter: how Eddy's transport-neutral agents meet faust-streaming (aiokafka transport).

Below ``agents/`` in the layering: it knows records, topics and the app, never an agent. It gives
the app factory (:func:`build_app`), the publisher on the app's producer (:class:`FaustPublisher`),
the raw view of a consumed event (:func:`to_raw`), the raw-bytes topic of a catalogue spec
(:func:`raw_topic`), a keyed join table on disk (:func:`join_table`, :func:`event_context`) and the
partition-ownership fence of a rebalance (:func:`assignment_fence`). The worker (``worker/``) binds
agents' handlers to these.
"""

from __future__ import annotations

import ssl
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import faust
from faust.streams import _current_event
from faust.types import TP

from config.settings import MAX_RECORD_BYTES, Settings
from streams.records import RawRecord
from streams.topics import TopicSpec
from streams.tracing import inject_headers


class FaustPublisher:
    """Publisher on the app's producer (aiokafka, acks=all). ``wait`` awaits the broker's ack.

    Every record carries the W3C trace context of the span current at ``publish`` in its
    ``traceparent`` header (none when no span is recording), so output joins its input's trace.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def publish(self, topic: str, key: str | None, value: bytes, *, wait: bool = False) -> None:
        future = await self.app.send(
            topic, key=key.encode() if key is not None else None, value=value,
            key_serializer="raw", value_serializer="raw", headers=inject_headers() or None,
        )
        if wait:
            await future

    async def flush(self) -> None:
        await self.app.producer.flush()


def to_raw(event: faust.types.EventT) -> RawRecord:
    """The consumed record behind a faust event, bytes untouched."""
    message = event.message
    return RawRecord(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key,
        value=message.value, timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        headers=tuple((k, v) for k, v in (message.headers or ())),
    )


def raw_topic(app: faust.App, settings: Settings, *specs: TopicSpec) -> faust.TopicT:
    """One faust topic over the catalogue ``specs`` (several: one stream of all of them), raw bytes
    in and out; faust never declares them (``ensure_topics`` creates them from the catalogue)."""
    return app.topic(*(spec.full_name(settings) for spec in specs), key_serializer="raw",
                     value_serializer="raw", partitions=None, internal=False)


def join_table(app: faust.App, settings: Settings, name: str, *, retention_ms: int) -> faust.Table:
    """A Table of JSON values keyed by raw bytes whose changelog partition is the key's (the producer's
    partitioner: co-partitioned with topics keyed the same way), kept for ``retention_ms`` (compact +
    delete). Stored in RocksDB (faust's ``rocksdb://`` store, driver rocksdict) under the app's datadir
    (``settings.home/faust``), or in RAM with ``curator_join_store=memory``.

    The RocksDB store files a written key under the partition of faust's *current event*: write only
    inside :func:`event_context` of an event of the key's partition (deletes need none)."""
    rocksdb = settings.curator_join_store == "rocksdb"
    return app.Table(name, default=None, partitions=settings.partitions, use_partitioner=True, key_type=bytes,
                     # a Table takes the falsy URL "rocksdb://" for "the app's default store": name the path
                     store=f"rocksdb:{name}" if rocksdb else "memory://",
                     options={"driver": "rocksdict"} if rocksdb else None,
                     extra_topic_configs={"cleanup.policy": "compact,delete", "retention.ms": str(retention_ms)})


@contextmanager
def event_context(event: faust.types.EventT) -> Iterator[None]:
    """Make ``event`` faust's current event (for a batch taken with ``take_events`` it is the batch's last)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def assignment_fence(app: faust.App) -> Callable[[RawRecord], bool]:
    """Whether the app's consumer is still assigned a record's partition: after a rebalance revoked it, an
    agent stops writing for that record (its new owner processes it). True when the assignment is unknown."""
    def owns(record: RawRecord) -> bool:
        try:
            return TP(record.topic, record.partition) in app.consumer.assignment()
        except Exception:  # no consumer yet, or it is being rebuilt: do not stop work for that
            return True
    return owns


def broker_credentials(settings: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """faust's (aiokafka's) credentials for ``settings.kafka_security_protocol``; None with PLAINTEXT.
    The confluent-kafka clients take the same settings through ``Settings.kafka_client_config()``."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile is not None else None
        context = ssl.create_default_context(cafile=cafile)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=password, ssl_context=context,
                                 mechanism=settings.kafka_sasl_mechanism)


def build_app(settings: Settings) -> faust.App:
    """The faust app: aiokafka transport, no web server, commits every 0.5 s, ``MAX_RECORD_BYTES``
    records, local table state under ``settings.home / "faust"`` (one folder per app id)."""
    servers = ";".join(f"kafka://{server}" for server in settings.bootstrap_servers.split(","))
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    return faust.App(
        settings.group_id,
        broker=servers,
        broker_credentials=broker_credentials(settings),
        datadir=str(settings.home / "faust" / "{conf.name}-data"),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,  # faust creates its internal leader topic; ours come from ensure_topics
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0,
        broker_max_poll_interval=600.0,
        consumer_max_fetch_size=MAX_RECORD_BYTES,
        producer_max_request_size=MAX_RECORD_BYTES,
        producer_acks=-1,
        producer_linger=0.002,
        stream_wait_empty=False,
        stream_buffer_maxsize=512,
    )
