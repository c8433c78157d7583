"""The detection rules the scrubber adds to Presidio: internal host suffixes, USPS street suffixes,
patterns and recognizers Presidio lacks (secrets, passwords, titled and gazetteer names, street and
military addresses, any-group credit cards), the allow list of technical names, and the cleaning of
raw detections (``plausible``: implausible ones on technical text dropped; ``resolve``: overlaps
resolved in favour of the exact patterns). Used by ``components.scrubbing.PresidioScrubber``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NER_ENTITIES = frozenset({"PERSON", "LOCATION"})
#: Which type wins when two recognizers report the very same span (most specific first).
_PRIORITY = ("SECRET", "PASSWORD", "CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS", "IP_ADDRESS", "INTERNAL_HOST",
             "STREET_ADDRESS", "PHONE_NUMBER", "PERSON", "LOCATION")

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


SECRET_PATTERNS = (
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
PASSWORD_PATTERNS = (
    r"(?i)\b(?:password|passwd|passphrase|pwd|pass|pw)[\"']?\s*(?:[:=]|=>)\s*[\"']?(?P<v>[^\s\"',;]{3,})",
    r"(?i)\b(?:password|passphrase)\s+(?:is|was|to)\s*[:=]?\s*[\"']?(?P<v>[^\s\"',;]{4,})",
)

#: US military mail (USPS Publication 28, section 225): "PSC 3191, Box 2845, APO AE 79585".
MILITARY_ADDRESS = (r"\b(?P<v>(?:(?:PSC|CMR|Unit)\s+\d+|(?:USNS|USNV|USS|USCGC)\s+[A-Z][a-z]+)"
                     r"(?:,?\s+Box\s+\d+)?,?\s+(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5})\b")
#: A title before capitalised words ("Dr Donald Grant", "Mrs. Hobbs"): a person even when NER misses it.
TITLED_NAME = (r"\b(?P<v>(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lady|Lord)\.?\s+"
                r"(?:[A-Z][a-z'\-]+\s+){0,2}[A-Z][a-z'\-]+)\b")


def street_pattern() -> str:
    suffix = "|".join(sorted(STREET_SUFFIXES, key=len, reverse=True))
    unit = r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|#)\s*[A-Za-z0-9\-]+)?"
    city = r"(?:,?\s+[A-Z][A-Za-z.'\-]+(?:\s+[A-Z][A-Za-z.'\-]+){0,3},\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
    return (rf"\b(?P<v>\d{{1,6}}\s+(?:[A-Z][A-Za-z.'\-]*\s+){{1,4}}(?:{suffix})\b\.?{unit}{city})"
            r"|(?P<w>\b[A-Z][A-Za-z.'\-]+(?:\s+[A-Z][A-Za-z.'\-]+){0,3},\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?\b)")


def make_group_recognizer():  # noqa: ANN202 - the class needs presidio, imported lazily
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


def plausible(entity_type: str, value: str) -> bool:
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


def resolve(text: str, results: list) -> list:
    """Clean Presidio's raw results: drop implausible ones (``plausible``); one result per (type,
    span) (the highest score); drop a pattern result lying inside another one (a "phone number"
    inside an IP address, a "card" inside an IBAN; on equal spans ``_PRIORITY`` decides); drop NER
    results whose text outside the overlapping pattern results has no letter or digit."""
    best: dict[tuple[str, int, int], object] = {}
    for r in results:
        key = (r.entity_type, r.start, r.end)
        if plausible(r.entity_type, text[r.start:r.end]) and (key not in best or r.score > best[key].score):
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


def make_gazetteer_recognizer():  # noqa: ANN202 - the class needs presidio, imported lazily
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
