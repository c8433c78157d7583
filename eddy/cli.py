"""The ``eddy`` command: run the embedded stack, ingest documents, ask questions, inspect topics."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from eddy.settings import Settings

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Eddy: streaming RAG on Apache Kafka and Milvus.

    \b
    Quick start:
      eddy up                      start Kafka, Milvus Lite and the worker (state in EDDY_HOME)
      eddy ingest --python-docs --wait
      eddy ask "How do I copy a file?"
      eddy status                  what runs, topics, consumer lag, rows
      eddy down

    Every setting is an environment variable with the EDDY_ prefix (see README.md).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.ensure_object(dict)
    ctx.obj["settings"] = Settings()


def _agents(value: str) -> tuple[str, ...]:
    from streams.app import AGENTS

    agents = tuple(a.strip() for a in value.split(",") if a.strip())
    bad = [a for a in agents if a not in AGENTS]
    if bad or not agents:
        raise click.BadParameter(f"choose from {', '.join(AGENTS)}")
    return agents


# ------------------------------------------------------------------------------ stack
@cli.command()
@click.option("--agents", default="indexer,answerer", show_default=True, help="Agents the worker hosts.")
@click.pass_context
def up(ctx: click.Context, agents: str) -> None:
    """Start the embedded stack: Kafka (KRaft), Milvus Lite server, Eddy worker. Idempotent."""
    from eddy.stack import Stack
    from infra.process import LaunchError

    settings = _settings(ctx)
    stack = Stack(settings)
    try:
        with console.status("starting Apache Kafka and Milvus Lite…"):
            stack.start_infra()
        with console.status("starting the worker (the first start converts the model, a minute or two)…"):
            pid = stack.start_worker(_agents(agents))
    except LaunchError as exc:
        err.print(f"[red]eddy up failed:[/red] {exc}")
        sys.exit(1)
    console.print(f"[green]up[/green]: Kafka {settings.bootstrap_servers}, Milvus {settings.milvus_address}, "
                  f"worker pid {pid} (logs in {settings.home / 'logs'})")


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the worker, Milvus Lite and Kafka. Data stays in EDDY_HOME."""
    from eddy.stack import Stack

    stopped = Stack(_settings(ctx)).down()
    console.print(", ".join(f"{name}: {'stopped' if was else 'not running'}" for name, was in stopped.items()))


@cli.command(hidden=False)
@click.option("--agents", default="indexer,answerer", show_default=True, help="Agents to host.")
@click.pass_context
def worker(ctx: click.Context, agents: str) -> None:
    """Run a worker in the foreground (what `eddy up` starts in the background)."""
    from streams.app import run_worker

    run_worker(_settings(ctx), _agents(agents))


def collect_status(settings: Settings) -> dict:
    """Everything `eddy status` shows, as plain data."""
    from eddy.stack import Stack
    from infra.process import port_open

    stack = Stack(settings)
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    kafka_up = port_open(host, int(port))
    status: dict = {
        "home": str(settings.home),
        "kafka": {"bootstrap": settings.bootstrap_servers, "embedded": settings.embedded_kafka, "running": kafka_up},
        "milvus": {"uri": settings.milvus_address, "embedded": settings.embedded_milvus,
                   "running": stack.milvus.running if settings.embedded_milvus else True},
        "worker": stack.worker_status(),
        "topics": [], "consumer_lag": {}, "collections": {},
    }
    if kafka_up:
        from streams.admin import consumer_lag, describe_topics

        try:
            status["topics"] = [
                {"name": t.name, "exists": t.exists, "partitions": t.partitions, "cleanup_policy": t.cleanup_policy,
                 "ok": t.ok, "problem": t.problem}
                for t in describe_topics(settings)
            ]
            status["consumer_lag"] = consumer_lag(settings)
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            status["kafka"]["error"] = str(exc)
    if status["milvus"]["running"]:
        from components.vectorstore import collection_rows

        try:
            status["collections"] = collection_rows(settings.milvus_address)
        except Exception as exc:  # noqa: BLE001 - status reports what it can
            status["milvus"]["error"] = str(exc)
    return status


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (bootstrap address, Milvus URI, …).")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Broker, Milvus, worker, topics, consumer lag per group, rows per collection."""
    data = collect_status(_settings(ctx))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def topics(ctx: click.Context, as_json: bool) -> None:
    """The topic catalogue and whether each topic exists with the right partitions and cleanup policy."""
    from streams.admin import describe_topics

    settings = _settings(ctx)
    try:
        rows = describe_topics(settings)
    except Exception as exc:  # noqa: BLE001 - reported to the user
        err.print(f"[red]cannot reach Kafka at {settings.bootstrap_servers}:[/red] {exc} (is the stack up? `eddy up`)")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps([{"name": r.name, "key": r.spec.key, "schema": r.spec.schema.__name__ if r.spec.schema else None,
                                "cleanup_policy": r.spec.cleanup_policy, "expected_partitions": r.expected_partitions,
                                "exists": r.exists, "partitions": r.partitions, "actual_cleanup_policy": r.cleanup_policy,
                                "ok": r.ok, "problem": r.problem} for r in rows], indent=2))
    else:
        wide = console.width >= 120
        table = Table("topic", "key", "value", "cleanup", "partitions", "state", *(["about"] if wide else []))
        table.columns[0].no_wrap = True
        for r in rows:
            table.add_row(r.name, r.spec.key, r.spec.schema.__name__ if r.spec.schema else "-", r.spec.cleanup_policy,
                          f"{r.partitions or '-'} / {r.expected_partitions}",
                          "[green]ok[/green]" if r.ok else f"[red]{r.problem}[/red]",
                          *([r.spec.description] if wide else []))
        console.print(table)
    if not all(r.ok for r in rows):
        sys.exit(1)


# ------------------------------------------------------------------------------ ingest
def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, transient=False)


def run_ingest(settings: Settings, files: list, *, source: str, acl: tuple[str, ...], wait: bool,
               quiet: bool = False):
    """Publish ``files`` as changes of ``source`` (plus deletes), optionally wait until indexed."""
    import time

    from components.vectorstore import read_live_doc_ids
    from eddy.ingest import IngestResult, publish
    from streams.client import EddyClient

    client = EddyClient.from_settings(settings)
    result = IngestResult(source=source)
    started = time.perf_counter()
    live = set(read_live_doc_ids(settings.milvus_address, settings.collection, source))
    start = client.end_offsets("index.events")
    with _progress() as progress:
        bar = progress.add_task(f"publishing {source}", total=len(files) + len(live - {f.doc_id for f in files}))
        changes, skipped = publish(
            client, files, source=source, acl=acl, live_doc_ids=live,
            on_published=lambda _c: progress.advance(bar),
            on_skipped=lambda msg: (progress.advance(bar), err.print(f"[yellow]skipped[/yellow] {msg}")),
        )
        result.documents = sum(c.op == "upsert" for c in changes)
        result.deletes = sum(c.op == "delete" for c in changes)
        result.skipped = skipped
        if wait and changes:
            bar2 = progress.add_task("indexing", total=len(changes))
            result.indexed = client.wait_indexed([str(c.event_id) for c in changes], start,
                                                 on_event=lambda _e: progress.advance(bar2))
    result.seconds = time.perf_counter() - started
    return result


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--source", default="files", show_default=True,
              help="Name of this set of documents; documents of the source missing from PATHS are deleted.")
@click.option("--acl", default="", help="Comma-separated groups allowed to read these documents (default: public).")
@click.option("--python-docs", is_flag=True, help="Ingest Debian's python3.11-doc reST sources (497 files), source 'python-docs'.")
@click.option("--wait", is_flag=True, help="Wait until every change is indexed and print the totals.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as one JSON object.")
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[Path, ...], source: str, acl: str, python_docs: bool, wait: bool,
           as_json: bool) -> None:
    """Publish files under PATHS as document upserts (.rst, .rst.txt, .md, .txt, .html)."""
    from eddy.ingest import collect_files, python_docs_files

    settings = _settings(ctx)
    if python_docs == bool(paths):
        raise click.UsageError("give PATHS or --python-docs (not both)")
    problems: list[str] = []
    if python_docs:
        from eddy.python_docs import ensure_python_docs

        with console.status("fetching Debian's python3.11-doc (apt-get download + dpkg-deb -x)…"):
            files = python_docs_files(ensure_python_docs(settings.home / "data"))
        source = "python-docs"
    else:
        files, problems = collect_files(list(paths), source)
        for problem in problems:
            err.print(f"[red]error[/red] {problem}")
    groups = tuple(g.strip() for g in acl.split(",") if g.strip())
    result = run_ingest(settings, files, source=source, acl=groups, wait=wait)
    totals = result.totals()
    if as_json:
        click.echo(json.dumps(totals))
    else:
        console.print(f"published {totals['documents']} upserts and {totals['deletes']} deletes of source "
                      f"{source!r}" + (f", skipped {len(result.skipped)}" if result.skipped else ""))
        if wait:
            console.print(
                f"indexed: {totals['chunks_embedded']} chunks embedded, {totals['chunks_deleted']} deleted, "
                f"{totals['chunks_unchanged']} unchanged ({totals['chunks_total']} in these documents); "
                f"lag p50 {totals['lag_ms_p50']} ms, p99 {totals['lag_ms_p99']} ms; {totals['seconds']} s")
    if problems or result.skipped:
        sys.exit(1)


# ------------------------------------------------------------------------------ ask
def print_answer_stream(events, as_json: bool):
    """Consume an ask() stream: deltas to the terminal as they arrive; returns the terminal event."""

    async def run():
        terminal = None
        async for event in events:
            if as_json:
                click.echo(event.model_dump_json())
            elif event.kind == "delta":
                console.print(event.text, end="", soft_wrap=True, highlight=False, markup=False)
            if event.terminal:
                terminal = event
        return terminal

    return run()


def render_final(event) -> None:
    if event.kind == "error":
        err.print(f"\n[red]error:[/red] {event.error}")
        return
    console.print()
    if event.citations:
        console.print("[bold]citations[/bold]")
        for i, c in enumerate(event.citations, 1):
            section = c.section.removeprefix(c.title).removeprefix(" > ") if c.section != c.title else ""
            where = f"{c.title} — {section}" if section else c.title
            console.print(f"  [{i}] {escape(where)}  [dim]{escape(c.uri)}[/dim]  (score {c.score:.3f})", highlight=False)
    t = event.timings
    if t is not None:
        console.print(f"[dim]retrieve {t.retrieve_ms:.0f} ms · ttft {t.ttft_ms:.0f} ms · generate "
                      f"{t.generate_ms:.0f} ms · total {t.total_ms:.0f} ms · "
                      f"{event.usage.completion_tokens if event.usage else 0} tokens · {event.model}[/dim]")


@cli.command()
@click.argument("question")
@click.option("--user", default="", help="User id.")
@click.option("--groups", default="", help="Comma-separated groups of the user (ACL filter).")
@click.option("--top-k", type=click.IntRange(1, 100), default=None, help="Chunks to retrieve (default EDDY_TOP_K).")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=None, help="Answer length budget in tokens.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print every answer event as one JSON line.")
@click.pass_context
def ask(ctx: click.Context, question: str, user: str, groups: str, top_k: int | None, max_tokens: int | None,
        timeout_s: float, as_json: bool) -> None:
    """Publish QUESTION as a Query and stream its answer (deltas, then citations and timings)."""
    from streams.client import EddyClient, EddyClientError

    if not question.strip():
        raise click.BadParameter("the question is empty", param_hint="QUESTION")
    client = EddyClient.from_settings(_settings(ctx))
    stream = client.ask(question, user_id=user, groups=[g for g in groups.split(",") if g],
                        top_k=top_k, max_tokens=max_tokens, timeout_s=timeout_s)
    try:
        final = asyncio.run(print_answer_stream(stream, as_json))
    except EddyClientError as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(1)
    if not as_json:
        render_final(final)
    if final.kind == "error":
        sys.exit(1)


# ------------------------------------------------------------------------------ schemas
@cli.group()
def schemas() -> None:
    """Event schemas (the public API)."""


@schemas.command("export")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.pass_context
def schemas_export(ctx: click.Context, directory: Path) -> None:
    """Write one JSON Schema per event type and the AsyncAPI document of the topics into DIRECTORY."""
    from schemas.export import export_json_schemas
    from streams.asyncapi import asyncapi_document

    for path in export_json_schemas(directory):
        console.print(str(path))
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(_settings(ctx)), indent=2) + "\n")
    console.print(str(path))


# ------------------------------------------------------------------------------ datasets
@cli.group()
def datasets() -> None:
    """Evaluation and training datasets: build from sources, export vetted snapshots."""


# ------------------------------------------------------------------------------ demo
@cli.command()
@click.option("--questions", default=3, show_default=True, type=click.IntRange(1, 10), help="FAQ questions to ask.")
@click.pass_context
def demo(ctx: click.Context, questions: int) -> None:
    """The whole loop on the Python 3.11 documentation: up, ingest, wait, ask, summarise."""
    from eddy.demo import run_demo

    sys.exit(run_demo(_settings(ctx), questions, console, err))


def main() -> None:
    from confluent_kafka import KafkaException

    from components.base import ComponentError
    from streams.client import EddyClientError

    from eddy.python_docs import CorpusError

    try:
        cli(prog_name="eddy")
    except CorpusError as exc:
        err.print(f"[red]eddy: cannot fetch the Python documentation: {escape(str(exc))}[/red]")
        sys.exit(1)
    except (ComponentError, EddyClientError, KafkaException) as exc:
        # Expected operational failures (stack down, unreachable server): one clear line, no traceback.
        err.print(f"[red]eddy: {escape(str(exc))}[/red]")
        err.print("is the stack up? `eddy status` shows what runs; `eddy up` starts it")
        sys.exit(1)


if __name__ == "__main__":
    main()
