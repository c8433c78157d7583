"""The Python 3.11 documentation corpus: reST sources from Debian's ``python3.11-doc`` package.

The package ships ``/usr/share/doc/python3.11/html/_sources/**/*.rst.txt`` (497 files,
about 11 MB). :func:`ensure_python_docs` fetches it without root (``apt-get download`` +
``dpkg-deb -x``); :func:`python_doc_meta` maps one source file to its document id, public
URL and title.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

from components.parsing import first_rst_title

__all__ = ["CorpusError", "DOCS_URL", "PACKAGE", "SOURCES_SUBDIR", "ensure_python_docs", "python_doc_meta"]

log = logging.getLogger(__name__)

PACKAGE = "python3.11-doc"
#: Where the sources lie inside the extracted package.
SOURCES_SUBDIR = pathlib.PurePosixPath("usr/share/doc/python3.11/html/_sources")
DOCS_URL = "https://docs.python.org/3.11/"
_SUFFIX = ".rst.txt"


class CorpusError(RuntimeError):
    """The corpus could not be obtained (a command failed or the package lacks the sources)."""


def _run(cmd: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    log.debug("running %s in %s", cmd, cwd)
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise CorpusError(f"{cmd[0]} not found: this needs a Debian/Ubuntu system ({e})") from e


def _fail(cmd: list[str], proc: subprocess.CompletedProcess[str]) -> CorpusError:
    return CorpusError(f"{' '.join(cmd)} failed with exit status {proc.returncode}: {proc.stderr.strip()}")


def _download(workdir: pathlib.Path) -> pathlib.Path:
    """``apt-get download`` the package into ``workdir``; ``apt-get update`` and retry once when root."""
    cmd = ["apt-get", "download", PACKAGE]
    proc = _run(cmd, workdir)
    if proc.returncode != 0:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            log.info("apt-get download %s failed; running apt-get update and retrying", PACKAGE)
            upd = ["apt-get", "update"]
            uproc = _run(upd, workdir)
            if uproc.returncode != 0:
                raise _fail(upd, uproc)
            proc = _run(cmd, workdir)
        if proc.returncode != 0:
            raise _fail(cmd, proc)
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise CorpusError(f"apt-get download {PACKAGE} left no .deb in {workdir}: {proc.stderr.strip()}")
    return debs[-1]


def ensure_python_docs(dest_root: pathlib.Path) -> pathlib.Path:
    """Return the ``_sources`` directory of the Python 3.11 docs under ``dest_root``.

    The package is extracted to ``dest_root/python3.11-doc`` (so the result is
    ``dest_root/python3.11-doc/usr/share/doc/python3.11/html/_sources``), downloading it
    only when that directory is missing. Extraction goes to a temporary directory beside
    it, renamed into place at the end, so an interrupted run leaves nothing half-made.
    Needs ``apt-get`` and ``dpkg-deb`` and network access to the apt mirrors.

    Raises:
        CorpusError: a command failed (its stderr is in the message) or the package
            holds no ``.rst.txt`` sources.
    """
    dest_root = pathlib.Path(dest_root)
    final = dest_root / PACKAGE
    sources = final / SOURCES_SUBDIR
    if sources.is_dir():
        return sources
    if final.exists():
        raise CorpusError(f"{final} exists but has no {SOURCES_SUBDIR}; remove it to download again")
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{PACKAGE}-", dir=dest_root))
    try:
        dl = tmp / "download"
        dl.mkdir()
        deb = _download(dl)
        log.info("downloaded %s (%d bytes)", deb.name, deb.stat().st_size)
        tree = tmp / "tree"
        cmd = ["dpkg-deb", "-x", str(deb), str(tree)]
        proc = _run(cmd, tmp)
        if proc.returncode != 0:
            raise _fail(cmd, proc)
        n = sum(1 for _ in (tree / SOURCES_SUBDIR).rglob(f"*{_SUFFIX}"))
        if n == 0:
            raise CorpusError(f"{deb.name} holds no {_SUFFIX} files under {SOURCES_SUBDIR}")
        try:
            tree.rename(final)
        except OSError:
            if not sources.is_dir():  # not a concurrent run that got there first
                raise
        log.info("extracted %d Python doc sources to %s", n, sources)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sources


def python_doc_meta(sources_dir: pathlib.Path, path: pathlib.Path) -> tuple[str, str, str]:
    """``(doc_id, uri, title)`` of one ``.rst.txt`` source file under ``sources_dir``.

    ``doc_id`` = ``"python-docs:" + relative path without ".rst.txt"`` (``python-docs:library/os.path``);
    ``uri`` = ``https://docs.python.org/3.11/<relative path>.html``; ``title`` = the first reST
    section title with inline markup removed, else the relative path.

    Raises:
        ValueError: ``path`` is not under ``sources_dir`` or does not end in ``.rst.txt``.
        OSError / UnicodeDecodeError: the file cannot be read as UTF-8.
    """
    rel = pathlib.Path(path).relative_to(sources_dir).as_posix()
    if not rel.endswith(_SUFFIX):
        raise ValueError(f"not a {_SUFFIX} file: {path}")
    rel = rel[: -len(_SUFFIX)]
    text = pathlib.Path(path).read_text(encoding="utf-8")
    title = first_rst_title(text) or rel
    return f"python-docs:{rel}", f"{DOCS_URL}{rel}.html", title
