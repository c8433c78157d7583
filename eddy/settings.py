"""The one settings object (pydantic-settings, env prefix ``EDDY_``).

Built once in ``main()`` and passed down; nothing else reads ``os.environ``.
Every field can be set as ``EDDY_<NAME>`` (for example ``EDDY_KAFKA_PORT=29092``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDDY_", extra="ignore")

    # --- state and local stack -------------------------------------------------------
    home: Path = Field(REPO_ROOT / ".eddy", description="state dir: broker data, Milvus data, logs, pid files, model cache")
    kafka_bootstrap: str | None = Field(
        None, description="bootstrap servers of an existing Kafka cluster; unset = the embedded broker on kafka_port"
    )
    kafka_port: int = Field(19092, description="embedded broker's client port (not 9092, to avoid a Kafka already running)")
    kafka_controller_port: int = Field(19093, description="embedded broker's KRaft controller port")
    kafka_heap_mb: int = Field(512, description="embedded broker's JVM heap (-Xmx), MiB")
    milvus_uri: str | None = Field(None, description="URI of an existing Milvus; unset = the embedded Milvus Lite server")
    milvus_port: int = Field(19631, description="embedded Milvus Lite server's gRPC port (not 19530)")

    # --- topics ------------------------------------------------------------------------
    topic_prefix: str = Field("eddy.", description="prefix of every Eddy topic")
    partitions: int = Field(3, ge=1, description="partitions of the keyed data topics when Eddy creates them")
    group_id: str = Field("eddy-worker", description="consumer group (and faust app id) of the worker")

    # --- indexing ------------------------------------------------------------------------
    collection: str = Field("eddy_chunks", description="Milvus collection of chunks")
    embedder_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers model id or local path")
    embedder_dtype: Literal["float32", "bfloat16"] = Field(
        "bfloat16", description="embedder compute type; bf16 is ~1.75x faster on AVX-512 BF16 CPUs (bench.embedder_dtype; cosine >= 0.996 to fp32)"
    )
    embed_batch_size: int = Field(64, ge=1, description="texts per encode() call")
    chunk_max_chars: int = Field(1000, ge=100, description="largest chunk, characters")
    chunk_overlap_chars: int = Field(150, ge=0, description="text repeated between consecutive chunks of one section")
    max_document_bytes: int = Field(5_000_000, ge=1, description="larger DocumentChange texts go to the dead-letter topic")
    indexer_batch_max: int = Field(64, ge=1, description="changes taken from Kafka per indexer batch")
    embed_group_chunks: int = Field(256, ge=1, description="new chunks embedded and written per step of a batch")
    indexer_batch_within_s: float = Field(0.05, gt=0, description="longest wait to fill an indexer batch, seconds")

    # --- answering -------------------------------------------------------------------------
    generator: Literal["qwen2.5-coder-0.5b", "smollm2-135m", "echo"] = Field(
        "qwen2.5-coder-0.5b", description="in-process generation model ('echo' is the test fake)"
    )
    top_k: int = Field(5, ge=1, le=100, description="chunks retrieved per query unless the query says otherwise")
    max_new_tokens: int = Field(256, ge=1, description="generation budget per answer unless the query says otherwise")
    answerer_concurrency: int = Field(4, ge=1, description="queries in flight per worker")
    generation_slots: int = Field(
        2, ge=1, description="generations computed at once: more than 1 so a long answer never blocks the next (they share the CPU)"
    )
    delta_flush_ms: int = Field(150, ge=0, description="answer text is coalesced into one delta record per this many ms")
    max_query_chars: int = Field(4000, ge=1, description="longer query texts are rejected")

    # --- observability -----------------------------------------------------------------------
    log_level: str = Field("INFO", description="worker log level")

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def milvus_address(self) -> str:
        return self.milvus_uri or f"http://127.0.0.1:{self.milvus_port}"

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_milvus(self) -> bool:
        return self.milvus_uri is None

    def to_env(self) -> dict[str, str]:
        """These settings as ``EDDY_*`` variables, so a child process (the worker) rebuilds the same object."""
        return {
            f"EDDY_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }

    def topic(self, name: str) -> str:
        """Full topic name: ``topic("queries") == "eddy.queries"`` with the default prefix."""
        return f"{self.topic_prefix}{name}"
