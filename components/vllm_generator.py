"""Generator on an in-process vLLM engine (``AsyncLLMEngine``), LoRA adapter per request (``LoRARequest``).

vLLM is imported by :meth:`VLLMGenerator.start` only, so this module imports anywhere. It needs
CUDA, and pip cannot install vllm beside Eddy's pins (checked with vllm 0.33.0: it needs
huggingface-hub>=1.31, which needs click>=8.4.2, while faust-streaming 0.15.3 pins click<8.4; and it
pins torch==2.14.0 plus torchvision/torchaudio, Eddy torch==2.15.0). So there is no ``eddy[gpu]``
extra that could resolve, and the supported production path is vLLM in an environment and process of
its own — ``infra/vllm_serve.sh`` installs ``infra/vllm-requirements.txt`` into ``.vllm-venv`` and runs
``vllm serve --enable-lora`` — with Eddy's ``openai`` generator talking to it over the OpenAI API
(:mod:`components.openai_generator`). This class is for an environment built around vLLM's own pins
with Eddy added without its dependencies (``pip install --no-deps -e .``): one process, no HTTP hop.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from components.base import ChatMessage, GenerationParams, GenerationStats, PermanentError, RetryableError

log = logging.getLogger(__name__)

VLLM_MISSING = (
    "the 'vllm' generator needs the vllm package and an NVIDIA GPU with CUDA, and pip cannot install vllm beside "
    "Eddy's pins: run infra/vllm_serve.sh (vLLM in its own environment) and set generator='openai' with "
    "generator_url pointing at it, or install Eddy with --no-deps into vLLM's environment"
)


class VLLMGenerator:
    """A chat model served by vLLM inside the worker process.

    ``model`` is a model directory or hub id; ``lora`` an adapter ``NAME=PATH`` applied to every
    request (``LoRARequest``; the engine is started with ``enable_lora``, rank up to ``max_lora_rank``).
    ``engine_args`` go to ``AsyncEngineArgs`` (e.g. ``gpu_memory_utilization``, ``max_model_len``).
    """

    def __init__(self, model: str, *, lora: str | None = None, max_lora_rank: int = 64,
                 engine_args: dict[str, Any] | None = None) -> None:
        self.model = model
        self.lora_name, self.lora_path = _split_lora(lora) if lora else (None, None)
        self.model_id = f"{model}+{self.lora_name}" if self.lora_name else model
        self.provider = "vllm"
        self.max_lora_rank = max_lora_rank
        self.engine_args = dict(engine_args or {})
        self._engine: Any = None
        self._tokenizer: Any = None
        self._lora_request: Any = None

    def start(self) -> None:
        """Import vllm and build the engine (loads the weights on the GPU: tens of seconds).

        Raises PermanentError naming the fix when vllm (or CUDA) is missing.
        """
        if self._engine is not None:
            return
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as exc:
            raise PermanentError(f"{VLLM_MISSING} ({exc})") from exc
        from transformers import AutoTokenizer

        started = time.monotonic()
        args = vllm.AsyncEngineArgs(model=self.model, enable_lora=self.lora_name is not None,
                                    max_lora_rank=self.max_lora_rank, **self.engine_args)
        self._engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        if self.lora_name:
            self._lora_request = LoRARequest(self.lora_name, 1, self.lora_path)
        log.info("vLLM engine for %s ready in %.1f s", self.model_id, time.monotonic() - started)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, stats: GenerationStats
    ) -> AsyncIterator[str]:
        """Stream the completion (delta outputs) with the adapter, if any; fills ``stats`` from the
        engine's token ids. Closing or cancelling the iterator aborts the request in the engine.
        PermanentError for a prompt the engine refuses (too long), RetryableError for engine failures."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if self._engine is None:
            raise RuntimeError("VLLMGenerator used before start()")
        if not messages:
            raise PermanentError("no messages to answer")
        started = time.perf_counter()
        prompt = self._tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                                     tokenize=False, add_generation_prompt=True)
        sampling = SamplingParams(max_tokens=max(1, params.max_new_tokens), temperature=params.temperature,
                                  seed=params.seed, output_kind=RequestOutputKind.DELTA)
        request_id = f"eddy-{uuid.uuid4().hex}"
        finished = False
        try:
            async for output in self._engine.generate(prompt, sampling, request_id,
                                                      lora_request=self._lora_request):
                if output.prompt_token_ids:
                    stats.prompt_tokens = len(output.prompt_token_ids)
                completion = output.outputs[0]
                stats.completion_tokens += len(completion.token_ids)
                if output.finished:
                    finished = True
                    stats.finish_reason = completion.finish_reason or "stop"
                if completion.text:
                    if stats.ttft_ms is None:
                        stats.ttft_ms = (time.perf_counter() - started) * 1000.0
                    yield completion.text
        except ValueError as exc:  # vLLM's verdict on the input: prompt too long, bad parameters
            raise PermanentError(f"vLLM refused the request: {exc}") from exc
        except (RuntimeError, OSError) as exc:
            raise RetryableError(f"vLLM engine failed: {exc!r}") from exc
        finally:
            if not finished:
                await self._engine.abort(request_id)


def _split_lora(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise PermanentError(f"generator_lora {spec!r} is not NAME=PATH")
    return name, path
