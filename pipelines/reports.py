"""Evaluation reports: ``report.json``, ``report.md``, ``metrics.png`` and ``latency.png`` in a run
directory written atomically (a temporary sibling renamed at the end), and the comparison with the
previous report of the same dataset in the output root."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from components.stats import percentile
from pipelines.metrics import RETRIEVAL_METRICS

REPORT_FORMAT = 1
#: Metrics compared between runs (report key path -> label), in table order.
COMPARED = (
    *((("retrieval", m), m) for m in RETRIEVAL_METRICS),
    (("answers", "token_f1"), "token F1"),
    (("answers", "rouge_l"), "ROUGE-L"),
    (("answers", "judge_correctness"), "judge correctness (1-5)"),
    (("answers", "judge_faithfulness"), "judge faithfulness (1-5)"),
    (("latency_ms", "ttft_p50"), "TTFT p50 ms"),
    (("latency_ms", "total_p50"), "total p50 ms"),
)


def _get(report: dict, path: tuple[str, str]) -> float | None:
    value = (report.get(path[0]) or {}).get(path[1])
    return value if isinstance(value, (int, float)) else None


def finished_reports(out_root: Path) -> list[dict]:
    """Every readable report of this format in ``out_root``'s run directories (not the temporary
    ``.``-directories of a run being written)."""
    reports = []
    for path in out_root.glob("*/report.json"):
        if path.parent.name.startswith("."):
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if report.get("format") == REPORT_FORMAT:
            reports.append(report)
    return reports


def query_set_id(query_ids: list[str]) -> str:
    """Fingerprint of the evaluated query ids (16 hex digits of sha256): runs are comparable when equal."""
    return hashlib.sha256("\n".join(sorted(query_ids)).encode()).hexdigest()[:16]


def previous_report(out_root: Path, dataset_name: str, query_set: str, before: str) -> dict | None:
    """The newest report in ``out_root`` older than ``before`` (created_at): of the same dataset and
    query set if there is one, else of the same dataset, else any."""
    reports = [r for r in finished_reports(out_root) if r.get("created_at", "") < before]
    same = [r for r in reports if r["dataset"]["name"] == dataset_name]
    same_queries = [r for r in same if r["dataset"].get("query_set") == query_set]
    pool = same_queries or same or reports
    return max(pool, key=lambda r: r["created_at"]) if pool else None


def comparison(current: dict, previous: dict | None) -> list[tuple[str, float | None, float | None, float | None]]:
    """Rows (label, previous, current, delta) for every compared metric either report has."""
    rows = []
    for path, label in COMPARED:
        now = _get(current, path)
        before = _get(previous, path) if previous else None
        if now is None and before is None:
            continue
        delta = round(now - before, 4) if now is not None and before is not None else None
        rows.append((label, before, now, delta))
    return rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def render_markdown(report: dict, rows: list[tuple]) -> str:
    """``report.md``: dataset, versions, ingest figures, then ``rows`` (label, previous, current,
    delta; :func:`comparison`) as a table and the plots."""
    v, d = report["versions"], report["dataset"]
    lines = [
        f"# Eddy evaluation {report['run_id']}", "",
        f"- dataset: **{d['name']}** ({d['corpus_documents']:,} documents, {d['queries_evaluated']} of "
        f"{d['queries']} queries, fingerprint `{d['fingerprint']}`), collection `{report['collection']}`",
        f"- pipeline `{v['pipeline']}`, prompt `{v['prompt']}`, generator `{v['generator']}`, embedder "
        f"`{v['embedder']}`, chunker `{v['chunker']}`, judge `{v['judge']}`, commit `{v['git_commit']}`",
        f"- ingest: {report['ingest']['chunks_embedded']:,} chunks embedded, "
        f"{report['ingest']['chunks_unchanged']:,} unchanged, {report['ingest']['seconds']} s; "
        f"run total {report['elapsed_s']['total']} s", "",
        "| metric | previous | current | delta |", "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {_fmt(b)} | {_fmt(n)} | {'' if dl is None else f'{dl:+.4g}'} |" for label, b, n, dl in rows]
    if report.get("previous_run_id"):
        caveat = ("." if report.get("previous_comparable")
                  else " (other queries or dataset: deltas are indicative only).")
        lines += ["", f"Previous run: `{report['previous_run_id']}`" + caveat]
    lines += ["", "![metrics per version](metrics.png)"]
    if report.get("latency_ms"):
        lines += ["", "![latency distribution](latency.png)"]
    return "\n".join(lines) + "\n"


def plot_metrics(out_root: Path, report: dict, path: Path) -> None:
    """Line chart of the main metrics over every run of this dataset in ``out_root`` plus this one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = [r for r in finished_reports(out_root)
               if r["dataset"]["name"] == report["dataset"]["name"] and r["run_id"] != report["run_id"]]
    history = sorted([*history, report], key=lambda r: r["created_at"])[-20:]
    labels = [f"{(r['versions']['git_commit'] or '?')[:7]}\n{r['created_at'][5:16]}" for r in history]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(history) + 3), 4.2))
    for path_, label in (c for c in COMPARED if c[0][0] in ("retrieval", "answers")):
        values = [_get(r, path_) for r in history]
        if path_[1].startswith("judge"):
            values = [None if x is None else (x - 1) / 4 for x in values]  # 1-5 -> 0-1
            label += " →0-1"
        if any(x is not None for x in values):
            ax.plot(range(len(history)), [np.nan if x is None else x for x in values], marker="o", label=label)
    ax.set_xticks(range(len(history)), labels, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.set_title(f"{report['dataset']['name']}: metrics per version")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(rows: list[dict], path: Path) -> None:
    """Histograms of TTFT and total answer time (ms) over the answered queries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in ((axes[0], "ttft_ms", "time to first token"), (axes[1], "total_ms", "total answer time")):
        values = [r[key] for r in rows if r.get(key) is not None]
        ax.hist(values, bins=min(20, max(5, len(values) // 2)), color="#4c72b0")
        if values:
            ax.axvline(percentile(values, 50), color="k", linestyle="--", label="p50")
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("queries")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_root: Path, report: dict, rows: list[dict], table: list[tuple]) -> Path:
    """Write the run directory atomically (temporary sibling renamed at the end); returns its path."""
    out_root.mkdir(parents=True, exist_ok=True)
    final_dir = out_root / report["run_id"]
    tmp = Path(tempfile.mkdtemp(prefix=f".{report['run_id']}.", dir=out_root))
    try:
        (tmp / "report.json").write_text(json.dumps({**report, "per_query": rows}, indent=2) + "\n")
        (tmp / "report.md").write_text(render_markdown(report, table))
        plot_metrics(out_root, report, tmp / "metrics.png")
        if report.get("latency_ms"):
            plot_latency(rows, tmp / "latency.png")
        os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final_dir
