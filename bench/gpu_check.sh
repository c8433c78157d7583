#!/usr/bin/env bash
# GPU check, unattended, under 10 minutes, on a machine with an NVIDIA GPU and a package registry:
#   1. Eddy's .venv (make's install step; nothing to do when installed)
#   2. vLLM in its own environment (.vllm-venv, infra/vllm-requirements.txt), installed in the background
#   3. the packaged Qwen2.5-Coder-0.5B converted to a HF directory, and a rank-8 LoRA adapter for it
#      (random A, zero B: the LoRA kernels run, the answers stay the base model's)
#   4. `vllm serve` with the adapter (infra/vllm_serve.sh), requests naming the adapter
#   5. bench.gpu_throughput: the FAQ query path through Kafka with generator="openai" against it, and the
#      same prompts straight to vLLM; prints throughput through Eddy ÷ raw vLLM (target >= 0.9) and TTFT p50/p99
#
#   bash bench/gpu_check.sh            # figures at the end, all logs under .eddy/gpu-check/
#
# Environment: GPU_CHECK_QUERIES (128), GPU_CHECK_CONCURRENCY (32), GPU_CHECK_MAX_TOKENS (128),
# GPU_CHECK_PORT (18600), GPU_CHECK_TIMEOUT_S (590: the whole check); pip's PIP_INDEX_URL / PIP_FIND_LINKS (a wheelhouse where no registry is reachable).
# GPU_CHECK_SERVER=transformers: a CPU smoke run of this same script without a GPU (`transformers serve`,
# SmolLM2-135M, no adapter; use small GPU_CHECK_* figures): checks the plumbing, not vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
LIMIT="${GPU_CHECK_TIMEOUT_S:-590}"
if [ -z "${GPU_CHECK_INNER:-}" ]; then  # one guard over everything: the check never runs past 10 minutes
  GPU_CHECK_INNER=1 exec timeout -k 10 "$LIMIT" bash "$0" "$@"
fi

SERVER="${GPU_CHECK_SERVER:-vllm}"
PORT="${GPU_CHECK_PORT:-18600}"
QUERIES="${GPU_CHECK_QUERIES:-128}"
CONCURRENCY="${GPU_CHECK_CONCURRENCY:-32}"
MAX_TOKENS="${GPU_CHECK_MAX_TOKENS:-128}"
HOME_DIR="${EDDY_HOME:-$ROOT/.eddy}"  # Eddy's state dir (the settings' home)
WORK="$HOME_DIR/gpu-check"
PY="$ROOT/.venv/bin/python"
T0=$SECONDS
step() { printf '[gpu_check %3ds] %s\n' $((SECONDS - T0)) "$*"; }
die() { step "FAILED: $*"; exit 1; }
mkdir -p "$WORK"
# faust's local state of the bench worker: faust creates this folder but not its parents, and a bench
# home is new each run (the worker inherits the variable)
export APP_DATADIR="${APP_DATADIR:-$WORK/faust-data}"
rm -f "$WORK"/*.log "$WORK/install.rc"
touch "$WORK/started"

SERVER_PID="" INSTALL_PID="" STACK_WAS_UP=0
(exec 3<>"/dev/tcp/127.0.0.1/${EDDY_KAFKA_PORT:-19092}") 2>/dev/null && STACK_WAS_UP=1
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  [ -z "$INSTALL_PID" ] || kill -TERM -- "-$INSTALL_PID" 2>/dev/null || true
  # a bench stopped by its timeout leaves its worker (own session, pid file in the bench's home)
  find "$HOME_DIR/bench" -path '*/gpu-*/run/*.pid' -newer "$WORK/started" 2>/dev/null | while read -r pid_file; do
    kill -TERM "$(cat "$pid_file")" 2>/dev/null || true
  done
  [ "$STACK_WAS_UP" = 1 ] || timeout 60 "$PY" -m eddy down >/dev/null 2>&1 || true
}
trap cleanup EXIT

case "$SERVER" in
  vllm)
    command -v nvidia-smi >/dev/null && nvidia-smi -L || die "no NVIDIA GPU (nvidia-smi); GPU_CHECK_SERVER=transformers runs the CPU smoke check"
    step "installing vLLM into .vllm-venv in the background (log $WORK/install.log)"
    setsid bash -c 'timeout 400 infra/vllm_serve.sh --install-only >"$1/install.log" 2>&1; echo $? >"$1/install.rc"' \
      _ "$WORK" &
    INSTALL_PID=$!
    MODEL_KEY="qwen2.5-coder-0.5b" ;;
  transformers) MODEL_KEY="smollm2-135m" ;;
  *) die "GPU_CHECK_SERVER is vllm or transformers, not '$SERVER'" ;;
esac

step "Eddy's environment (.venv)"
if ! { [ -x "$PY" ] && "$PY" -c "import openai, eddy" 2>/dev/null; }; then
  timeout 420 make -s .venv/.eddy-installed >"$WORK/make.log" 2>&1 || die "make .venv/.eddy-installed (see $WORK/make.log)"
fi

step "converting the packaged $MODEL_KEY (first run only)"
MODEL_DIR="$(timeout 300 "$PY" -c "
import sys; from pathlib import Path; from components.models import materialise
print(materialise(sys.argv[1], Path(sys.argv[2])))" "$MODEL_KEY" "$HOME_DIR/models" 2>"$WORK/convert.log")" \
  && [ -d "$MODEL_DIR" ] || die "model conversion (see $WORK/convert.log)"

if [ "$SERVER" = vllm ]; then
  step "LoRA adapter (rank 8, q_proj/v_proj) for $MODEL_DIR"
  timeout 120 "$PY" - "$MODEL_DIR" "$WORK/adapter" <<'PYEOF' || die "adapter"
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
model, out = Path(sys.argv[1]), Path(sys.argv[2])
cfg = json.loads((model / "config.json").read_text())
hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
head_dim = cfg.get("head_dim") or hidden // heads
outs = {"q_proj": heads * head_dim, "v_proj": cfg.get("num_key_value_heads", heads) * head_dim}
r, g = 8, torch.Generator().manual_seed(0)
tensors = {}
for i in range(cfg["num_hidden_layers"]):
    for name, width in outs.items():
        key = f"base_model.model.model.layers.{i}.self_attn.{name}"
        tensors[f"{key}.lora_A.weight"] = (torch.randn(r, hidden, generator=g) / hidden**0.5).to(torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = torch.zeros(width, r, dtype=torch.bfloat16)
out.mkdir(parents=True, exist_ok=True)
save_file(tensors, str(out / "adapter_model.safetensors"))
(out / "adapter_config.json").write_text(json.dumps({
    "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model), "r": r,
    "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": sorted(outs), "bias": "none",
    "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False, "use_dora": False}))
print(f"{len(tensors)} tensors in {out}")
PYEOF
  step "waiting for the vLLM install"
  wait "$INSTALL_PID" || true
  INSTALL_PID=""
  [ "$(cat "$WORK/install.rc" 2>/dev/null)" = 0 ] || { tail -20 "$WORK/install.log"; die "vLLM install (see $WORK/install.log)"; }
  GEN_MODEL="eddy-faq"
  step "starting vllm serve on 127.0.0.1:$PORT (log $WORK/server.log)"
  setsid infra/vllm_serve.sh "$MODEL_DIR" --name qwen-base --lora "$GEN_MODEL=$WORK/adapter" --max-lora-rank 8 \
    --port "$PORT" >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
else
  GEN_MODEL="$MODEL_DIR"
  mkdir -p "$WORK/hf/hub"  # transformers serve answers 500 on /v1/models without the HF cache dir
  step "starting transformers serve on 127.0.0.1:$PORT (CPU smoke run; log $WORK/server.log)"
  HF_HOME="$WORK/hf" HF_HUB_OFFLINE=1 HF_HUB_DISABLE_UPDATE_CHECK=1 setsid "$ROOT/.venv/bin/transformers" serve \
    "$MODEL_DIR" --host 127.0.0.1 --port "$PORT" --device cpu --dtype bfloat16 >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
fi

step "query path through Kafka vs raw server ($QUERIES questions, concurrency $CONCURRENCY, max_tokens $MAX_TOKENS)"
# the stack starts, the FAQ is indexed while the server loads; the bench waits for the server after that
if ! timeout $((LIMIT - SECONDS - 20)) "$PY" -m bench.gpu_throughput --generator-url "http://127.0.0.1:$PORT/v1" \
    --generator-model "$GEN_MODEL" --queries "$QUERIES" --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" \
    --server-wait-s 300 2>"$WORK/bench.log" | tee "$WORK/figures.txt"; then
  tail -30 "$WORK/bench.log"; echo "--- server log"; tail -30 "$WORK/server.log"
  die "benchmark (see $WORK/bench.log, $WORK/server.log)"
fi
step "done; figures in $WORK/figures.txt"
