"""Generators: in-process transformers models (real) and an echo generator (deterministic fake).

The real generator runs a packaged model of :data:`components.models.GENERATORS`, loaded
from the bf16 safetensors that :func:`components.models.materialise` converts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from components.base import (
    ChatMessage,
    ComponentError,
    GenerationParams,
    GenerationStats,
    Generator,
    PermanentError,
    RetryableError,
    check_messages,
)
from components.models import GENERATORS, materialise

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------- stream plumbing
_DONE = object()


class _LoopChannel:
    """Hands items from a worker thread to an asyncio.Queue without blocking either side."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.stop = stop

    def send(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # loop closed: nobody is listening any more
            self.stop.set()


class TransformersGenerator:
    """A packaged chat model run in-process with transformers on CPU, bf16.

    ``model`` is a key of :data:`GENERATORS` (``"qwen2.5-coder-0.5b"``, ``"smollm2-135m"``);
    ``cache_dir`` holds the converted weights (see :func:`materialise`); ``threads`` sets
    ``torch.set_num_threads`` (process-wide) at ``start()``. Each ``stream()`` runs
    ``model.generate`` in its own thread, so several streams may run at once (they share
    the CPU). Measured on 2 cores: see ``bench/generator_quality.py``.
    """

    def __init__(self, model: str, cache_dir: Path, threads: int | None = None, warmup: bool = True) -> None:
        if model not in GENERATORS:
            raise PermanentError(f"unknown generator model {model!r}; known: {', '.join(sorted(GENERATORS))}, echo")
        self.name = model
        self.model_id = GENERATORS[model].model_id
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.warmup = warmup
        self.load_seconds: float | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: list[int] = []
        self._pad_id: int | None = None
        self._context_tokens = 0
        # HF fast tokenizers raise "Already borrowed" when one instance is used from two threads.
        self._tok_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Materialise/convert the weights if needed, then load tokenizer and model (bf16, eval).

        Blocking: ~1 s from the converted cache, up to about a minute on first use.
        Raises PermanentError when the weights are missing or corrupt.
        """
        with self._start_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            started = time.monotonic()
            if self.threads:
                torch.set_num_threads(self.threads)
            path = materialise(self.name, self.cache_dir)
            log.info("loading generator %s from %s", self.model_id, path)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16, local_files_only=True)
            model.eval()
            self._tokenizer = tokenizer
            self._stop_ids = self._find_stop_ids(model, tokenizer)
            pad = model.generation_config.pad_token_id
            self._pad_id = pad if pad is not None else self._stop_ids[0]
            self._context_tokens = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
            self._model = model
            if self.warmup:  # first forward passes are slow (kernel selection): pay that here
                with torch.inference_mode():
                    ids = torch.tensor([[self._stop_ids[0]] * 8])
                    model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                        do_sample=False, pad_token_id=self._pad_id, eos_token_id=self._stop_ids,
                    )
            self.load_seconds = time.monotonic() - started
            log.info("generator %s ready in %.1f s (context %d tokens)", self.model_id, self.load_seconds,
                     self._context_tokens)

    @staticmethod
    def _find_stop_ids(model: Any, tokenizer: Any) -> list[int]:
        ids: list[int] = []
        eos = model.generation_config.eos_token_id
        for value in eos if isinstance(eos, list) else [eos]:
            if value is not None and value not in ids:
                ids.append(int(value))
        vocab = tokenizer.get_vocab()
        for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>"):
            if token in vocab and vocab[token] not in ids:
                ids.append(int(vocab[token]))
        if not ids:
            raise PermanentError("model has no end-of-sequence token")
        return ids

    @property
    def context_tokens(self) -> int:
        """Largest prompt + completion the model takes, tokens (0 before ``start()``)."""
        return self._context_tokens

    @property
    def active_streams(self) -> int:
        """Generation threads still running (for tests and metrics)."""
        return sum(1 for t in list(self._threads) if t.is_alive())

    def _require_started(self) -> None:
        if self._model is None:
            raise RuntimeError("TransformersGenerator used before start()")

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` alone (no chat template, no special tokens)."""
        self._require_started()
        with self._tok_lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of ``messages`` after the chat template, generation prompt included."""
        return len(self._encode(messages))

    def _encode(self, messages: Sequence[ChatMessage]) -> list[int]:
        self._require_started()
        check_messages(messages)
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        try:
            with self._tok_lock:
                out = self._tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        except Exception as exc:  # template errors (bad role order...) are the caller's input
            raise PermanentError(f"chat template rejected the messages: {exc}") from exc
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return [int(i) for i in out]

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tok_lock:
            return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ streaming
    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, stats: GenerationStats
    ) -> AsyncIterator[str]:
        """Stream the completion of ``messages`` as text pieces (async generator).

        Greedy when ``params.temperature == 0``, else sampling at that temperature with a
        per-stream RNG seeded by ``params.seed`` (reproducible even when streams run
        concurrently). Fills ``stats``: ``prompt_tokens`` (after the chat template),
        ``completion_tokens`` (generated tokens, end-of-sequence included),
        ``ttft_ms`` (call to first non-empty piece, ms) and ``finish_reason`` ("length"
        when ``max_new_tokens`` or the context end was reached, else "stop"; left "" when
        the consumer stops early). ``max_new_tokens`` is clamped to [1, context left after
        the prompt].
        Closing or cancelling the iterator stops the generation thread (within one
        decoding step) and waits for it. Raises PermanentError when the prompt does not
        fit the model's context (no truncation: size it with ``count_prompt_tokens``) or
        the messages are malformed; RetryableError for failures during generation.
        """
        import torch

        started = time.perf_counter()
        ids = self._encode(messages)
        stats.prompt_tokens = len(ids)
        room = self._context_tokens - len(ids)
        if room < 1:
            raise PermanentError(
                f"prompt is {len(ids)} tokens; {self.model_id} takes at most {self._context_tokens} "
                f"(prompt + completion)"
            )
        max_new = min(max(1, params.max_new_tokens), room)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        channel = _LoopChannel(loop, stop)
        done: asyncio.Future[None] = loop.create_future()
        kwargs = self._generate_kwargs(torch.tensor([ids]), max_new, params, stop, channel)

        def signal_done() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(**kwargs)
                channel.send(_DONE)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                channel.send(exc)
            finally:
                self._threads.discard(threading.current_thread())
                signal_done()

        thread = threading.Thread(target=run, name=f"eddy-gen-{self.name}-{next(self._seq)}", daemon=True)
        self._threads.add(thread)
        thread.start()
        streamer: _Streamer = kwargs["streamer"]
        try:
            while True:
                item = await channel.queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, ComponentError):
                        raise item
                    raise RetryableError(f"generation failed: {item!r}") from item
                stats.completion_tokens = streamer.generated
                if item:
                    if stats.ttft_ms is None:
                        stats.ttft_ms = (time.perf_counter() - started) * 1000.0
                    yield item
            stats.completion_tokens = streamer.generated
            hit_limit = streamer.generated >= max_new and streamer.last_token not in self._stop_ids
            stats.finish_reason = "length" if hit_limit else "stop"
        finally:
            stop.set()  # no-op when generation already ended
            if not done.done():
                with contextlib.suppress(RuntimeError):  # RuntimeError: finalised with no running loop
                    await asyncio.shield(done)  # the thread ends within one decoding step
            thread.join(timeout=1.0)  # it is past its last statement once `done` is set

    def _generate_kwargs(
        self, input_ids: Any, max_new: int, params: GenerationParams, stop: threading.Event, channel: _LoopChannel
    ) -> dict[str, Any]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        class _StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        processors = LogitsProcessorList()
        if params.temperature > 0:
            seed = params.seed if params.seed is not None else secrets.randbits(63)
            processors.append(_SeededSampler(params.temperature, seed))
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_new,
            "do_sample": False,  # sampling, when asked, is done by _SeededSampler
            "eos_token_id": self._stop_ids,
            "pad_token_id": self._pad_id,
            "logits_processor": processors,
            "stopping_criteria": StoppingCriteriaList([_StopOnEvent()]),
            "streamer": _Streamer(self._decode, channel, stop, prompt_tokens=int(input_ids.shape[-1])),
        }


class _SeededSampler:
    """Logits processor that samples one token per row from its own ``torch.Generator``.

    It returns scores where only the drawn token is finite, so greedy decoding picks it:
    sampling stays reproducible per seed even with other streams running concurrently
    (``torch.multinomial`` on the global RNG would not be).
    """

    def __init__(self, temperature: float, seed: int) -> None:
        import torch

        self.temperature = temperature
        self.rng = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        chosen = torch.multinomial(probs, 1, generator=self.rng)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, 0.0)


class _Streamer:
    """transformers streamer (``put``/``end``) that decodes incrementally in the generation thread.

    Emits a piece as soon as the new tokens decode to complete characters (holding back
    partial UTF-8 sequences), using a sliding prefix window so each step decodes a few
    tokens instead of the whole completion.
    """

    def __init__(self, decode: Any, channel: _LoopChannel, stop: threading.Event, prompt_tokens: int) -> None:
        self.decode = decode
        self.prompt_tokens = prompt_tokens
        self.channel = channel
        self.stop = stop
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] decode to text already sent
        self.read = 0
        self.prompt_seen = False
        self.generated = 0
        self.last_token: int | None = None

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            if value.numel() == self.prompt_tokens:  # generate() first hands over the prompt
                return
        tokens = [int(t) for t in value.reshape(-1).tolist()]
        self.generated += len(tokens)
        self.last_token = tokens[-1]
        self.ids.extend(tokens)
        if self.stop.is_set():
            return
        before = self.decode(self.ids[self.prefix:self.read]) if self.read > self.prefix else ""
        after = self.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.channel.send(after[len(before):])
            self.prefix, self.read = self.read, len(self.ids)

    def end(self) -> None:
        if self.stop.is_set() or self.read >= len(self.ids):
            return
        before = self.decode(self.ids[self.prefix:self.read]) if self.read > self.prefix else ""
        after = self.decode(self.ids[self.prefix:])
        if len(after) > len(before):
            self.channel.send(after[len(before):])
        self.prefix, self.read = self.read, len(self.ids)


# --------------------------------------------------------------------------- fake
class EchoGenerator:
    """Deterministic fake generator for tests: no model, no threads.

    The answer is ``"Answer:"`` followed by the first ``words`` whitespace-separated words
    of the last user message, plus ``" [1]"`` when that message contains ``"[1]"``; it is
    streamed one word per piece (``"Answer:"``, ``" w1"``, ``" w2"``...), sleeping
    ``delay_s`` seconds (asyncio.sleep) before each piece. Stats count words as tokens:
    ``prompt_tokens`` = words of all messages, ``completion_tokens`` = pieces sent,
    ``finish_reason`` = "length" when ``max_new_tokens`` cut the answer short.
    ``context_words`` (optional) emulates a context limit: longer prompts raise
    PermanentError. ``error`` (optional) is raised after ``error_after`` pieces.
    Every call's messages are recorded in ``requests``.
    """

    def __init__(
        self,
        words: int = 12,
        delay_s: float = 0.0,
        context_words: int | None = None,
        error: Exception | None = None,
        error_after: int = 0,
    ) -> None:
        self.model_id = "echo"
        self.words = words
        self.delay_s = delay_s
        self.context_words = context_words
        self.error = error
        self.error_after = error_after
        self.requests: list[list[ChatMessage]] = []
        self.active_streams = 0
        self.started = False

    def start(self) -> None:
        self.started = True

    def answer_pieces(self, messages: Sequence[ChatMessage]) -> list[str]:
        """The full answer ``stream`` would send for ``messages`` (no token limit)."""
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        pieces = ["Answer:"] + [" " + w for w in last_user.split()[: self.words]]
        if "[1]" in last_user:
            pieces.append(" [1]")
        return pieces

    def count_tokens(self, text: str) -> int:
        """Whitespace-separated words of ``text``."""
        return len(text.split())

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, stats: GenerationStats
    ) -> AsyncIterator[str]:
        """Stream the echo answer word by word; see the class docstring. Raises PermanentError
        for no messages or a prompt over ``context_words``, and ``error`` when configured."""
        started = time.perf_counter()
        self.requests.append(list(messages))
        if not messages:
            raise PermanentError("no messages to answer")
        stats.prompt_tokens = sum(len(m.content.split()) for m in messages)
        if self.context_words is not None and stats.prompt_tokens > self.context_words:
            raise PermanentError(f"prompt is {stats.prompt_tokens} words; echo takes at most {self.context_words}")
        pieces = self.answer_pieces(messages)
        limit = max(1, params.max_new_tokens)
        self.active_streams += 1
        try:
            for i, piece in enumerate(pieces[:limit]):
                if self.error is not None and i >= self.error_after:
                    raise self.error
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                stats.completion_tokens = i + 1
                if stats.ttft_ms is None:
                    stats.ttft_ms = (time.perf_counter() - started) * 1000.0
                yield piece
            if self.error is not None and len(pieces[:limit]) <= self.error_after:
                raise self.error
            stats.finish_reason = "length" if len(pieces) > limit else "stop"
        finally:
            self.active_streams -= 1


# --------------------------------------------------------------------------- factory
def build_generator(name: str, cache_dir: Path, *, threads: int | None = None, settings: Any = None) -> Generator:
    """``"echo"`` → :class:`EchoGenerator`; ``"openai"``/``"vllm"`` → :mod:`components.openai_generator` (from
    ``settings``); a key of :data:`GENERATORS` → :class:`TransformersGenerator`. Not started: call ``start()``."""
    if name in ("openai", "vllm"):
        from components.openai_generator import build_remote_generator
        return build_remote_generator(name, settings, cache_dir)
    return EchoGenerator() if name == "echo" else TransformersGenerator(name, cache_dir, threads=threads)
