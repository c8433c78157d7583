"""What agents and pipelines call: chunking, embedding, vector store, generation, prompts.

Each capability is a Protocol in :mod:`components.base` with real implementations and a
deterministic fake beside them. Constructors are cheap; models load in ``start()``.
"""
