"""Eddy: event-driven LLMOps on Apache Kafka — the `eddy` command, demo and dashboard."""

from config import __version__

__all__ = ["__version__"]
