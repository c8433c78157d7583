"""The one settings object (pydantic-settings, env prefix ``EDDY_``).

Built once in ``main()`` and passed down; nothing else reads ``os.environ``.
Every field can be set as ``EDDY_<NAME>`` (for example ``EDDY_KAFKA_PORT=29092``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.rules import AlertRule, ModelPrice

__version__ = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository (or installed tree) root: ``.eddy/`` state and ``infra/`` assets are found from here."""

MAX_RECORD_BYTES = 8 * 1024 * 1024
"""Largest Kafka record Eddy produces or fetches, bytes: the broker's ``message.max.bytes``, the clients'
request and fetch sizes and the codec's size limit are all this one figure."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDDY_", extra="ignore", frozen=True)

    # --- state and local stack -------------------------------------------------------
    home: Path = Field(
        REPO_ROOT / ".eddy", description="state dir: broker data, Milvus data, logs, pid files, model cache")
    kafka_bootstrap: str | None = Field(
        None, description="bootstrap servers of an existing Kafka cluster; unset = the embedded broker on kafka_port"
    )
    kafka_port: int = Field(
        19092, description="embedded broker's client port (not 9092, to avoid a Kafka already running)")
    kafka_controller_port: int = Field(19093, description="embedded broker's KRaft controller port")
    kafka_heap_mb: int = Field(512, description="embedded broker's JVM heap (-Xmx), MiB")
    milvus_uri: str | None = Field(
        None, description="URI of an existing Milvus; unset = the embedded Milvus Lite server")
    milvus_port: int = Field(19631, description="embedded Milvus Lite server's gRPC port (not 19530)")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how every Eddy client talks to kafka_bootstrap (Kafka's security.protocol)"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism with SASL_PLAINTEXT / SASL_SSL"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user with SASL_PLAINTEXT / SASL_SSL")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password with SASL_PLAINTEXT / SASL_SSL")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA certificates that sign the brokers' with SSL / SASL_SSL; unset = the "
        "system's trust store",
    )

    # --- topics ------------------------------------------------------------------------
    topic_prefix: str = Field("eddy.", description="prefix of every Eddy topic")
    partitions: int = Field(3, ge=1, description="partitions of the keyed data topics when Eddy creates them")
    group_id: str = Field("eddy-worker", description="consumer group (and faust app id) of the worker")

    # --- indexing ------------------------------------------------------------------------
    collection: str = Field("eddy_chunks", description="Milvus collection of chunks")
    max_collections: int = Field(
        256, ge=1, description="most Eddy collections (the default one included) on the Milvus server; a change "
        "naming a new collection past it goes to the dead-letter topic (collection_limit), count of collections",
    )
    embedder_model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers model id or local path")
    embedder_dtype: Literal["float32", "bfloat16"] = Field(
        "bfloat16", description="embedder compute type; bf16 is ~1.75-2.5x faster on AVX-512 BF16 CPUs "
        "(bench.embedder_dtype; cosine >= 0.9999 to fp32)"
    )
    embed_batch_size: int = Field(64, ge=1, description="texts per encode() call")
    chunk_max_chars: int = Field(1000, ge=100, description="largest chunk, characters")
    chunk_overlap_chars: int = Field(150, ge=0, description="text repeated between consecutive chunks of one section")
    chunk_prefix: Literal["lead", "heading", "path"] = Field(
        "lead", description="what is embedded above a chunk's text: its section's own heading and, above its later "
        "chunks, its opening sentences (components.chunking.LEAD_CHARS); 'heading' the heading alone; 'path' the "
        "document title and heading path (collections built before this setting existed); bench.eval_chunking",
    )
    max_document_bytes: int = Field(
        5_000_000, ge=1, description="larger DocumentChange texts go to the dead-letter topic")
    indexer_batch_max: int = Field(64, ge=1, description="changes taken from Kafka per indexer batch")
    embed_group_chunks: int = Field(256, ge=1, description="new chunks embedded and written per step of a batch")
    indexer_batch_within_s: float = Field(0.05, gt=0, description="longest wait to fill an indexer batch, seconds")
    version_skew_s: float = Field(
        3600.0, ge=0, description="a change's version may exceed the current time in microseconds since the epoch by "
        "this many seconds at most; a larger one (e.g. nanoseconds) is refused (IndexEvent status refused), seconds",
    )

    # --- answering -------------------------------------------------------------------------
    generator: Literal["qwen2.5-coder-0.5b", "smollm2-135m", "echo", "openai", "vllm"] = Field(
        "qwen2.5-coder-0.5b", description="generation backend: a packaged model run in-process on CPU, 'openai' (any "
        "OpenAI-compatible server at generator_url, e.g. `vllm serve`), 'vllm' (in-process vLLM engine: CUDA and vllm "
        "in Eddy's environment, see components/vllm_generator.py) or 'echo' (the test fake)",
    )
    generator_url: str = Field(
        "http://127.0.0.1:8000/v1", description="'openai': base URL of the OpenAI-compatible server, up to /v1"
    )
    generator_api_key: SecretStr | None = Field(
        None, description="'openai': bearer token of generator_url (vllm serve --api-key), when it needs one"
    )
    generator_model: str | None = Field(
        None, description="'openai': model or LoRA adapter name sent with every request (vllm serve's "
        "--served-model-name or a --lora-modules name); 'vllm': model directory or id loaded in-process",
    )
    generator_lora: str | None = Field(
        None, description="'vllm': LoRA adapter NAME=PATH applied to every request (needs --enable-lora's rank "
        "<= 64); 'openai' selects adapters by generator_model",
    )
    generator_tokenizer: str | None = Field(
        None, description="'openai': tokenizer that counts tokens when the server sends no usage: a packaged "
        "generator name or a local tokenizer directory; unset = one token per streamed piece",
    )
    generator_timeout_s: float = Field(
        60.0, gt=0, description="'openai': longest wait for the server's response and then for each streamed "
        "piece, seconds (connecting: at most 5 s of it)",
    )
    generator_connect_retries: int = Field(
        2, ge=0, description="'openai': new attempts when the server cannot be reached (refused, unreachable, "
        "connect timeout), after jittered exponential backoff from 0.2 s; nothing else is retried",
    )
    generator_max_in_flight: int = Field(
        64, ge=1, description="'openai': requests streaming from the server at once per worker (more wait for a "
        "slot; also bounded by generation_slots), requests",
    )
    top_k: int = Field(5, ge=1, le=100, description="sections (each its best chunk) put in the prompt per query unless "
                       "the query says otherwise")
    search_chunks_per_section: int = Field(
        4, ge=1, le=64, description="chunks searched per section wanted (top_k or retrieval_depth sections): a section "
        "can match with several of its chunks, counted once",
    )
    max_new_tokens: int = Field(256, ge=1, description="generation budget per answer unless the query says otherwise")
    answerer_concurrency: int = Field(4, ge=1, description="queries in flight per worker")
    generation_slots: int = Field(
        2, ge=1,
        description="generations computed at once: more than 1 so a long answer never blocks the next "
        "(they share the CPU)"
    )
    delta_flush_ms: int = Field(
        150, ge=0, description="answer text is coalesced into one delta record per this many ms")
    max_query_chars: int = Field(4000, ge=1, description="longer query texts are rejected")
    max_query_groups: int = Field(
        256, ge=0, description="queries naming more ACL groups get an error answer (each group is a search filter "
        "term), groups",
    )
    max_history_turns: int = Field(
        50, ge=0, description="queries carrying more history turns get an error answer, turns"
    )
    query_deadline_s: float = Field(
        120.0, gt=0, description="longest time from picking a query up to its final answer, seconds; past it the "
        "generation stops, its slot is freed and the answer ends with an error",
    )
    answerer_dedupe_queries: int = Field(
        10_000, ge=1, description="query ids the answerer remembers (per worker): a redelivered query is not answered "
        "twice and a reused query_id gets an error answer instead of a second stream, queries",
    )

    # --- observability -----------------------------------------------------------------------
    log_level: str = Field("INFO", description="worker log level")

    # --- tracing, monitoring, dashboard ------------------------------------------------------
    tracing: bool = Field(True, description="export OpenTelemetry spans of every step to the `traces` topic")
    tracing_capture_content: bool = Field(
        False, description="put prompt and completion text on generation spans (off: they may hold personal data)"
    )
    tracing_otlp_endpoint: str | None = Field(None, description="also export spans over OTLP/gRPC to this collector")
    tracing_queue_size: int = Field(4096, ge=1, description="spans buffered in-process before the exporter drops")
    tracing_export_delay_ms: int = Field(500, ge=1, description="spans are exported in batches every this many ms")
    tracing_buffer_messages: int = Field(
        10_000, ge=1, description="trace records queued for Kafka before the exporter drops (never blocks)"
    )
    monitor_host: str = Field("127.0.0.1", description="the monitor's /metrics and /api/state listen here")
    monitor_port: int = Field(19464, description="the monitor's HTTP port (Prometheus scrapes /metrics)")
    monitor_window_s: float = Field(300.0, gt=0, description="sliding window of the monitor's rates and percentiles")
    monitor_tick_s: float = Field(2.0, gt=0, description="alert rules evaluated and history sampled every this many s")
    monitor_lag_interval_s: float = Field(10.0, gt=0, description="consumer lag per group polled every this many s")
    drift_reference_size: int = Field(200, ge=10, description="top retrieval scores in the drift reference window")
    drift_recent_size: int = Field(50, ge=10, description="top retrieval scores in the drift recent window")
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {
            "Qwen2.5-Coder-0.5B-Instruct*": ModelPrice(input_usd_per_mtok=0.02, output_usd_per_mtok=0.06),
            "SmolLM2-135M-Instruct*": ModelPrice(input_usd_per_mtok=0.01, output_usd_per_mtok=0.03),
        },
        description="USD per million input/output tokens by model (glob on AnswerEvent.model); "
        "defaults are notional in-process compute prices, set your provider's",
    )
    alert_rules: list[AlertRule] = Field(
        default_factory=lambda: [
            AlertRule(name="ttft_p95_slo", metric="ttft_p95_ms", threshold=3000, for_s=300, severity="warning",
                      description="p95 time to first token above the 3 s SLO for 5 minutes"),
            AlertRule(name="error_rate", metric="error_rate", threshold=0.05, for_s=300, severity="critical",
                      description="more than 5% of queries end in an error answer"),
            AlertRule(name="dlq_growth", metric="dlq_per_min", threshold=1, for_s=300, severity="warning",
                      description="dead letters arriving faster than 1 per minute"),
            AlertRule(name="freshness_lag", metric="freshness_lag_p95_ms", threshold=60_000, for_s=300,
                      description="p95 change-published-to-searchable above one minute"),
            AlertRule(name="consumer_lag", metric="consumer_lag_max", threshold=1000, for_s=300,
                      description="a consumer group is more than 1000 records behind"),
            AlertRule(name="retrieval_score_drift", metric="retrieval_score_drift_ks", threshold=0.3, for_s=600,
                      description="two-sample Kolmogorov-Smirnov statistic of top retrieval scores, recent vs "
                      "reference window, above 0.3"),
        ],
        description="alert rules (JSON list of AlertRule)",
    )
    dashboard_port: int = Field(19465, description="`eddy dashboard` serves on 127.0.0.1 at this port")

    # --- feedback curation --------------------------------------------------------------------
    scrub_key: SecretStr | None = Field(
        None,
        description="HMAC key of the PII pseudonyms (>= 16 chars); unset = a random key kept in home/secrets/scrub.key",
    )
    scrub_timeout_s: float = Field(10.0, gt=0, description="a scrub batch taking longer is rejected (fail closed)")
    scrub_isolation: Literal["process", "thread"] = Field(
        "process", description="where the curator scrubs: a child process, killed and restarted when a scrub times "
        "out, or 'thread' (its own thread, abandoned and replaced on a timeout; tests)",
    )
    scrub_internal_domains: str = Field("", description="comma-separated extra internal host-name suffixes to scrub")
    curator_batch_max: int = Field(32, ge=1, description="records taken from Kafka per curator batch")
    curator_batch_within_s: float = Field(0.2, gt=0, description="longest wait to fill a curator batch, seconds")
    curator_min_query_chars: int = Field(10, ge=1, description="shorter questions are rejected as too_short")
    curator_flood_per_hour: int = Field(
        30, ge=1,
        description="shared feedbacks one user may send per hour (per worker) before they are rejected as flood"
    )
    curator_duplicate_similarity: float = Field(
        0.95, gt=0, le=1, description="cosine similarity to a vetted question above which a record is a near-duplicate"
    )
    curator_join_store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="where the curator's join table lives: RocksDB under home/faust (rocksdict), or "
        "'memory' (RAM, rebuilt from its changelog at every start)",
    )
    curator_join_ttl_s: float = Field(
        86_400.0, gt=0, description="a join entry (query, answer, waiting feedback) not updated for this long is "
        "dropped, seconds",
    )
    curator_join_max_entries: int = Field(
        100_000, ge=1, description="join entries a worker keeps at most; past it the least recently updated are "
        "dropped, entries",
    )
    curator_join_sweep_s: float = Field(
        300.0, gt=0, description="the join table is swept of expired entries every this many seconds",
    )

    # --- evaluation ---------------------------------------------------------------------------
    judge_model: str = Field(
        "qwen2.5-coder-0.5b",
        description="LLM-as-judge of `eddy eval --answers`: a model name at judge_url, "
        "or without judge_url a local generator",
    )
    judge_url: str | None = Field(None, description="OpenAI-compatible base URL of the judge (e.g. http://host:8000/v1)")
    judge_api_key: SecretStr | None = Field(None, description="bearer token for judge_url, when it needs one")

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    def kafka_client_config(self) -> dict[str, str]:
        """The security properties (librdkafka names) every confluent-kafka client merges into its config;
        empty with PLAINTEXT. faust's (aiokafka's) equivalent: ``streams.faust_adapter.broker_credentials``."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_cafile is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        return config

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
        values = self.model_dump(mode="json")
        for name, value in self:
            if isinstance(value, SecretStr):
                values[name] = value.get_secret_value()
        return {
            f"EDDY_{name.upper()}": json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            for name, value in values.items()
            if value is not None
        }

    def topic(self, name: str) -> str:
        """Full topic name: ``topic("queries") == "eddy.queries"`` with the default prefix."""
        return f"{self.topic_prefix}{name}"
