"""Speed and answer quality of the packaged generators on five Python FAQ questions.

    .venv/bin/python bench/generator_quality.py                  # both models, fresh cache
    .venv/bin/python bench/generator_quality.py --cache-dir .eddy/models --models smollm2-135m

Each model runs in child processes (so peak RSS is per model): one converts the packaged
GGUF into an empty cache (skipped when ``--cache-dir`` already holds it), one loads the
converted weights and answers greedily with the ``rag-v1`` prompt. Every question gets its
relevant passage plus one distractor; a sixth question has no answer in its passages.
Figures printed: conversion time, later-start time (imports + load, each apart), peak RSS, TTFT,
tokens/s, keyword and citation checks, answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from components.base import GenerationParams, GenerationStats, Hit
from components.prompts import PROMPT_V1, build_messages

FAQ = "https://docs.python.org/3/faq/"

PASSAGES = {
    "copy": ("Library and Extension FAQ", "How do I copy a file?",
             "The shutil module contains a copyfile() function: shutil.copyfile(src, dst) copies the contents "
             "of the file named src to a file named dst. shutil.copy(src, dst) also copies the permission bits, "
             "and shutil.copy2(src, dst) additionally preserves file metadata such as modification times. "
             "Note that on Windows NTFS volumes, resource forks and other metadata are not copied."),
    "exec": ("Library and Extension FAQ", "How do I make a Python script executable on Unix?",
             "You need to do two things: the script file's mode must be executable and the first line must begin "
             "with #! followed by the path of the Python interpreter. The first is done by executing "
             "chmod +x scriptfile or perhaps chmod 755 scriptfile. The second can be done in a number of ways; "
             "the most straightforward is to write #!/usr/local/bin/python as the very first line of the file. "
             "To be independent of where the interpreter lives, use the env program: #!/usr/bin/env python3"),
    "defaults": ("Programming FAQ", "Why are default values shared between objects?",
                 "Default values are created exactly once, when the function is defined. If that object is "
                 "changed, like a dictionary or list used as a default, subsequent calls to the function refer to "
                 "this changed object: def foo(mydict={}) keeps the items added by earlier calls. Because of this, "
                 "do not use mutable objects as default values. Instead, use None as the default and inside the "
                 "function create a new list or dictionary when the parameter is None."),
    "dir": ("Programming FAQ", "How can I find the methods or attributes of an object?",
            "For an instance x of a user-defined class, dir(x) returns an alphabetized list of the names "
            "containing the instance attributes and methods and attributes defined by its class. "
            "The inspect module and getattr() can then be used to look at individual members."),
    "int": ("Programming FAQ", "How do I convert a string to a number?",
            "For integers, use the built-in int() type constructor, e.g. int('144') == 144. Similarly, float() "
            "converts to a floating-point number, e.g. float('144') == 144.0. int(string, base) takes the base "
            "to convert from as an optional second argument, so int('0x144', 16) == 324. Do not use the "
            "built-in function eval() if all you need is to convert strings to numbers: it is slow and a "
            "security risk."),
    "gil": ("Library and Extension FAQ", "Can't we get rid of the Global Interpreter Lock?",
            "The global interpreter lock (GIL) is often seen as a hindrance to Python's deployment on high-end "
            "multiprocessor machines, because a multi-threaded Python program effectively only uses one CPU, "
            "due to the insistence that (almost) all Python code can only run while the GIL is held."),
    "lambda": ("Programming FAQ", "Why do lambdas defined in a loop with different values all return the same result?",
               "x is not local to the lambdas but defined in the outer scope, and it is accessed when the lambda "
               "is called, not when it is defined. To avoid this, save the values in variables local to the "
               "lambdas, e.g. lambda x=x: x**2."),
}

# (question, passage keys in rank order, key of the relevant passage or None, required keywords)
QUESTIONS = [
    ("How do I copy a file?", ["copy", "gil"], "copy", ["shutil"]),
    ("How do I make a Python script executable on Unix?", ["lambda", "exec"], "exec", ["chmod", "#!"]),
    ("Why are default values shared between objects?", ["defaults", "lambda"], "defaults", ["once", "None"]),
    ("How can I find the methods or attributes of an object?", ["gil", "dir"], "dir", ["dir("]),
    ("How do I convert a string to a number?", ["int", "copy"], "int", ["int("]),
    ("How do I change the garbage collector's thresholds?", ["copy", "int"], None, []),
]


def hit(key: str) -> Hit:
    title, section, text = PASSAGES[key]
    return Hit(chunk_id=key, doc_id=key, text=text, section=section, anchor="", uri=FAQ, title=title, score=0.0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_convert(model: str, cache_dir: Path) -> dict:
    from components.models import materialise

    started = time.monotonic()
    materialise(model, cache_dir)
    return {"convert_s": time.monotonic() - started, "convert_peak_rss_mb": peak_rss_mb()}


def worker_run(model: str, cache_dir: Path, max_new_tokens: int) -> dict:
    started = time.monotonic()  # a later start's imports: torch, transformers and the generator module
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from components.generation import TransformersGenerator

    import_s = time.monotonic() - started
    gen = TransformersGenerator(model, cache_dir)
    started = time.monotonic()
    gen.start()
    result: dict = {"model_id": gen.model_id, "import_s": import_s, "load_s": time.monotonic() - started,
                    "answers": []}

    async def ask(question: str, keys: list[str]) -> dict:
        messages = build_messages(PROMPT_V1, question, [hit(k) for k in keys])
        stats = GenerationStats()
        t0 = time.perf_counter()
        text = "".join([p async for p in gen.stream(messages, GenerationParams(max_new_tokens=max_new_tokens), stats)])
        total = time.perf_counter() - t0
        decode_s = total - (stats.ttft_ms or 0.0) / 1000.0
        return {
            "answer": text, "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
            "ttft_ms": stats.ttft_ms, "total_s": total, "finish_reason": stats.finish_reason,
            "decode_tok_s": (stats.completion_tokens - 1) / decode_s if decode_s > 0 else None,
        }

    for question, keys, _, _ in QUESTIONS:
        result["answers"].append(asyncio.run(ask(question, keys)))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def child(mode: str, model: str, cache_dir: Path, max_new_tokens: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--models", model, "--cache-dir", str(cache_dir),
           "--max-new-tokens", str(max_new_tokens)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def judge(answer: str, relevant: int | None, keywords: list[str]) -> tuple[bool, str]:
    """(passed, remark): keywords present and the relevant passage cited, or "don't know" when none is."""
    low = answer.lower()
    if relevant is None:
        ok = "don't know" in low or "do not know" in low
        return ok, "says it doesn't know" if ok else "MISSED no-answer"
    has_kw = all(k.lower() in low for k in keywords)
    cites = f"[{relevant}]" in answer
    remark = ("keywords ok" if has_kw else "keywords MISSING") + (
        f", cites [{relevant}]" if cites else ", NO/WRONG citation")
    return has_kw and cites, remark


def relevant_number(keys: list[str], rel: str | None) -> int | None:
    return None if rel is None else keys.index(rel) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["qwen2.5-coder-0.5b", "smollm2-135m"])
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--worker", choices=["convert", "run"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        model = args.models[0]
        if args.worker == "convert":
            res = worker_convert(model, args.cache_dir)
        else:
            res = worker_run(model, args.cache_dir, args.max_new_tokens)
        print(json.dumps(res))
        return

    tmp = tempfile.TemporaryDirectory(prefix="eddy-bench-") if args.cache_dir is None else None
    cache_dir = Path(tmp.name) if tmp else args.cache_dir
    results = {}
    for model in args.models:
        conv = child("convert", model, cache_dir, args.max_new_tokens)
        run = child("run", model, cache_dir, args.max_new_tokens)
        results[model] = {**conv, **run}

    print(f"\n{'model':<20} {'convert s':>9} {'conv RSS MB':>11} {'import s':>8} {'load s':>7} {'start s':>7} "
          f"{'RSS MB':>7} {'TTFT ms':>8} {'decode tok/s':>12} {'e2e tok/s':>9} {'checks':>7}")
    for model, r in results.items():
        answers = r["answers"]
        ttft = sum(a["ttft_ms"] or 0 for a in answers) / len(answers)
        toks = sum(a["completion_tokens"] for a in answers)
        e2e = toks / sum(a["total_s"] for a in answers)
        decode = sum(a["decode_tok_s"] or 0 for a in answers) / len(answers)
        ok = sum(judge(a["answer"], relevant_number(keys, rel), kw)[0]
                 for a, (_, keys, rel, kw) in zip(answers, QUESTIONS, strict=True))
        print(f"{model:<20} {r['convert_s']:>9.1f} {r['convert_peak_rss_mb']:>11.0f} {r['import_s']:>8.1f} "
              f"{r['load_s']:>7.1f} {r['import_s'] + r['load_s']:>7.1f} {r['peak_rss_mb']:>7.0f} {ttft:>8.0f} "
              f"{decode:>12.1f} {e2e:>9.1f} {ok:>5}/{len(answers)}")
    print("(convert s ~0 when the cache already held the model; a later start = import s (torch, transformers, "
          "the generator module) + load s (start() from the converted cache, 4-token warm-up included); "
          "the interpreter's own start-up is in neither)")
    for i, (question, keys, rel, kw) in enumerate(QUESTIONS):
        relevant = relevant_number(keys, rel)
        print(f"\n### Q{i + 1}: {question}  (relevant passage: {relevant or 'none'})")
        for model, r in results.items():
            a = r["answers"][i]
            print(f"--- {model}: {a['completion_tokens']} tokens, {a['finish_reason']}, "
                  f"TTFT {a['ttft_ms']:.0f} ms, {a['prompt_tokens']} prompt tokens "
                  f"-> {judge(a['answer'], relevant, kw)[1]}")
            print(a["answer"].strip())
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
