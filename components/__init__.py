"""What agents, pipelines and the worker call: parsing, chunking, embedding, packaged models, vector
stores, reranking, generation, prompts, PII scrubbing, curation rules, monitor figures, statistics.

Each role is a Protocol in :mod:`components.base` with real implementations and a deterministic
fake beside them. Constructors are cheap; models load in ``start()``.
"""
