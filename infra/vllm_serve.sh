#!/usr/bin/env bash
# vLLM's OpenAI-compatible server (`vllm serve`) with LoRA adapters, in an environment of its own.
#
#   infra/vllm_serve.sh MODEL [--name SERVED_NAME] [--lora NAME=PATH]... [--host 127.0.0.1] [--port 8000]
#                       [--max-lora-rank 64] [--install-only] [-- EXTRA_VLLM_SERVE_ARGS...]
#
# MODEL: a model directory (e.g. the converted Qwen of `components.models.materialise`) or a hub id.
# Each --lora adds an adapter served under NAME (vllm serve --enable-lora --lora-modules NAME=PATH); a
# request picks the base model by SERVED_NAME (default: MODEL) or an adapter by its NAME. Point Eddy at it:
#   EDDY_GENERATOR=openai EDDY_GENERATOR_URL=http://HOST:PORT/v1 EDDY_GENERATOR_MODEL=NAME eddy worker
# More adapters can be loaded at run time with POST /v1/load_lora_adapter when the server runs with
# VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.
#
# Why a separate environment and process: pip cannot resolve vllm beside Eddy's pins (vllm 0.33.0 pins
# torch==2.14.0 and, through huggingface-hub>=1.31, click>=8.4.2; Eddy pins torch==2.15.0 and
# faust-streaming 0.15.3 pins click<8.4), and vLLM needs CUDA. So it lives in $VLLM_VENV (default
# .vllm-venv at the repository root, created on first use from infra/vllm-requirements.txt with
# $VLLM_PYTHON, default python3.11; pip's own PIP_INDEX_URL / PIP_FIND_LINKS apply, e.g. a wheelhouse on a
# machine without a registry) and Eddy talks to it over the OpenAI API. `exec`s the server: stop it with
# SIGTERM (or Ctrl-C).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VLLM_VENV="${VLLM_VENV:-$ROOT/.vllm-venv}"
VLLM_PYTHON="${VLLM_PYTHON:-python3.11}"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

MODEL="" NAME="" HOST="127.0.0.1" PORT="8000" RANK="64" INSTALL_ONLY=0
LORAS=() EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --lora) [[ "$2" == *=* ]] || { echo "--lora wants NAME=PATH, got '$2'" >&2; exit 2; }; LORAS+=("$2"); shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --max-lora-rank) RANK="$2"; shift 2 ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) [ -z "$MODEL" ] || { echo "one MODEL only" >&2; usage; }; MODEL="$1"; shift ;;
  esac
done

if [ ! -x "$VLLM_VENV/bin/vllm" ]; then
  echo "[vllm_serve] installing $(grep -v '^#' "$ROOT/infra/vllm-requirements.txt" | xargs) into $VLLM_VENV" >&2
  [ -x "$VLLM_VENV/bin/python" ] || "$VLLM_PYTHON" -m venv "$VLLM_VENV"
  "$VLLM_VENV/bin/pip" install -q --upgrade pip
  "$VLLM_VENV/bin/pip" install -q -r "$ROOT/infra/vllm-requirements.txt"
fi
[ "$INSTALL_ONLY" = 1 ] && exit 0
[ -n "$MODEL" ] || usage

ARGS=(serve "$MODEL" --host "$HOST" --port "$PORT" --served-model-name "${NAME:-$MODEL}")
if [ ${#LORAS[@]} -gt 0 ]; then
  ARGS+=(--enable-lora --max-lora-rank "$RANK" --max-loras "${#LORAS[@]}" --lora-modules "${LORAS[@]}")
fi
echo "[vllm_serve] $VLLM_VENV/bin/vllm ${ARGS[*]} ${EXTRA[*]}" >&2
exec "$VLLM_VENV/bin/vllm" "${ARGS[@]}" "${EXTRA[@]}"
