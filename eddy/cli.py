"""The ``eddy`` command: run the embedded stack, ingest documents, ask questions, inspect topics."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import click
from rich.markup import escape

from config.settings import Settings
from eddy.render import console, err


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
    from worker.bindings import AGENTS

    agents = tuple(a.strip() for a in value.split(",") if a.strip())
    bad = [a for a in agents if a not in AGENTS]
    if bad or not agents:
        raise click.BadParameter(f"choose from {', '.join(AGENTS)}")
    return agents


# ------------------------------------------------------------------------------ stack
@cli.command()
@click.option("--agents", default="indexer,answerer,monitor,curator", show_default=True,
              help="Agents the worker hosts.")
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
    from eddy.telemetry import configure_tracing
    from worker.main import run_worker

    settings, hosted = _settings(ctx), _agents(agents)
    tracing = configure_tracing(settings, "eddy-worker", **{"eddy.agents": ",".join(hosted)})
    try:
        run_worker(settings, hosted, exporter_stats=tracing.exporter.stats if tracing.exporter is not None else None)
    finally:
        tracing.shutdown()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (bootstrap address, Milvus URI, …).")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Broker, Milvus, worker, topics, consumer lag per group, rows per collection."""
    from eddy.render import print_status
    from eddy.status import collect_status

    data = collect_status(_settings(ctx))
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_status(data)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def topics(ctx: click.Context, as_json: bool) -> None:
    """The topic catalogue and whether each topic exists with the right partitions and cleanup policy."""
    from eddy.render import print_topics
    from eddy.status import topic_records
    from streams.admin import describe_topics

    settings = _settings(ctx)
    try:
        rows = describe_topics(settings)
    except Exception as exc:  # noqa: BLE001 - reported to the user
        err.print(f"[red]cannot reach Kafka at {settings.bootstrap_servers}:[/red] {exc} (is the stack up? `eddy up`)")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(topic_records(rows), indent=2))
    else:
        print_topics(rows)
    if not all(r.ok for r in rows):
        sys.exit(1)


# ------------------------------------------------------------------------------ ingest
def _collection(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a Milvus collection name (letters, digits, underscores; not starting with a digit)."""
    from schemas.documents import COLLECTION_PATTERN

    if value is not None and not re.match(COLLECTION_PATTERN, value):
        raise click.BadParameter(f"{value!r}: letters, digits and underscores, not starting with a digit")
    return value


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--source", default="files", show_default=True,
              help="Name of this set of documents; documents of the source missing from PATHS are deleted.")
@click.option("--acl", default="", help="Comma-separated groups allowed to read these documents (default: public).")
@click.option("--python-docs", is_flag=True,
              help="Ingest Debian's python3.11-doc reST sources (497 files), source 'python-docs'.")
@click.option("--collection", callback=_collection, default=None,
              help="Collection to index into (default EDDY_COLLECTION); created on first use.")
@click.option("--wait", is_flag=True, help="Wait until every change is indexed and print the totals.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as one JSON object.")
@click.pass_context
def ingest(ctx: click.Context, paths: tuple[Path, ...], source: str, acl: str, python_docs: bool,
           collection: str | None, wait: bool, as_json: bool) -> None:
    """Publish files under PATHS as document upserts (.rst, .rst.txt, .md, .txt, .html)."""
    from eddy.jobs import run_ingest
    from eddy.telemetry import configure_tracing

    if python_docs == bool(paths):
        raise click.UsageError("give PATHS or --python-docs (not both)")
    settings = _settings(ctx)
    tracing = configure_tracing(settings, "eddy-cli")  # each change's trace starts at its publish
    try:
        code = run_ingest(settings, list(paths), source=source, python_docs=python_docs,
                          acl=tuple(g.strip() for g in acl.split(",") if g.strip()), collection=collection,
                          wait=wait, as_json=as_json)
    finally:
        tracing.shutdown()
    sys.exit(code)


# ------------------------------------------------------------------------------ ask
@cli.command()
@click.argument("question")
@click.option("--user", default="", help="User id.")
@click.option("--groups", default="", help="Comma-separated groups of the user (ACL filter).")
@click.option("--top-k", type=click.IntRange(1, 100), default=None, help="Chunks to retrieve (default EDDY_TOP_K).")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=None, help="Answer length budget in tokens.")
@click.option("--collection", callback=_collection, default=None,
              help="Collection to search (default EDDY_COLLECTION); e.g. one `eddy eval` built.")
@click.option("--timeout", "timeout_s", type=float, default=300.0, show_default=True,
              help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print every answer event as one JSON line.")
@click.pass_context
def ask(ctx: click.Context, question: str, user: str, groups: str, top_k: int | None, max_tokens: int | None,
        collection: str | None, timeout_s: float, as_json: bool) -> None:
    """Publish QUESTION as a Query and stream its answer (deltas, then citations and timings)."""
    from eddy.render import print_answer_stream, render_final
    from eddy.telemetry import configure_tracing
    from streams.client import EddyClient, EddyClientError

    if not question.strip():
        raise click.BadParameter("the question is empty", param_hint="QUESTION")

    settings = _settings(ctx)
    tracing = configure_tracing(settings, "eddy-cli")  # the query's trace starts here
    client = EddyClient.from_settings(settings)
    stream = client.ask(question, user_id=user, groups=[g for g in groups.split(",") if g],
                        top_k=top_k, max_tokens=max_tokens, collection=collection, timeout_s=timeout_s)
    try:
        final = print_answer_stream(stream, as_json)
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
    from streams.asyncapi import asyncapi_document
    from streams.topics import event_models

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
    from eddy.jobs import fetch_python_docs
    from pipelines.datasets import build_python_faq, write_dataset

    sources = fetch_python_docs(_settings(ctx))
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
    from eddy.render import counting, print_snapshot
    from pipelines.snapshot import export_snapshot
    from streams.client import EddyClient

    client = EddyClient.from_settings(_settings(ctx))
    with counting(f"reading {client.topic('datasets.' + name)}") as tick:
        snapshot = export_snapshot(client, name, out_dir, on_record=tick)
    if as_json:
        click.echo(json.dumps(snapshot.manifest, indent=2))
    else:
        print_snapshot(snapshot.manifest, snapshot.path)


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
@cli.command("eval")
@click.option("--dataset", "dataset_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Dataset directory in the BEIR layout (see `eddy datasets build`).")
@click.option("--collection", callback=_collection, default=None,
              help="Collection to index the corpus into (default eval_<dataset name>).")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate a fixed sample of N queries (drawn with --seed) instead of all.")
@click.option("--answers", is_flag=True,
              help="Generate answers too and score them (token F1, ROUGE-L, judge, latency).")
@click.option("--judge/--no-judge", default=True, show_default=True,
              help="With --answers: grade with the LLM judge (EDDY_JUDGE_MODEL, EDDY_JUDGE_URL).")
@click.option("--out", "out_root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Output root; each run writes a directory in it [default: $EDDY_HOME/eval].")
@click.option("--depth", type=click.IntRange(1, 1000), default=200, show_default=True,
              help="Chunks retrieved per query for the retrieval metrics (documents ranked by their best chunk).")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=None,
              help="Answer budget (default EDDY_MAX_NEW_TOKENS).")
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
    from eddy.jobs import run_evaluation
    from pipelines.evaluate import EvalConfig

    settings = _settings(ctx)
    config = EvalConfig(out=out_root or settings.home / "eval", collection=collection, limit=limit, answers=answers,
                        depth=depth, seed=seed, max_tokens=max_tokens, concurrency=concurrency,
                        idle_timeout_s=timeout_s)
    sys.exit(run_evaluation(settings, dataset_dir, config, judge))


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

    sys.exit(run_demo(_settings(ctx), questions))


def main() -> None:
    from confluent_kafka import KafkaException

    from components.base import ComponentError
    from pipelines.python_docs import CorpusError
    from streams.client import EddyClientError

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
