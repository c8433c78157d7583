"""Eddy against a Kafka that requires SASL (PLAIN over SASL_PLAINTEXT, a broker container): the settings
``EDDY_KAFKA_SECURITY_PROTOCOL`` / ``_SASL_MECHANISM`` / ``_SASL_USERNAME`` / ``_SASL_PASSWORD`` reach every
client — admin (topic creation), the SDK's producer and consumers, and the worker's faust app — and a wrong
password is refused. TLS (SSL, SASL_SSL) goes through the same code with ``EDDY_KAFKA_SSL_CAFILE``; it was
not run against a TLS broker here."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from pydantic import SecretStr

from config.settings import Settings
from schemas import DocumentChange
from streams.admin import ensure_topics
from streams.client import EddyClient
from tests.conftest import TestStack, time_left
from tests.containers.kafka_container import container_broker
from tests.integration.helpers import publish_and_wait

pytestmark = [pytest.mark.containers, pytest.mark.slow]


def test_every_client_authenticates_with_sasl_and_a_wrong_password_is_refused(docker_daemon, milvus, tmp_path,
                                                                               models_home, monkeypatch):
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "faust-data"))
    password = secrets.token_urlsafe(12)
    with container_broker(tmp_path / "logs", sasl_users={"eddy": password}) as broker:
        home = tmp_path / "home"
        home.mkdir()
        (home / "models").symlink_to(models_home, target_is_directory=True)
        settings = Settings(home=home, kafka_bootstrap=broker.bootstrap, milvus_uri=milvus.uri, topic_prefix="sasl.",
                            group_id="eddy-sasl", collection="c_sasl", partitions=2, tracing=True,
                            kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="eddy",
                            kafka_sasl_password=SecretStr(password))
        wrong = settings.model_copy(update={"kafka_sasl_password": SecretStr("not-" + password)})
        with pytest.raises(KafkaException):
            ensure_topics(wrong, timeout_s=10)
        ensure_topics(settings)
        stack = TestStack(settings)
        client = EddyClient.from_settings(settings)
        try:
            stack.start_worker(("indexer",))
            change = DocumentChange(op="upsert", doc_id="sasl-doc", version=1, title="SASL", content_type="text/plain",
                                    text="Clients authenticate with SASL PLAIN.\n\nEvery Eddy client does.")
            events = publish_and_wait(client, [change], timeout_s=time_left(120))
            assert [e.status for e in events] == ["indexed"]
        finally:
            client.close()
            stack.stop_worker(kill=True)


def test_security_settings_map_to_librdkafka_and_faust_alike(tmp_path):
    """No broker: the same settings give the confluent-kafka properties and faust's (aiokafka's) credentials."""
    import ssl

    import faust

    from streams.faust_adapter import broker_credentials

    plain = Settings(home=tmp_path)
    assert plain.kafka_client_config() == {} and broker_credentials(plain) is None
    sasl = Settings(home=tmp_path, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="eddy", kafka_sasl_password=SecretStr("pw"))
    assert sasl.kafka_client_config() == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                          "sasl.username": "eddy", "sasl.password": "pw"}
    creds = broker_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.username == "eddy" and creds.password == "pw"
    assert isinstance(creds.ssl_context, ssl.SSLContext) and "pw" not in repr(sasl)
    ca = tmp_path / "ca.pem"  # any PEM bundle will do: the system's
    ca.write_bytes(Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt").read_bytes())
    tls = Settings(home=tmp_path, kafka_security_protocol="SSL", kafka_ssl_cafile=ca)
    assert tls.kafka_client_config() == {"security.protocol": "SSL", "ssl.ca.location": str(ca)}
    assert isinstance(broker_credentials(tls), faust.SSLCredentials)
