"""Terminal output of the ``eddy`` command: answer streams, tables and progress bars (rich).

``console`` is stdout, ``err`` stderr (progress bars, warnings, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pipelines.progress import Reporter

if TYPE_CHECKING:
    from schemas import AnswerEvent
    from streams.admin import TopicStatus

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Bars(Reporter):
    """A :class:`~pipelines.progress.Reporter` drawing one rich progress bar (with ETA) per phase."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def start(self, task: str, total: int) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total)

    def advance(self, task: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[task], n)


@contextlib.contextmanager
def bars() -> Iterator[Bars]:
    """Progress bars on stderr for the duration of the block (they stay on screen afterwards)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err,
                  transient=False) as progress:
        yield Bars(progress)


@contextlib.contextmanager
def counting(label: str, every: int = 500) -> Iterator[Callable[[], None]]:
    """A spinner ``label…`` for the duration of the block; the callable it yields counts one
    record, and the spinner shows the count every ``every`` records."""
    with console.status(f"{label}…") as status:
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count % every == 0:
                status.update(f"{label}… {count:,} records")

        yield tick


def print_snapshot(manifest: dict, path: Path) -> None:
    """`eddy datasets export` for people: version, record counts, directory, content hash and time range."""
    console.print(f"{manifest['version']}: {manifest['records']:,} records {manifest['ratings']} -> {path}")
    console.print(f"[dim]sha256 {manifest['content_sha256']} · feedback {manifest['time_range']['first_feedback_at']} "
                  f"… {manifest['time_range']['last_feedback_at']}[/dim]")


def print_skipped(message: str) -> None:
    """One ``skipped`` line on stderr (a document ingest did not publish, and why)."""
    err.print(f"[yellow]skipped[/yellow] {message}")


def print_ingest(totals: dict, *, waited: bool) -> None:
    """The human summary of ``IngestResult.totals()``; the indexing line only when the run ``waited``."""
    console.print(f"published {totals['documents']} upserts and {totals['deletes']} deletes of source "
                  f"{totals['source']!r}" + (f", skipped {len(totals['skipped'])}" if totals["skipped"] else ""))
    if waited:
        console.print(
            f"indexed: {totals['chunks_embedded']} chunks embedded, {totals['chunks_deleted']} deleted, "
            f"{totals['chunks_unchanged']} unchanged ({totals['chunks_total']} in these documents); "
            f"lag p50 {totals['lag_ms_p50']} ms, p99 {totals['lag_ms_p99']} ms; {totals['seconds']} s")


def print_answer_stream(events: AsyncIterator[AnswerEvent], as_json: bool) -> AnswerEvent | None:
    """Consume an ``EddyClient.ask()`` stream in an event loop of its own: each event as a JSON line
    (``as_json``) or the deltas' text as they arrive. Returns the terminal event (None if the stream
    ends without one); raises what the stream raises (EddyClientError: timeout, stack down)."""

    async def run() -> AnswerEvent | None:
        terminal = None
        async for event in events:
            if as_json:
                click.echo(event.model_dump_json())
            elif event.kind == "delta":
                console.print(event.text, end="", soft_wrap=True, highlight=False, markup=False)
            if event.terminal:
                terminal = event
        return terminal

    return asyncio.run(run())


def render_final(event: AnswerEvent) -> None:
    """After the streamed text: the citations and timings of a ``final`` event, or the ``error``."""
    if event.kind == "error":
        err.print(f"\n[red]error:[/red] {event.error}")
        return
    console.print()
    if event.citations:
        console.print("[bold]citations[/bold]")
        for i, c in enumerate(event.citations, 1):
            section = c.section.removeprefix(c.title).removeprefix(" > ") if c.section != c.title else ""
            where = f"{c.title} — {section}" if section else c.title
            console.print(f"  [{i}] {escape(where)}  [dim]{escape(c.uri)}[/dim]  (score {c.score:.3f})",
                          highlight=False)
    t = event.timings
    if t is not None:
        console.print(f"[dim]retrieve {t.retrieve_ms:.0f} ms · ttft {t.ttft_ms:.0f} ms · generate "
                      f"{t.generate_ms:.0f} ms · total {t.total_ms:.0f} ms · "
                      f"{event.usage.completion_tokens if event.usage else 0} tokens · {event.model}[/dim]")


def print_status(data: dict) -> None:
    """`eddy status` for people: one line each for Kafka, Milvus and the worker, then tables of the
    topics, consumer lag and collection rows (``data`` as ``eddy.status.collect_status`` returns it)."""
    ok = lambda flag: "[green]running[/green]" if flag else "[red]stopped[/red]"  # noqa: E731
    console.print(f"Kafka   {ok(data['kafka']['running'])}  {data['kafka']['bootstrap']}")
    console.print(f"Milvus  {ok(data['milvus']['running'])}  {data['milvus']['uri']}")
    w = data["worker"]
    console.print(f"worker  {ok(w['running'])}  pid {w['pid'] or '-'}  ready {w['ready']}  log {w['log']}")
    if data["topics"]:
        table = Table("topic", "partitions", "cleanup", "state", title="topics")
        for t in data["topics"]:
            table.add_row(t["name"], str(t["partitions"] or "-"), t["cleanup_policy"] or "-",
                          "[green]ok[/green]" if t["ok"] else f"[red]{t['problem']}[/red]")
        console.print(table)
    if data["consumer_lag"]:
        table = Table("consumer group", "topic", "lag (records)", title="consumer lag")
        for group, topics in data["consumer_lag"].items():
            for topic, lag in sorted(topics.items()):
                table.add_row(group, topic, str(lag))
        console.print(table)
    if data["collections"]:
        table = Table("collection", "rows", title="Milvus")
        for name, rows in sorted(data["collections"].items()):
            table.add_row(name, f"{rows:,}")
        console.print(table)


def print_topics(rows: list[TopicStatus]) -> None:
    """`eddy topics` for people: the catalogue against the cluster (descriptions on wide terminals)."""
    wide = console.width >= 120
    table = Table("topic", "key", "value", "cleanup", "partitions", "state", *(["about"] if wide else []))
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(r.name, r.spec.key, r.spec.schema.__name__ if r.spec.schema else "-", r.spec.cleanup_policy,
                      f"{r.partitions or '-'} / {r.expected_partitions}",
                      "[green]ok[/green]" if r.ok else f"[red]{r.problem}[/red]",
                      *([r.spec.description] if wide else []))
    console.print(table)


def print_eval(dataset_name: str, report: dict, run_dir: Path, table: list[tuple]) -> None:
    """`eddy eval`'s result: the metrics against the previous run (deltas green when better; for ``ms``
    figures lower is better), the corpus and query counts, and where the report is."""
    out = Table("metric", "previous", "current", "delta", title=f"{dataset_name} — run {report['run_id']}"
                + (f" vs {report['previous_run_id']}" if report["previous_run_id"] else " (no previous run)")
                + ("" if report["previous_comparable"] or not report["previous_run_id"]
                   else " — other queries: deltas are indicative only"))
    for label, before, now, delta in table:
        colour = "" if delta is None or delta == 0 else ("green" if (delta > 0) != label.endswith("ms") else "red")
        out.add_row(label, "–" if before is None else f"{before:.4g}", "–" if now is None else f"{now:.4g}",
                    "" if delta is None else f"[{colour}]{delta:+.4g}[/{colour}]" if colour else f"{delta:+.4g}")
    console.print(out)
    ingest = report["ingest"]
    console.print(f"corpus: {ingest['documents']:,} documents, {ingest['chunks_embedded']:,} chunks embedded, "
                  f"{ingest['chunks_unchanged']:,} unchanged; {report['dataset']['queries_evaluated']} queries; "
                  f"{report['elapsed_s']['total']} s in all")
    console.print(f"report: {run_dir / 'report.md'}")
