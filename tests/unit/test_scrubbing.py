"""PII scrubber with the real Presidio analyzer and spaCy model: detection, keyed pseudonyms, key handling."""

from __future__ import annotations

import re

import pytest

from components.base import Conversation, ScrubError
from components.scrubbing import PresidioScrubber, load_scrub_key, pseudonym

KEY = b"unit-test-key-0123456789abcdef"

PLANTED = {
    "PERSON": "Margaret Hamilton",
    "EMAIL_ADDRESS": "margaret.hamilton@example.org",
    "PHONE_NUMBER": "+1 (617) 555-0142",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "10.20.30.40",
    "INTERNAL_HOST": "billing-db01.prod.internal",
    "STREET_ADDRESS": "1600 Amphitheatre Parkway, Mountain View, CA 94043",
}
SECRETS = {
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "stripe": "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
}
PASSWORD = "Tr0ub4dor&3"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAr1x2\nqg7Zk9==\n-----END RSA PRIVATE KEY-----"


@pytest.fixture(scope="module")
def scrubber() -> PresidioScrubber:
    s = PresidioScrubber(KEY)
    s.start()
    return s


def conversation_text() -> str:
    p = PLANTED
    return (
        f"Hi, I am {p['PERSON']} and my email is {p['EMAIL_ADDRESS']}; call me on {p['PHONE_NUMBER']}. "
        f"I paid with card {p['CREDIT_CARD']} from IBAN {p['IBAN_CODE']}. The server {p['IP_ADDRESS']} and "
        f"{p['INTERNAL_HOST']} refuse my config: aws_access_key_id = {SECRETS['aws']}, token {SECRETS['github']}, "
        f"Authorization: Bearer {SECRETS['bearer']}, STRIPE_KEY={SECRETS['stripe']} and password={PASSWORD}. "
        f"Ship it to {p['STREET_ADDRESS']}.\n{PRIVATE_KEY}\nWhy does shutil.copy fail?"
    )


def test_every_planted_value_is_replaced_by_a_typed_placeholder(scrubber):
    [result] = scrubber.scrub_batch([Conversation("q1", (conversation_text(),))])
    text = result.texts[0]
    for value in [*PLANTED.values(), *SECRETS.values(), PASSWORD, "MIIEowIBAAKCAQEAr1x2"]:
        assert value not in text, f"{value!r} leaked: {text}"
    for entity in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
                   "INTERNAL_HOST", "STREET_ADDRESS", "SECRET", "PASSWORD"):
        assert re.search(rf"<{entity}_[0-9a-f]{{8}}>", text), f"no {entity} placeholder in {text}"
        assert result.entities.get(entity, 0) >= 1
    assert result.entities["SECRET"] >= 5  # four tokens and the private key block
    # the keyword before a secret stays readable, only the value goes
    assert "password=<PASSWORD_" in text and "Bearer <SECRET_" in text
    assert "Why does shutil.copy fail?" in text


def test_pseudonyms_are_consistent_within_a_conversation_and_differ_across(scrubber):
    texts = ("Ada Lovelace asked about loops.", "The answer for Ada Lovelace: use for.", "thanks, ada  lovelace")
    a, b = scrubber.scrub_batch([Conversation("conv-a", texts), Conversation("conv-b", texts[:1])])
    names = [re.findall(r"<PERSON_[0-9a-f]{8}>", t) for t in a.texts[:2]]
    assert names[0] and names[0] == names[1]
    assert re.findall(r"<PERSON_[0-9a-f]{8}>", b.texts[0]) != names[0]  # another conversation, another pseudonym
    assert a.entities["PERSON"] >= 2


def test_a_different_key_gives_different_pseudonyms():
    assert pseudonym(KEY, "s", "PERSON", "Ada Lovelace") == pseudonym(KEY, "s", "PERSON", "ada   lovelace")
    assert pseudonym(KEY, "s", "PERSON", "Ada Lovelace") != pseudonym(b"another-key-0123456789", "s", "PERSON",
                                                                      "Ada Lovelace")
    assert re.fullmatch(r"<PERSON_[0-9a-f]{8}>", pseudonym(KEY, "s", "PERSON", "x"))


def test_plain_technical_text_is_left_alone(scrubber):
    text = "How do I copy a file with shutil.copy2 and keep its metadata? Use os.path.join for paths."
    [result] = scrubber.scrub_batch([Conversation("q", (text, ""))])
    assert result.texts == (text, "") and result.entities == {}


def test_scrub_key_is_generated_once_and_kept_private(tmp_path):
    key = load_scrub_key(None, tmp_path)
    path = tmp_path / "secrets" / "scrub.key"
    assert len(key) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert load_scrub_key(None, tmp_path) == key
    assert load_scrub_key("configured-key-123456", tmp_path) == b"configured-key-123456"
    with pytest.raises(ScrubError, match="at least 16"):
        load_scrub_key("short", tmp_path)
