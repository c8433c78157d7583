"""``eddy demo``: the whole loop on the Python 3.11 documentation, with a summary of the figures."""

from __future__ import annotations

import time

from rich.table import Table

from components.stats import percentile
from config.settings import Settings
from eddy.render import bars, console, err, print_answer_stream, print_skipped, render_final
from eddy.stack import Stack
from infra.process import LaunchError
from pipelines.ingest import ingest_files, python_docs_files
from pipelines.python_docs import ensure_python_docs
from streams.client import EddyClient, EddyClientError

#: Real questions from the Python FAQ (Debian python3.11-doc, faq/*.rst.txt).
FAQ_QUESTIONS = (
    "How do I copy a file?",
    "Why are default values shared between objects?",
    "How do I make a Python script executable on Unix?",
    "How do I convert a string to a number?",
    "How can I find the methods or attributes of an object?",
    "Is there an equivalent of C's \"?:\" ternary operator?",
    "How do I delete a file?",
    "What is a class?",
    "How do I get a list of all instances of a given class?",
    "How do I read (or write) binary data?",
)


def run_demo(settings: Settings, questions: int) -> int:
    """Start the stack, ingest the Python docs, ask the first ``questions`` of :data:`FAQ_QUESTIONS`
    and print a summary. Returns the process exit code (0 when every step worked). Raises
    CorpusError when the documentation cannot be fetched, ComponentError / EddyClientError when
    Milvus or Kafka fail during the ingest."""
    t_start = time.perf_counter()
    stack = Stack(settings)
    try:
        with console.status("starting Apache Kafka (KRaft) and the Milvus Lite server…"):
            stack.start_infra()
        with console.status("starting the Eddy worker (loads the embedder and the generator)…"):
            stack.start_worker()
    except LaunchError as exc:
        err.print(f"[red]could not start the stack:[/red] {exc}")
        return 1
    console.print(f"[green]stack up[/green] in {time.perf_counter() - t_start:.1f}s: Kafka "
                  f"{settings.bootstrap_servers}, Milvus {settings.milvus_address}")
    with console.status("fetching Debian's python3.11-doc…"):
        files = python_docs_files(ensure_python_docs(settings.home / "data"))
    with bars() as progress:
        result = ingest_files(settings, files, source="python-docs", progress=progress, on_skipped=print_skipped)
    totals = result.totals()
    console.print(f"indexed {totals['documents']} documents: {totals['chunks_embedded']:,} chunks embedded, "
                  f"{totals['chunks_unchanged']:,} unchanged, {totals['chunks_deleted']:,} deleted "
                  f"in {totals['seconds']:.1f}s")

    client = EddyClient.from_settings(settings)
    finals = []
    for question in FAQ_QUESTIONS[:questions]:
        console.rule(f"[bold]{question}")
        try:
            final = print_answer_stream(client.ask(question, timeout_s=600), as_json=False)
        except EddyClientError as exc:
            err.print(f"[red]{exc}[/red]")
            return 1
        render_final(final)
        finals.append(final)

    console.rule("[bold]summary")
    table = Table("figure", "value")
    table.add_row("documents", f"{totals['documents']:,}")
    table.add_row("chunks in these documents", f"{totals['chunks_total']:,}")
    table.add_row("chunks embedded this run", f"{totals['chunks_embedded']:,}")
    table.add_row("chunks unchanged (not re-embedded)", f"{totals['chunks_unchanged']:,}")
    table.add_row("ingest wall time", f"{totals['seconds']:.1f} s")
    if totals["chunks_embedded"]:
        table.add_row("indexing throughput", f"{totals['chunks_embedded'] / totals['seconds']:.1f} chunks/s")
    table.add_row("lag, published → searchable, p50 / p99", f"{totals['lag_ms_p50']} / {totals['lag_ms_p99']} ms")
    ok = [f for f in finals if f.kind == "final" and f.timings is not None]
    if ok:
        ttft = [f.timings.ttft_ms for f in ok]
        total = [f.timings.total_ms for f in ok]
        table.add_row("answer TTFT p50 / max", f"{percentile(ttft, 50):.0f} / {max(ttft):.0f} ms")
        table.add_row("answer total p50 / max", f"{percentile(total, 50):.0f} / {max(total):.0f} ms")
        table.add_row("model", ok[0].model or "-")
    console.print(table)
    console.print("[dim]the stack keeps running: `eddy ask \"…\"`, `eddy status`, `eddy down`[/dim]")
    return 0 if len(ok) == len(finals) else 1
