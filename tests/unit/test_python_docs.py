"""pipelines.python_docs: metadata of one Python doc source (no download here)."""

from __future__ import annotations

import pathlib

import pytest

from pipelines.python_docs import SOURCES_SUBDIR, CorpusError, ensure_python_docs, python_doc_meta

OS_PATH = """\
.. _os-path-label:

:mod:`os.path` --- Common pathname manipulations
================================================

.. module:: os.path
   :synopsis: Operations on pathnames.

Body.

Sub
---
"""


def test_meta_of_library_page(tmp_path: pathlib.Path):
    f = tmp_path / "library" / "os.path.rst.txt"
    f.parent.mkdir()
    f.write_text(OS_PATH, encoding="utf-8")
    assert python_doc_meta(tmp_path, f) == (
        "python-docs:library/os.path",
        "https://docs.python.org/3.11/library/os.path.html",
        "os.path --- Common pathname manipulations",
    )


def test_meta_overlined_title(tmp_path: pathlib.Path):
    f = tmp_path / "faq" / "general.rst.txt"
    f.parent.mkdir()
    f.write_text(":tocdepth: 2\n\n==================\nGeneral Python FAQ\n==================\n\nText.\n")
    doc_id, uri, title = python_doc_meta(tmp_path, f)
    assert (doc_id, uri, title) == (
        "python-docs:faq/general",
        "https://docs.python.org/3.11/faq/general.html",
        "General Python FAQ",
    )


def test_meta_title_falls_back_to_relative_path(tmp_path: pathlib.Path):
    f = tmp_path / "includes" / "wasm-notavail.rst.txt"
    f.parent.mkdir()
    f.write_text(".. availability:: not Emscripten, not WASI.\n\n   Does not work.\n")
    assert python_doc_meta(tmp_path, f)[2] == "includes/wasm-notavail"


def test_meta_rejects_other_files(tmp_path: pathlib.Path):
    f = tmp_path / "index.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"not a \.rst\.txt file"):
        python_doc_meta(tmp_path, f)
    with pytest.raises(ValueError, match="is not in the subpath"):  # pathlib's relative_to
        python_doc_meta(tmp_path / "sub", f)


def test_ensure_python_docs_is_a_no_op_when_present(tmp_path: pathlib.Path):
    sources = tmp_path / "python3.11-doc" / SOURCES_SUBDIR
    sources.mkdir(parents=True)
    assert ensure_python_docs(tmp_path) == sources


def test_ensure_python_docs_refuses_a_broken_tree(tmp_path: pathlib.Path):
    (tmp_path / "python3.11-doc").mkdir()
    with pytest.raises(CorpusError, match="exists but has no .*; remove it to download again"):
        ensure_python_docs(tmp_path)


def test_ensure_python_docs_reports_apt_failure(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package python3.11-doc' >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}")
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # not root: no apt-get update
    with pytest.raises(CorpusError, match="Unable to locate package"):
        ensure_python_docs(tmp_path / "root")
    assert not (tmp_path / "root" / "python3.11-doc").exists()
    assert list((tmp_path / "root").iterdir()) == []  # temp dir cleaned up
