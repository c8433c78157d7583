"""Create and check the catalogue's topics (confluent-kafka AdminClient)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from config.settings import Settings
from streams.topics import CATALOGUE, TopicSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicStatus:
    spec: TopicSpec
    name: str
    exists: bool
    partitions: int | None
    cleanup_policy: str | None
    expected_partitions: int

    @property
    def ok(self) -> bool:
        return (
            self.exists
            and self.partitions == self.expected_partitions
            and self.cleanup_policy == self.spec.cleanup_policy
        )

    @property
    def problem(self) -> str:
        if not self.exists:
            return "missing"
        issues = []
        if self.partitions != self.expected_partitions:
            issues.append(f"{self.partitions} partitions, expected {self.expected_partitions}")
        if self.cleanup_policy != self.spec.cleanup_policy:
            issues.append(f"cleanup.policy={self.cleanup_policy}, expected {self.spec.cleanup_policy}")
        return "; ".join(issues)


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 3,
                        **settings.kafka_client_config()})


def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = CATALOGUE, timeout_s: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Existing ones are left as they are."""
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(spec.full_name(settings), num_partitions=spec.partition_count(settings),
                 replication_factor=1 if settings.embedded_kafka else -1, config=spec.config())
        for spec in specs
        if spec.full_name(settings) not in existing
    ]
    created = []
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: a concurrent creator won
                    raise
        log.info("created topics: %s", ", ".join(created))
    return created


def describe_topics(settings: Settings, timeout_s: float = 10.0) -> list[TopicStatus]:
    """The catalogue against the cluster: existence, partitions, cleanup policy of each topic."""
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout_s).topics
    names = {spec.full_name(settings): spec for spec in CATALOGUE}
    present = [n for n in names if n in metadata]
    policies: dict[str, str | None] = {}
    if present:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in present])
        for resource, future in futures.items():
            entry = future.result(timeout=timeout_s).get("cleanup.policy")
            policies[resource.name] = entry.value if entry is not None else None
    out = []
    for name, spec in names.items():
        md = metadata.get(name)
        out.append(TopicStatus(
            spec=spec, name=name, exists=md is not None,
            partitions=len(md.partitions) if md is not None else None,
            cleanup_policy=policies.get(name), expected_partitions=spec.partition_count(settings),
        ))
    return out


def consumer_lag(settings: Settings, timeout_s: float = 10.0) -> dict[str, dict[str, int]]:
    """Lag (high watermark minus committed offset, summed over partitions) per consumer group and topic.

    Only Eddy's topics (those with the configured prefix) are reported; a partition without a
    committed offset counts its whole log as lag.
    """
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

    admin = admin_client(settings)
    groups = admin.list_consumer_groups(request_timeout=timeout_s).result()
    ids = sorted(g.group_id for g in groups.valid)
    out: dict[str, dict[str, int]] = {}
    if not ids:
        return out
    probe = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "eddy-lag-probe",
                      **settings.kafka_client_config(),
                      "enable.auto.commit": False, "log_level": 3})
    try:
        for group_id in ids:
            futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)])
            result = futures[group_id].result(timeout=timeout_s)
            for tp in result.topic_partitions or []:
                if not tp.topic.startswith(settings.topic_prefix):
                    continue
                _, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
                committed = tp.offset if tp.offset >= 0 else 0
                out.setdefault(group_id, {}).setdefault(tp.topic, 0)
                out[group_id][tp.topic] += max(0, high - committed)
    finally:
        probe.close()
    return out
