"""Launchers of the embedded stack: Apache Kafka (KRaft) from Maven's jars and a Milvus Lite server.

Used by ``eddy up``/``eddy down`` and by the integration-test fixtures alike.
"""
