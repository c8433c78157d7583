"""Batch jobs over Eddy's topics and collections: ingestion of a source (publish, delete what vanished,
wait, total the IndexEvents), dataset building, evaluation (run, scoring, reports) and snapshots."""
