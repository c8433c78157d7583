"""The detection rules the scrubber adds to Presidio: internal host suffixes, USPS street suffixes,
patterns and recognizers Presidio lacks (secrets, passwords, titled and gazetteer names, street and
military addresses, any-group credit cards), the allow list of technical names, and the cleaning of
raw detections (``plausible``: implausible ones on technical text dropped; ``resolve``: overlaps
resolved in favour of the exact patterns). Used by ``components.scrubbing.PresidioScrubber``.

Linear time (``tests/unit/test_linear_time.py``): a scrubber that holds the GIL for minutes on one
crafted message stops the worker's heartbeats. Where a pattern can fail after a long scan, and every
later start inside that stretch would fail the same way, the pattern ends with an alternative that
consumes the stretch without a ``v``/``w`` group (nothing is reported for it); the comment at each
pattern says why the stretch is safe to skip, so the detections are those of the original patterns.
Presidio's email pattern and context enhancer and spaCy's tokenizer are wrapped for the same reason
(``EMAIL_PATTERN``, ``make_context_enhancer``, ``bounded_tokenizer``).
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
    # private key blocks (PEM, OpenSSH); a BEGIN with no END after it consumes the rest (no later one has an END)
    r"(?P<v>-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)"
    r"|-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*",
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
    # JWT; else its first segment (a later "eyJ" in it reaches the same "." and fails the same way)
    r"\b(?:(?P<v>eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,})|eyJ[A-Za-z0-9_\-]*+)",
    # Azure storage connection strings and SAS signatures
    r"(?i)\b(?:AccountKey|SharedAccessKey|sig)=(?P<v>[A-Za-z0-9%+/]{20,}={0,2})",
    # bearer / basic tokens in headers or prose
    r"(?i)\b(?:bearer|basic|token)\s+(?P<v>[A-Za-z0-9\-._~+/]{16,}=*)",
    # key = value assignments of anything named like a credential. The name is the rest of its [\w.-] run
    # (what follows it is not in the run), so every start in a run has the same fate: else the run is consumed.
    r"(?i)\b(?:(?=[\w.\-]*?(?:api[_\-]?key|apikey|secret|token|access[_\-]?key|private[_\-]?key|client[_\-]?secret|"
    r"auth[_\-]?key|credentials?))[\w.\-]++[\"']?\s*(?:[:=]|=>)\s*[\"']?(?P<v>[A-Za-z0-9/+_\-.~]{12,}=*)|[\w.\-]++)",
    # the password of a URL's user info: scheme://user:PASSWORD@host; else the scheme-like run is consumed
    r"\b(?:[a-zA-Z][a-zA-Z0-9+.\-]*+://[^\s:/@]++:(?P<v>[^\s@/]++)@|[a-zA-Z][a-zA-Z0-9+.\-]*+)",
)
PASSWORD_PATTERNS = (
    r"(?i)\b(?:password|passwd|passphrase|pwd|pass|pw)[\"']?\s*(?:[:=]|=>)\s*[\"']?(?P<v>[^\s\"',;]{3,})",
    # "\s*[:=]?\s*" backtracked quadratically over a run of blanks: the same choices, each blank run taken whole
    r"(?i)\b(?:password|passphrase)\s+(?:is|was|to)\s*+(?:[:=]\s*+)?[\"']?(?P<v>[^\s\"',;]{4,})",
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
    # w: the first word is the rest of its [A-Za-z.'-] run, so a later start in the run ("A.B.C") fails as
    # this one did: the run is consumed (no group).
    return (rf"\b(?P<v>\d{{1,6}}\s+(?:[A-Z][A-Za-z.'\-]*\s+){{1,4}}(?:{suffix})\b\.?{unit}{city})"
            r"|(?P<w>\b[A-Z][A-Za-z.'\-]+(?:\s+[A-Z][A-Za-z.'\-]+){0,3},\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?\b)"
            r"|\b[A-Z][A-Za-z.'\-]*+")


def internal_host_patterns(internal: str) -> tuple[str, str]:
    """INTERNAL_HOST: a name under one of the ``internal`` suffixes (an alternation), or an AWS-style
    ``ip-10-0-0-1`` host. A label is matched atomically (it must end at its "."), and when no suffix
    follows the chain of labels, the chain is consumed: a later label in it has a subset of the ends."""
    label = r"(?>[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)\."
    return (rf"(?i)\b(?:(?P<v>(?:{label})+(?:{internal}))\b(?!\.[a-z0-9])|(?:{label})++)",
            r"(?i)\b(?P<v>(?:ip|ec2|host|node)-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}(?:\.[\w\-]+)*)")


#: Presidio's EmailRecognizer pattern (2.2.366) made linear for the ``regex`` module Presidio uses: the
#: local part is the rest of its run of allowed characters, so when what follows fails, ``(*SKIP)``
#: resumes after the run (its other starts reach the same "@"); the original scanned the run from each.
_EMAIL_CHAR = r"[!#$%&'*+\-/=?^_`{|}~\w]"
EMAIL_PATTERN = (rf"\b{_EMAIL_CHAR}[!#$%&'*+\-/=?^_`{{|}}~\.\w]*+(*SKIP)(?<={_EMAIL_CHAR})"
                 r"[@]\w+(?:-+\w+)*(?:\.\w+(?:-+\w+)*)+\b")


def make_group_recognizer():  # the class needs presidio, imported lazily
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
    place with code characters (``C++``, ``len(x``) or no capital letter (``goto``), a phone number of fewer
    than 7 digits (ports, years: libphonenumber's "possible" level accepts short numbers of some regions) or a
    bare digit run outside 10-12 digits (object ids, timestamps), an IPv6 address of under 6 characters
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
    results whose text outside the overlapping pattern results (and NER results kept before them)
    has no letter or digit. O(r log r + n): containment by a sweep over sorted spans, coverage by a mask
    (comparing every pair was quadratic in the number of detections)."""
    best: dict[tuple[str, int, int], object] = {}
    for r in results:
        key = (r.entity_type, r.start, r.end)
        if plausible(r.entity_type, text[r.start:r.end]) and (key not in best or r.score > best[key].score):
            best[key] = r
    patterns = [r for r in best.values() if r.entity_type not in _NER_ENTITIES]
    by_span: dict[tuple[int, int], list] = {}
    for r in patterns:
        by_span.setdefault((r.start, r.end), []).append(r)
    inside: set[tuple[int, int]] = set()  # spans lying inside a longer pattern span
    reach, group_start, group_end = -1, None, -1  # max end of spans starting before the current start
    for span in sorted(by_span, key=lambda sp: (sp[0], -sp[1])):
        if span[0] != group_start:
            reach, group_start, group_end = max(reach, group_end), span[0], span[1]
        elif span[1] < group_end:  # a span of the same start and larger end contains it
            inside.add(span)
        if reach >= span[1]:
            inside.add(span)
    top = {span: min(_PRIORITY.index(r.entity_type) for r in rs) for span, rs in by_span.items() if len(rs) > 1}
    kept = [r for r in patterns if (r.start, r.end) not in inside
            and ((r.start, r.end) not in top or _PRIORITY.index(r.entity_type) == top[(r.start, r.end)])]
    covered = bytearray(len(text))
    for p in kept:
        covered[p.start:p.end] = b"\x01" * (p.end - p.start)
    for r in best.values():
        if r.entity_type in _NER_ENTITIES:
            if any(c.isalnum() for c, cov in zip(text[r.start:r.end], covered[r.start:r.end], strict=True) if not cov):
                kept.append(r)
                covered[r.start:r.end] = b"\x01" * (r.end - r.start)
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


def make_gazetteer_recognizer():  # the class needs presidio, imported lazily
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


def make_context_enhancer():  # the class needs presidio, imported lazily
    """Presidio's ``LemmaContextAwareEnhancer`` (same parameters, same scores) without its per-result
    scans of the whole token list (finding the result's token, walking back to the nearest keywords):
    quadratic in the number of detections. Token ends and keyword positions are indexed once per text."""
    from bisect import bisect_left, bisect_right

    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class IndexedContextEnhancer(LemmaContextAwareEnhancer):
        _index: tuple | None = None  # (nlp_artifacts, token starts, token ends, positions of keyword lemmas)

        def _indexed(self, artifacts: object) -> tuple:
            if self._index is None or self._index[0] is not artifacts:
                starts = list(artifacts.tokens_indices)
                ends = [i + len(token) for i, token in zip(starts, artifacts.tokens, strict=True)]
                keywords = set(artifacts.keywords)
                hits = [j for j, lemma in enumerate(artifacts.lemmas) if lemma.lower() in keywords]
                self._index = (artifacts, starts, ends, hits)
            return self._index

        def _extract_surrounding_words(self, nlp_artifacts: object, word: str, start: int) -> list[str]:
            if not nlp_artifacts.tokens:
                return [""]
            _, starts, ends, hits = self._indexed(nlp_artifacts)
            # the first token starting at ``start`` or ending after it (token ends never decrease)
            index = bisect_right(ends, start)
            at = bisect_left(starts, start)
            if at < len(starts) and starts[at] == start:
                index = min(index, at)
            if index == len(ends):
                raise ValueError(f"Did not find word '{word}' in the list of tokens although it is expected "
                                 "to be found")
            lemmas = nlp_artifacts.lemmas
            k = bisect_right(hits, index)
            back = [lemmas[j].lower() for j in reversed(hits[max(0, k - self.context_prefix_count - 1):k])]
            k = bisect_left(hits, index)
            forward = [lemmas[j].lower() for j in hits[k:k + self.context_suffix_count + 1]]
            return list(set(back + forward))

    return IndexedContextEnhancer


def bounded_tokenizer(tokenizer, max_run: int = 256):  # spaCy's types, imported lazily
    """spaCy's tokenizer, except that a run of more than ``max_run`` non-blank characters is tokenized in
    pieces of ``max_run``. spaCy strips a prefix or suffix per step and searches the rest again each time:
    quadratic in a run of punctuation or symbols ("—" * 10,000 took 12 s, * 40,000 230 s). Text without
    such a run (all ordinary prose) is tokenized exactly as before."""
    from spacy.tokens import Doc

    long_run = re.compile(rf"\S{{{max_run + 1},}}")

    def tokenize(text: str) -> Doc:
        if long_run.search(text) is None:
            return tokenizer(text)
        docs, pos = [], 0
        for m in long_run.finditer(text):
            if m.start() > pos:
                docs.append(tokenizer(text[pos:m.start()]))
            docs.extend(tokenizer(text[i:min(i + max_run, m.end())]) for i in range(m.start(), m.end(), max_run))
            pos = m.end()
        if pos < len(text):
            docs.append(tokenizer(text[pos:]))
        return Doc.from_docs(docs, ensure_whitespace=False)

    tokenize.tokenizer = tokenizer  # spaCy's own (its vocabulary, its cache)
    return tokenize
