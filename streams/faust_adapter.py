"""The faust adapter: how Eddy's transport-neutral agents meet faust-streaming (aiokafka transport).

Below ``agents/`` in the layering: it knows records, topics and the app, never an agent. It gives
the app factory (:func:`build_app`), the publisher on the app's producer (:class:`FaustPublisher`),
the raw view of a consumed event (:func:`to_raw`) and the raw-bytes topic of a catalogue spec
(:func:`raw_topic`). The worker (``worker/``) binds agents' handlers to these.
"""

from __future__ import annotations

import ssl

import faust

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
