"""``eddy ingest`` and ``eddy eval`` as the terminal runs them: the pipelines' jobs under progress
bars, their summaries and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from config.settings import Settings
from eddy.render import bars, console, err, print_eval, print_ingest, print_skipped
from eddy.stack import Stack
from pipelines.datasets import DatasetError, load_dataset
from pipelines.evaluate import EvalConfig, check_config, run_eval
from pipelines.ingest import collect_files, ingest_files, python_docs_files
from pipelines.judge import build_judge
from pipelines.python_docs import ensure_python_docs


def fetch_python_docs(settings: Settings) -> Path:
    """The ``_sources`` directory of Debian's python3.11-doc under ``EDDY_HOME/data``, downloaded
    the first time (behind a spinner). Raises CorpusError when it cannot be fetched."""
    with console.status("fetching Debian's python3.11-doc (apt-get download + dpkg-deb -x)…"):
        return ensure_python_docs(settings.home / "data")


def run_ingest(settings: Settings, paths: list[Path], *, source: str, python_docs: bool, acl: tuple[str, ...],
               collection: str | None, wait: bool, as_json: bool) -> int:
    """Ingest the files under ``paths`` as ``source`` (or, with ``python_docs``, the Python docs as
    ``python-docs``) and print the totals (one JSON object with ``as_json``). Returns the exit code:
    1 when a path is missing or a file was skipped, else 0. Raises CorpusError, ComponentError and
    EddyClientError as ``fetch_python_docs`` and ``ingest_files`` do."""
    problems: list[str] = []
    if python_docs:
        files = python_docs_files(fetch_python_docs(settings))
        source = "python-docs"
    else:
        files, problems = collect_files(paths, source)
        for problem in problems:
            err.print(f"[red]error[/red] {problem}")
    with bars() as progress:
        result = ingest_files(settings, files, source=source, acl=acl, collection=collection, wait=wait,
                              progress=progress, on_skipped=print_skipped)
    if as_json:
        click.echo(json.dumps(result.totals()))
    else:
        print_ingest(result.totals(), waited=wait)
    return 1 if problems or result.skipped else 0


def run_evaluation(settings: Settings, dataset_dir: Path, config: EvalConfig, judge: bool) -> int:
    """Evaluate the dataset in ``dataset_dir`` (graded by the LLM judge when ``judge`` and
    ``config.answers``); returns the exit code: 0, or 2 for an invalid dataset (nothing written).
    Raises LaunchError, ComponentError and EddyClientError as ``Stack.up`` and ``run_eval`` do."""
    try:
        dataset = load_dataset(dataset_dir)
        check_config(dataset, config)
        with console.status("starting the stack (if it is not up)…"):
            Stack(settings).up()
        grader = None
        if config.answers and judge:
            with console.status(f"loading the judge {settings.judge_model}…"):
                grader = build_judge(settings)
        with bars() as progress:
            report, run_dir, table = run_eval(settings, dataset, config, grader, progress)
    except DatasetError as exc:
        err.print(f"[red]eddy eval: invalid dataset:[/red] {escape(str(exc))}")
        return 2
    print_eval(dataset.name, report, run_dir, table)
    return 0
