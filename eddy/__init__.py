"""Eddy: event-driven LLMOps on Apache Kafka (the `eddy` command and its settings)."""

__version__ = "0.1.0"
