"""Shared set-up of the benchmarks: the embedded stack (started if needed) plus a worker, topics
and a collection of the benchmark's own, removed afterwards. Figures are printed, not asserted."""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from components.milvus_admin import drop_collection
from components.stats import percentile
from config.settings import Settings
from eddy.stack import Stack
from streams.admin import admin_client, ensure_topics
from streams.client import EddyClient
from streams.topics import CATALOGUE


def summary(values, unit: str = "ms") -> str:
    return (f"p50 {percentile(values, 50):.1f} {unit}, p99 {percentile(values, 99):.1f} {unit}, "
            f"mean {statistics.fmean(values):.1f} {unit}, max {max(values):.1f} {unit} (n={len(values)})")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def bench_stack(name: str, agents: tuple[str, ...],
                **overrides: object) -> Iterator[tuple[Settings, Stack, EddyClient]]:
    """A worker with its own topics/group/collection on the embedded stack; cleaned up on exit."""
    base = Settings()
    Stack(base).start_infra()
    tag = uuid.uuid4().hex[:6]
    home = base.home / "bench" / f"{name}-{tag}"
    home.mkdir(parents=True)
    (base.home / "models").mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(base.home / "models", target_is_directory=True)
    settings = base.model_copy(update={
        "home": home, "kafka_bootstrap": base.bootstrap_servers, "milvus_uri": base.milvus_address,
        "topic_prefix": f"bench-{name}-{tag}.", "group_id": f"bench-{name}-{tag}",
        "collection": f"bench_{name}_{tag}", **overrides,
    })
    ensure_topics(settings)
    stack = Stack(settings)
    client = EddyClient.from_settings(settings)
    t = time.perf_counter()
    stack.start_worker(agents)
    print(f"[{name}] worker ready in {time.perf_counter() - t:.1f}s (pid {stack.worker_status()['pid']})")
    try:
        yield settings, stack, client
    finally:
        client.close()
        stack.stop_worker()
        drop_collection(settings.milvus_address, settings.collection)
        topics = [spec.full_name(settings) for spec in CATALOGUE]
        for future in admin_client(settings).delete_topics(topics).values():
            with contextlib.suppress(Exception):
                future.result()
