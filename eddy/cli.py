"""The ``eddy`` command: run the embedded stack, ingest documents, ask questions, inspect topics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from config.settings import Settings

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
      eddy dashboard               live metrics, alerts and traces in the browser
      eddy datasets build python-faq data/faq && eddy eval --dataset data/faq
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
@click.option("--agents", default="indexer,answerer,monitor,curator", show_default=True, help="Agents the worker hosts.")
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
@click.option("--agents", default="indexer,answerer,monitor,curator", show_default=True, help="Agents to host.")
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
def _collection(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a Milvus collection name (letters, digits, underscores; not starting with a digit)."""
    from schemas.documents import COLLECTION_PATTERN

    if value is not None and not re.match(COLLECTION_PATTERN, value):
        raise click.BadParameter(f"{value!r}: letters, digits and underscores, not starting with a digit")
    return value


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err, transient=False)


def run_ingest(settings: Settings, files: list, *, source: str, acl: tuple[str, ...], wait: bool,
               collection: str | None = None):
    """Publish ``files`` as changes of ``source`` (plus deletes) into ``collection`` (None = the default),
    optionally wait until indexed."""
    import time

    from components.vectorstore import read_live_doc_ids
    from eddy.ingest import IngestResult, publish
    from streams.client import EddyClient

    client = EddyClient.from_settings(settings)
    result = IngestResult(source=source)
    started = time.perf_counter()
    live = set(read_live_doc_ids(settings.milvus_address, collection or settings.collection, source))
    start = client.end_offsets("index.events")
    with _progress() as progress:
        bar = progress.add_task(f"publishing {source}", total=len(files) + len(live - {f.doc_id for f in files}))
        changes, skipped = publish(
            client, files, source=source, acl=acl, live_doc_ids=live,
            on_published=lambda _c: progress.advance(bar),
            on_skipped=lambda msg: (progress.advance(bar), err.print(f"[yellow]skipped[/yellow] {msg}")),
            collection=collection,
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
@click.option("--collection", callback=_collection, default=None,
              help="Collection to index into (default EDDY_COLLECTION); created on first use.")
@click.option("--wait", is_flag=True, help="Wait until every change is indexed and print the totals.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as one JSON object.")
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[Path, ...], source: str, acl: str, python_docs: bool,
           collection: str | None, wait: bool, as_json: bool) -> None:
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
    from streams.tracing import configure_tracing

    tracing = configure_tracing(settings, "eddy-cli")  # each change's trace starts at its publish
    try:
        result = run_ingest(settings, files, source=source, acl=groups, wait=wait, collection=collection)
    finally:
        tracing.shutdown()
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
@click.option("--collection", callback=_collection, default=None,
              help="Collection to search (default EDDY_COLLECTION); e.g. one `eddy eval` built.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print every answer event as one JSON line.")
@click.pass_context
def ask(ctx: click.Context, question: str, user: str, groups: str, top_k: int | None, max_tokens: int | None,
        collection: str | None, timeout_s: float, as_json: bool) -> None:
    """Publish QUESTION as a Query and stream its answer (deltas, then citations and timings)."""
    from streams.client import EddyClient, EddyClientError

    if not question.strip():
        raise click.BadParameter("the question is empty", param_hint="QUESTION")
    from streams.tracing import configure_tracing

    settings = _settings(ctx)
    tracing = configure_tracing(settings, "eddy-cli")  # the query's trace starts here
    client = EddyClient.from_settings(settings)
    stream = client.ask(question, user_id=user, groups=[g for g in groups.split(",") if g],
                        top_k=top_k, max_tokens=max_tokens, collection=collection, timeout_s=timeout_s)
    try:
        final = asyncio.run(print_answer_stream(stream, as_json))
    except EddyClientError as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(1)
    finally:
        tracing.shutdown()
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
    from streams.topics import event_models
    from streams.asyncapi import asyncapi_document

    for path in export_json_schemas(directory, event_models()):
        console.print(str(path))
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(_settings(ctx)), indent=2) + "\n")
    console.print(str(path))


# ------------------------------------------------------------------------------ datasets
@cli.group()
def datasets() -> None:
    """Evaluation and training datasets: build from sources, export vetted snapshots."""


@datasets.command("build")
@click.argument("name", type=click.Choice(["python-faq"]))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.pass_context
def datasets_build(ctx: click.Context, name: str, out_dir: Path) -> None:
    """Build dataset NAME into OUT_DIR in the BEIR layout (corpus.jsonl, queries.jsonl, qrels.tsv,
    answers.jsonl).

    python-faq: every section of Debian's python3.11-doc is a document; the Python FAQ's questions
    are the queries, each relevant to its own answer section (whose text is the reference answer).
    """
    from eddy.python_docs import ensure_python_docs
    from pipelines.datasets import build_python_faq, write_dataset

    settings = _settings(ctx)
    with console.status("fetching Debian's python3.11-doc (apt-get download + dpkg-deb -x)…"):
        sources = ensure_python_docs(settings.home / "data")
    with console.status("splitting the documentation into sections…"):
        faq = build_python_faq(sources)
        write_dataset(out_dir, faq.corpus, faq.queries, faq.qrels, faq.answers)
    console.print(f"{name}: {len(faq.corpus):,} documents, {len(faq.queries)} queries with reference answers "
                  f"-> {out_dir}")


@datasets.command("export")
@click.argument("name", type=click.Choice(["eval", "train"]))
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def datasets_export(ctx: click.Context, name: str, out_dir: Path, as_json: bool) -> None:
    """Snapshot the vetted dataset NAME (topic datasets.NAME) into OUT_DIR/NAME-<hash>/: records.jsonl
    and manifest.json (content hash, record counts, time range, scrubber and filter versions)."""
    from pipelines.snapshot import export_snapshot
    from streams.client import EddyClient

    client = EddyClient.from_settings(_settings(ctx))
    with console.status(f"reading {client.topic('datasets.' + name)}…") as status:
        count = 0

        def tick() -> None:
            nonlocal count
            count += 1
            if count % 500 == 0:
                status.update(f"reading {client.topic('datasets.' + name)}… {count:,} records")

        snapshot = export_snapshot(client, name, out_dir, on_record=tick)
    m = snapshot.manifest
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    console.print(f"{m['version']}: {m['records']:,} records {m['ratings']} -> {snapshot.path}")
    console.print(f"[dim]sha256 {m['content_sha256']} · feedback {m['time_range']['first_feedback_at']} … "
                  f"{m['time_range']['last_feedback_at']}[/dim]")


# ------------------------------------------------------------------------------ feedback
@cli.command()
@click.argument("query_id")
@click.option("--up/--down", "up", default=None, help="Rate the answer to QUERY_ID (one of the two is required).")
@click.option("--comment", default="", help="Free text about the answer.")
@click.option("--share", is_flag=True,
              help="Share the conversation for analysis: after PII scrubbing and filtering it may join the "
                   "evaluation and training datasets.")
@click.option("--user", default="", help="User id.")
@click.pass_context
def feedback(ctx: click.Context, query_id: str, up: bool | None, comment: str, share: bool, user: str) -> None:
    """Rate the answer to QUERY_ID (`eddy ask --json` prints it) with --up or --down."""
    from pydantic import ValidationError

    from streams.client import EddyClient

    if up is None:
        raise click.UsageError("give --up or --down")
    client = EddyClient.from_settings(_settings(ctx))
    try:
        event = client.publish_feedback(query_id, "up" if up else "down", comment=comment, share=share, user_id=user)
    except ValidationError as exc:
        from streams.codec import describe

        raise click.BadParameter(describe(exc)) from exc
    client.flush(10.0)
    console.print(f"feedback {event.event_id} on {query_id}: {event.rating}"
                  + (", shared for curation" if share else ""))


# ------------------------------------------------------------------------------ eval
class _Bars:
    """pipelines.evaluate.Reporter drawing one rich progress bar (with ETA) per phase."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, object] = {}

    def start(self, task: str, total: int) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total)

    def advance(self, task: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[task], n)


@cli.command("eval")
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Dataset directory in the BEIR layout (see `eddy datasets build`).")
@click.option("--collection", callback=_collection, default=None,
              help="Collection to index the corpus into (default eval_<dataset name>).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate a fixed sample of N queries (drawn with --seed) instead of all.")
@click.option("--answers", is_flag=True, help="Generate answers too and score them (token F1, ROUGE-L, judge, latency).")
@click.option("--judge/--no-judge", default=True, show_default=True,
              help="With --answers: grade with the LLM judge (EDDY_JUDGE_MODEL, EDDY_JUDGE_URL).")
@click.option("--out", "out_root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Output root; each run writes a directory in it [default: $EDDY_HOME/eval].")
@click.option("--depth", type=click.IntRange(1, 1000), default=200, show_default=True,
              help="Chunks retrieved per query for the retrieval metrics (documents ranked by their best chunk).")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=None, help="Answer budget (default EDDY_MAX_NEW_TOKENS).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option("--concurrency", type=click.IntRange(1), default=None,
              help="Queries in flight [default: all at once; 1 with --answers, so latency is measured unloaded].")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True,
              help="Give up when no index event or answer arrived for this many seconds.")
@click.pass_context
def eval_(ctx: click.Context, dataset_dir: Path, collection: str | None, limit: int | None, answers: bool,
          judge: bool, out_root: Path | None, depth: int, max_tokens: int | None, seed: int, concurrency: int | None,
          timeout_s: float) -> None:
    """Measure retrieval (nDCG@10, MRR@10, Recall@1/5/10/100) and, with --answers, answer quality of the
    live pipeline on a dataset: the corpus goes through docs.changes into its own collection, every
    query through queries/answers. Writes report.json, report.md and plots to a new directory under
    --out and compares with the previous report there. Starts the embedded stack if it is not up.
    """
    from eddy.stack import Stack
    from pipelines.datasets import DatasetError, load_dataset
    from pipelines.evaluate import EvalConfig, check_config, run_eval
    from pipelines.judge import build_judge

    settings = _settings(ctx)
    config = EvalConfig(out=out_root or settings.home / "eval", collection=collection, limit=limit, answers=answers,
                        depth=depth, seed=seed, max_tokens=max_tokens, concurrency=concurrency,
                        idle_timeout_s=timeout_s)
    try:
        dataset = load_dataset(dataset_dir)
        check_config(dataset, config)
    except DatasetError as exc:
        err.print(f"[red]eddy eval: invalid dataset:[/red] {escape(str(exc))}")
        sys.exit(2)
    with console.status("starting the stack (if it is not up)…"):
        Stack(settings).up()
    grader = None
    if answers and judge:
        with console.status(f"loading the judge {settings.judge_model}…"):
            grader = build_judge(settings)
    try:
        with _progress() as progress:
            report, run_dir, table = run_eval(settings, dataset, config, grader, _Bars(progress))
    except DatasetError as exc:
        err.print(f"[red]eddy eval: invalid dataset:[/red] {escape(str(exc))}")
        sys.exit(2)
    out = Table("metric", "previous", "current", "delta", title=f"{dataset.name} — run {report['run_id']}"
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


# ------------------------------------------------------------------------------ dashboard
@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port on 127.0.0.1 (default EDDY_DASHBOARD_PORT, 19465).")
@click.option("--monitor", "monitor", default=None, metavar="URL",
              help="The monitor's base URL (default http://EDDY_MONITOR_HOST:EDDY_MONITOR_PORT).")
@click.pass_context
def dashboard(ctx: click.Context, port: int | None, monitor: str | None) -> None:
    """Serve the live dashboard on loopback: throughput, latency per step, TTFT, tokens and cost,
    freshness and consumer lag, errors/DLQ, feedback, alerts and the latest traces.

    The worker's monitor agent (`eddy up` starts it) computes the figures; this page polls it.
    """
    from eddy.dashboard import monitor_url, serve_dashboard

    settings = _settings(ctx)
    port = port or settings.dashboard_port
    console.print(f"dashboard on [bold]http://127.0.0.1:{port}/[/bold] (monitor {monitor or monitor_url(settings)}); "
                  "Ctrl-C stops it")
    try:
        serve_dashboard(settings, port, monitor)
    except OSError as exc:
        err.print(f"[red]cannot serve on 127.0.0.1:{port}: {escape(str(exc))}[/red] (choose another --port)")
        sys.exit(1)


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
