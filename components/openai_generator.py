"""Generator over any OpenAI-compatible chat-completions server: vLLM's ``vllm serve`` in production.

:class:`OpenAIChatGenerator` streams ``POST {base_url}/chat/completions`` with the ``openai`` client
(it parses the server-sent events). One model or LoRA adapter name goes with every request: vLLM
serves each adapter of ``--lora-modules`` under its own name, so ``generator_model`` picks it.

Failures, as the Generator Protocol wants them: a server that cannot be reached (refused,
unreachable, connect timeout) is tried again ``retries`` times after jittered exponential backoff,
then RetryableError; nothing else is retried (a request the server may have started is never
sent twice). 4xx answers (context too long, unknown model, bad key) raise PermanentError; 408,
409, 429 and 5xx, a read timeout or a stream cut short raise RetryableError. The answerer turns
either into the query's ``error`` answer event.

:func:`build_remote_generator` maps the ``openai`` and ``vllm`` settings to a backend; it is called
by :func:`components.generation.build_generator`, the one place that maps ``generator`` to a backend.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.base import (
    ChatMessage,
    GenerationParams,
    GenerationStats,
    Generator,
    PermanentError,
    RetryableError,
    check_messages,
)
from config.settings import Settings

log = logging.getLogger(__name__)

#: Statuses worth another try later (the answer is an error now either way: nothing is resent here).
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
#: A placeholder key: the client wants one, and a server started without --api-key ignores it.
_NO_KEY = "EMPTY"


@dataclass
class _Session:
    """The HTTP client and the in-flight bound of one event loop (both belong to the loop that made them)."""

    loop: asyncio.AbstractEventLoop
    client: Any  # openai.AsyncOpenAI
    slots: asyncio.Semaphore


class OpenAIChatGenerator:
    """Streams chat completions from an OpenAI-compatible server.

    ``base_url`` ends in ``/v1``; ``model`` is sent with every request (a served model or LoRA
    adapter name) and is this generator's ``model_id``. ``timeout_s`` bounds the wait for the
    response and then for each streamed piece (connecting: at most ``connect_timeout_s``);
    ``retries`` new attempts follow connection failures, after ``backoff_s * 2**attempt`` seconds
    times a random factor in [0.5, 1). At most ``max_in_flight`` requests stream at once (per
    event loop); more wait for a slot. ``tokenizer`` (a packaged generator name of
    :data:`components.models.GENERATORS`, materialised under ``cache_dir``, or a local tokenizer
    directory, or a loaded tokenizer) counts tokens when the server sends no usage (``stream_options.include_usage``
    is asked for, and ignored by some servers); without one, streamed pieces are counted and the
    prompt counts 0. ``transport`` (an ``httpx2`` transport) replaces the network in tests.
    """

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 0.2, max_in_flight: int = 64,
        tokenizer: Any = None, cache_dir: Path | None = None, transport: Any = None,
    ) -> None:
        if not model:
            raise PermanentError("the 'openai' generator needs a model (or LoRA adapter) name: set generator_model")
        if not base_url.startswith(("http://", "https://")):
            raise PermanentError(f"generator_url {base_url!r} is not an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.provider = "openai"
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_in_flight = max_in_flight
        self.tokenizer_name = tokenizer if isinstance(tokenizer, str) or tokenizer is None else type(tokenizer).__name__
        self.cache_dir = cache_dir
        self._api_key = api_key or _NO_KEY
        self._transport = transport
        self._session_state: _Session | None = None
        self._tokenizer: Any = None if isinstance(tokenizer, str) else tokenizer
        self._tok_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.active_streams = 0
        self.connect_retries_total = 0  # attempts repeated after a connection failure (for tests and metrics)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Check the client library and load the counting tokenizer, when one is set (seconds).

        The server is not contacted: it may come up after the worker. Raises PermanentError when
        ``openai`` is not installed or the tokenizer cannot be found.
        """
        try:
            import openai  # noqa: F401
        except ImportError as exc:  # pragma: no cover - a dependency of eddy
            raise PermanentError("the 'openai' generator needs the openai package (pip install openai)") from exc
        if self.tokenizer_name and self._tokenizer is None:
            self._tokenizer = _load_tokenizer(self.tokenizer_name, self.cache_dir)
        log.info("generator: %s at %s (timeout %.0f s, %d in flight, tokenizer %s)", self.model_id, self.base_url,
                 self.timeout_s, self.max_in_flight, self.tokenizer_name or "none: pieces counted")

    async def aclose(self) -> None:
        """Close the HTTP connections of the current event loop's client."""
        session, self._session_state = self._session_state, None
        if session is not None and session.loop is asyncio.get_running_loop():
            await session.client.close()

    def _session(self) -> _Session:
        loop = asyncio.get_running_loop()
        session = self._session_state
        if session is None or session.loop is not loop:
            import httpx2
            import openai

            http_client = httpx2.AsyncClient(transport=self._transport) if self._transport is not None else None
            client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, max_retries=0, http_client=http_client,
                timeout=httpx2.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            )
            session = self._session_state = _Session(loop, client, asyncio.Semaphore(self.max_in_flight))
        return session

    # ------------------------------------------------------------------ streaming
    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, stats: GenerationStats
    ) -> AsyncIterator[str]:
        """Stream the completion of ``messages`` as text pieces (async generator).

        Fills ``stats``: ``prompt_tokens`` and ``completion_tokens`` from the server's usage (else
        counted, see the class), ``ttft_ms`` (call to first non-empty piece, waiting for a slot
        included) and ``finish_reason`` as the server gives it ("stop", "length"; left "" when
        the consumer stops early). Greedy when ``params.temperature == 0``; ``params.seed`` is
        passed on. Closing or cancelling the iterator closes the HTTP stream at once (vLLM then
        aborts the request). Raises PermanentError / RetryableError as the module says.
        """
        import openai

        started = time.perf_counter()
        request = self._request(messages, params)
        session = self._session()
        async with session.slots:
            self.active_streams += 1
            try:
                response = await self._open(session.client, request)
                pieces: list[str] = []
                usage: Any = None
                finish = ""
                try:
                    async for chunk in response:
                        if getattr(chunk, "usage", None) is not None:
                            usage = chunk.usage
                        for choice in chunk.choices[:1]:
                            finish = choice.finish_reason or finish
                            piece = choice.delta.content if choice.delta is not None else None
                            if piece:
                                if stats.ttft_ms is None:
                                    stats.ttft_ms = (time.perf_counter() - started) * 1000.0
                                pieces.append(piece)
                                stats.completion_tokens = len(pieces)
                                yield piece
                except openai.APITimeoutError as exc:
                    raise RetryableError(f"{self.base_url} sent nothing for {self.timeout_s:g} s mid-stream "
                                         "(generator_timeout_s)") from exc
                except openai.APIConnectionError as exc:
                    raise RetryableError(f"connection to {self.base_url} lost mid-stream: {_cause(exc)}") from exc
                except openai.APIError as exc:
                    raise RetryableError(f"{self.base_url} failed mid-stream: {exc.message}") from exc
                finally:
                    await response.close()
            finally:
                self.active_streams -= 1
        if not finish:
            raise RetryableError(f"{self.base_url} ended the stream without a finish reason")
        stats.finish_reason = finish
        if usage is not None and usage.completion_tokens is not None:
            stats.prompt_tokens = int(usage.prompt_tokens or 0)
            stats.completion_tokens = int(usage.completion_tokens)
        elif self._tokenizer is not None:
            stats.prompt_tokens, stats.completion_tokens = await asyncio.to_thread(
                self._count, request["messages"], "".join(pieces))

    def _request(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        check_messages(messages)
        request: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max(1, params.max_new_tokens),
            "temperature": params.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            request["seed"] = params.seed
        return request

    async def _open(self, client: Any, request: dict[str, Any]) -> Any:
        """Send the request; the stream once the server answered 200. Retries connection failures only."""
        import httpx2
        import openai

        for attempt in itertools.count():
            try:
                return await client.chat.completions.create(**request)
            except openai.APIStatusError as exc:
                raise _status_error(exc, self.base_url, self.model_id) from exc
            except openai.APIConnectionError as exc:  # APITimeoutError included
                never_connected = isinstance(exc.__cause__, (httpx2.ConnectError, httpx2.ConnectTimeout))
                if not never_connected:
                    if isinstance(exc, openai.APITimeoutError):
                        raise RetryableError(f"{self.base_url} did not answer within {self.timeout_s:g} s "
                                             "(generator_timeout_s)") from exc
                    raise RetryableError(f"connection to {self.base_url} failed: {_cause(exc)}") from exc
                if attempt >= self.retries:
                    raise RetryableError(f"cannot reach the generator server at {self.base_url} after "
                                         f"{attempt + 1} attempts: {_cause(exc)}") from exc
                delay = self.backoff_s * 2**attempt * random.uniform(0.5, 1.0)
                log.warning("generator server %s unreachable (%s); attempt %d in %.2f s", self.base_url,
                            _cause(exc), attempt + 2, delay)
                self.connect_retries_total += 1
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the counting tokenizer (whitespace words without one)."""
        if self._tokenizer is None:
            return len(text.split())
        with self._tok_lock:
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _count(self, conversation: list[dict[str, str]], completion: str) -> tuple[int, int]:
        with self._tok_lock:
            try:
                ids = self._tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
            except Exception:  # a template the tokenizer cannot apply: count the texts
                ids = self._tokenizer.encode("\n".join(m["content"] for m in conversation))
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return len(ids), len(self._tokenizer.encode(completion, add_special_tokens=False))


def _status_error(exc: Any, base_url: str, model: str) -> Exception:
    status = exc.status_code
    detail = f"{base_url} answered {status}: {exc.message}"
    if status in _RETRYABLE_STATUS or status >= 500:
        return RetryableError(detail)
    if status in (401, 403):
        return PermanentError(f"{detail} (check generator_api_key)")
    if status == 404:
        return PermanentError(f"{detail} (is {model!r} served there? check generator_url and generator_model)")
    return PermanentError(detail)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)


def _load_tokenizer(name: str, cache_dir: Path | None) -> Any:
    from components.models import GENERATORS, materialise

    if name in GENERATORS:
        if cache_dir is None:
            raise PermanentError(f"tokenizer {name!r} is a packaged model: a cache directory is needed")
        path = materialise(name, cache_dir)
    elif Path(name).is_dir():
        path = Path(name)
    else:
        raise PermanentError(f"generator_tokenizer {name!r} is neither a packaged generator "
                             f"({', '.join(sorted(GENERATORS))}) nor a local tokenizer directory")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def build_remote_generator(name: str, settings: Settings, cache_dir: Path) -> Generator:
    """``"openai"`` → :class:`OpenAIChatGenerator` from the ``generator_*`` settings; ``"vllm"`` →
    :class:`components.vllm_generator.VLLMGenerator` (vllm itself is imported by its ``start()``).
    Not started. Raises PermanentError for a missing ``generator_model`` or another name."""
    if name == "openai":
        key = settings.generator_api_key.get_secret_value() if settings.generator_api_key else None
        return OpenAIChatGenerator(
            settings.generator_url, settings.generator_model or "", api_key=key,
            timeout_s=settings.generator_timeout_s, retries=settings.generator_connect_retries,
            max_in_flight=settings.generator_max_in_flight, tokenizer=settings.generator_tokenizer,
            cache_dir=cache_dir,
        )
    if name == "vllm":
        from components.vllm_generator import VLLMGenerator

        if not settings.generator_model:
            raise PermanentError("the 'vllm' generator needs generator_model (a model directory or id)")
        return VLLMGenerator(settings.generator_model, lora=settings.generator_lora)
    raise PermanentError(f"unknown remote generator {name!r}; known: openai, vllm")
