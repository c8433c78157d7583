"""Stream agents, one per module: indexer, answerer."""
