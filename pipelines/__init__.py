"""Batch jobs over Eddy's topics and collections: dataset building and evaluation."""
