"""Kafka plumbing: topic catalogue, admin, codecs, dead-letter routing, the faust app, the client SDK."""
