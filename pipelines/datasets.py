"""Evaluation datasets in the BEIR layout: loading with validation, writing, and the ``python-faq`` builder.

Layout of a dataset directory (BEIR, Thakur et al. 2021, https://github.com/beir-cellar/beir)::

    corpus.jsonl    one JSON object per line: {"_id", "title", "text"}          (title may be "")
    queries.jsonl   one JSON object per line: {"_id", "text"}
    qrels.tsv       tab-separated with a header "query-id  corpus-id  score"   (BEIR's qrels/test.tsv
                    is accepted too); score > 0 = relevant (graded)
    answers.jsonl   optional: {"_id": query id, "text": reference answer}     (for answer metrics)

``python-faq`` is built from Debian's ``python3.11-doc``: the corpus is every section of the
documentation (``_id`` = ``<file>#<anchor>``), the queries are the Python FAQ's questions
(headings ending in ``?`` in ``faq/*.rst.txt``), each relevant to its own answer section, whose
text is the reference answer. A question's heading is kept out of the corpus (neither its text
nor its title holds it), otherwise retrieval would be trivial.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from components.parsing import first_rst_title, parse_sections

CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
QRELS = "qrels.tsv"
QRELS_BEIR = "qrels/test.tsv"
ANSWERS = "answers.jsonl"
QRELS_HEADER = ("query-id", "corpus-id", "score")
_SUFFIX = ".rst.txt"


class DatasetError(ValueError):
    """A dataset directory that does not follow the layout; the message names the file, line and problem."""


@dataclass
class Dataset:
    """A loaded, validated dataset. ``qrels``: query id -> {corpus id: relevance > 0}; only queries
    with at least one relevant document are kept in ``queries`` (BEIR evaluates those alone)."""

    name: str
    root: Path
    corpus: dict[str, dict[str, str]]  # _id -> {"title", "text"}
    queries: dict[str, str]  # _id -> text (in file order)
    qrels: dict[str, dict[str, int]]
    answers: dict[str, str] = field(default_factory=dict)
    queries_without_qrels: int = 0

    def fingerprint(self) -> str:
        """sha256 over the dataset's files (hex, first 16 digits): tells two runs on the same data apart."""
        h = hashlib.sha256()
        for path in (self.root / CORPUS, self.root / QUERIES, _qrels_path(self.root), self.root / ANSWERS):
            if path.exists():
                with path.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        return h.hexdigest()[:16]


def _qrels_path(root: Path) -> Path:
    for name in (QRELS, QRELS_BEIR):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: missing {QRELS} (or BEIR's {QRELS_BEIR})")


def _jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise DatasetError(f"{path.parent}: missing {path.name}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object")
            for key in required:
                if not isinstance(obj.get(key), str):
                    raise DatasetError(f"{path}:{lineno}: field {key!r} missing or not a string")
            if not obj["_id"]:
                raise DatasetError(f"{path}:{lineno}: empty _id")
            yield lineno, obj


def load_dataset(root: Path) -> Dataset:
    """Load and validate a dataset directory.

    Raises DatasetError for a missing file, a line that is not a JSON object with string ``_id``
    and ``text``, a duplicate id, a qrels header other than ``query-id corpus-id score``, a
    non-integer score, qrels naming an unknown query or corpus id, an answer for an unknown query,
    or no query left with a relevant document.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    corpus: dict[str, dict[str, str]] = {}
    path = root / CORPUS
    for lineno, obj in _jsonl(path, ("_id", "text")):
        if obj["_id"] in corpus:
            raise DatasetError(f"{path}:{lineno}: duplicate _id {obj['_id']!r}")
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise DatasetError(f"{path}:{lineno}: title is not a string")
        corpus[obj["_id"]] = {"title": title, "text": obj["text"]}
    if not corpus:
        raise DatasetError(f"{path}: empty corpus")
    queries: dict[str, str] = {}
    path = root / QUERIES
    for lineno, obj in _jsonl(path, ("_id", "text")):
        if obj["_id"] in queries:
            raise DatasetError(f"{path}:{lineno}: duplicate _id {obj['_id']!r}")
        if not obj["text"].strip():
            raise DatasetError(f"{path}:{lineno}: blank query text")
        queries[obj["_id"]] = obj["text"]
    qrels: dict[str, dict[str, int]] = {}
    path = _qrels_path(root)
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != QRELS_HEADER:
            raise DatasetError(f"{path}:1: header must be {chr(9).join(QRELS_HEADER)!r}, got {header!r}")
        for lineno, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != 3:
                raise DatasetError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(row)}")
            qid, cid, score = row
            if qid not in queries:
                raise DatasetError(f"{path}:{lineno}: unknown query-id {qid!r} (not in {QUERIES})")
            if cid not in corpus:
                raise DatasetError(f"{path}:{lineno}: unknown corpus-id {cid!r} (not in {CORPUS})")
            try:
                relevance = int(score)
            except ValueError as exc:
                raise DatasetError(f"{path}:{lineno}: score {score!r} is not an integer") from exc
            if relevance > 0:
                qrels.setdefault(qid, {})[cid] = relevance
    answers: dict[str, str] = {}
    if (root / ANSWERS).exists():
        path = root / ANSWERS
        for lineno, obj in _jsonl(path, ("_id", "text")):
            if obj["_id"] not in queries:
                raise DatasetError(f"{path}:{lineno}: answer for unknown query {obj['_id']!r}")
            answers[obj["_id"]] = obj["text"]
    judged = {qid: text for qid, text in queries.items() if qid in qrels}
    if not judged:
        raise DatasetError(f"{root}: no query has a relevant document in {path.name}")
    return Dataset(root.resolve().name, root, corpus, judged, qrels, answers,
                   queries_without_qrels=len(queries) - len(judged))


def write_dataset(
    root: Path, corpus: Iterable[dict[str, str]], queries: Iterable[dict[str, str]],
    qrels: Iterable[tuple[str, str, int]], answers: Iterable[dict[str, str]] = (),
) -> Path:
    """Write a dataset atomically: files go to a sibling temporary directory renamed onto ``root``
    (an existing ``root`` is replaced), so a reader never sees a half-written dataset."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for name, rows in ((CORPUS, corpus), (QUERIES, queries), (ANSWERS, answers)):
            with (tmp / name).open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        with (tmp / QRELS).open("w", encoding="utf-8", newline="") as f:
            out = csv.writer(f, delimiter="\t", lineterminator="\n")
            out.writerow(QRELS_HEADER)
            out.writerows(qrels)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


# --------------------------------------------------------------------------- python-faq
@dataclass(frozen=True)
class FaqDataset:
    corpus: list[dict[str, str]]
    queries: list[dict[str, str]]
    qrels: list[tuple[str, str, int]]
    answers: list[dict[str, str]]


def build_python_faq(sources_dir: Path) -> FaqDataset:
    """The ``python-faq`` dataset from the Python docs' reST sources (``…/html/_sources``).

    Every section with body text becomes a corpus document: ``_id`` ``<relative path>#<anchor>``
    (``#s<n>`` when the section has no anchor of its own), ``title`` the document title and the
    section's heading path (`` > ``-joined), ``text`` its paragraphs. In ``faq/`` files a section
    whose heading ends in ``?`` is a question: the query text is the heading, its own section is
    the one relevant document (score 1), its body the reference answer, and its heading is left
    out of the document's title.
    """
    corpus: list[dict[str, str]] = []
    queries: list[dict[str, str]] = []
    qrels: list[tuple[str, str, int]] = []
    answers: list[dict[str, str]] = []
    for path in sorted(Path(sources_dir).rglob("*" + _SUFFIX)):
        rel = path.relative_to(sources_dir).as_posix()[: -len(_SUFFIX)]
        text = path.read_text(encoding="utf-8")
        doc_title = first_rst_title(text) or rel
        used: set[str] = set()
        for n, section in enumerate(parse_sections(text, "text/x-rst")):
            body = "\n\n".join(section.paragraphs).strip()
            if not body:
                continue
            anchor = section.anchor if section.anchor and section.anchor not in used else f"s{n}"
            used.add(anchor)
            cid = f"{rel}#{anchor}"
            heading = section.path[-1] if section.path else ""
            question = rel.startswith("faq/") and heading.endswith("?")
            path_titles = list(section.path[:-1] if question else section.path)
            if path_titles and path_titles[0] == doc_title:
                path_titles = path_titles[1:]
            corpus.append({"_id": cid, "title": " > ".join([doc_title, *path_titles]), "text": body})
            if question:
                qid = f"faq:{cid}"
                queries.append({"_id": qid, "text": heading})
                qrels.append((qid, cid, 1))
                answers.append({"_id": qid, "text": body})
    return FaqDataset(corpus, queries, qrels, answers)
