# syntax=docker/dockerfile:1
# FaceVal image: the gateway and the five stage workers (the same image; the command picks
# the process). Multi-stage: pip and the build run in the build stages; the runtime runs as
# a non-root user with the model files already inside, verified against
# models/manifest.toml, so nothing is downloaded at run time. Only the `wheels` stage has a
# compiler (for source-only packages); no image that ships does.
#
#   docker build -t faceval .                   # gateway + workers (default target)
#   docker build -t faceval-etl --target etl .  # the nightly analytics ETL (CronJob)
#   make image                                  # daemonless: buildah, then the entry points
#
# Dependencies come from requirements/image*.txt (scripts/lock_image.py): pinned, hashed,
# installed with --no-deps, so the image holds exactly one OpenCV (headless) and no package
# that compiles. Built for linux/amd64 (the hashes are of those wheels).
#
# PYTHON_IMAGE: any Debian bookworm image with Python 3.11 and `python` on PATH
# (python:3.11-slim-bookworm, or the one scripts/build-image.sh makes with mmdebstrap).
# Models come from installed packages (offline). Entries whose source is a URL are fetched
# only when asked: --build-arg FACEVAL_MODELS_PULL_ARGS=--download.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- base: what every final image shares --------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# libgomp1: OpenMP runtime for onnxruntime and OpenCV. tini-like reaping is left to the
# orchestrator (compose `init: true`, Kubernetes' pause container).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 faceval \
    && useradd --system --uid 10001 --gid faceval --home-dir /home/faceval --create-home \
       --shell /usr/sbin/nologin faceval

# --- wheels: the only stage with a compiler ------------------------------------------------
# Packages published only as source (requirements/image-sdist.txt, hash-checked) become
# wheels here; the build stage installs those wheels, and no image that ships has g++.
FROM base AS wheels
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && if ! python -c "import os, sysconfig; raise SystemExit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))"; then \
         apt-get install -y --no-install-recommends python3-dev; \
       fi \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/image-sdist.txt /tmp/image-sdist.txt
# A venv: a Debian base has no pip of its own.
RUN mkdir -p /wheels \
    && if grep -q '^[a-z]' /tmp/image-sdist.txt; then \
         python -m venv /tmp/wheel-env \
         && /tmp/wheel-env/bin/pip wheel --no-deps --require-hashes --wheel-dir /wheels \
              -r /tmp/image-sdist.txt; \
       fi

# --- build: the virtualenv and the verified model files -------------------------------------
FROM base AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The locked set first (its layer survives source edits), then FaceVal alone, then proof
# that the set is whole: every installed package's requirements met except the two left
# out on purpose, and cv2 provided by opencv-python-headless only.
COPY requirements/image.txt requirements/image.txt
RUN pip install --no-deps --require-hashes -r requirements/image.txt
COPY --from=wheels /wheels /wheels
RUN if ls /wheels/*.whl >/dev/null 2>&1; then pip install --no-deps /wheels/*.whl; fi
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY gateway ./gateway
COPY services ./services
COPY etl ./etl
COPY cli ./cli
COPY client ./client
COPY tools ./tools
COPY scripts/check_image_deps.py /usr/local/lib/faceval/check_image_deps.py
# No extras: the dev tools and the embedded (GPL) MongoDB-wire server never ship.
RUN pip install --no-deps . && python /usr/local/lib/faceval/check_image_deps.py
# The manifest, the project's own small weights (models/bundled, the only other files
# .dockerignore lets through) and the upstream files `convert` entries are made from
# (model-sources/: scripts/build-image.sh stages them; they stay in this build stage, only
# the converted files reach the runtime image).
COPY models /src/models
COPY model-sources /tmp/model-sources
COPY models/manifest.toml /opt/faceval/models/manifest.toml
ENV FACEVAL_MODEL_DIR=/opt/faceval/models \
    FACEVAL_MODEL_SOURCE_DIR=/tmp/model-sources
# The registry finds bundled files beside the code's own manifest: in an installed package
# that is site-packages/models.
RUN if [ -d /src/models/bundled ]; then \
      site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
      && mkdir -p "$site/models" && cp -rv /src/models/bundled "$site/models/"; \
    fi
ARG FACEVAL_MODELS_PULL_ARGS=""
RUN faceval models pull ${FACEVAL_MODELS_PULL_ARGS} && faceval models list

# --- build-etl: the same, plus the analytics ETL's libraries --------------------------------
FROM build AS build-etl
COPY requirements/image-etl.txt requirements/image-etl.txt
RUN pip install --no-deps --require-hashes -r requirements/image-etl.txt \
    && python /usr/local/lib/faceval/check_image_deps.py etl

# --- etl: `faceval etl run --out DIR` for the nightly CronJob --------------------------------
FROM base AS etl
COPY --from=build-etl /opt/venv /opt/venv
# The output volume's mount point, owned by the runtime user (a new named volume copies it).
RUN mkdir -p /data && chown faceval:faceval /data
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/faceval \
    FACEVAL_EMBEDDED_MONGO=false \
    FACEVAL_STATE_DIR=/tmp/faceval
WORKDIR /home/faceval
USER 10001:10001
ENTRYPOINT ["faceval"]
CMD ["etl", "run", "--out", "/tmp/faceval/etl"]

# --- runtime: gateway and workers (the default target) ---------------------------------------
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/faceval/models /opt/faceval/models
# One thread per native pool (OMP/BLAS/OpenCV): scale with replicas instead; per-core pools
# oversubscribe and spin (docs/benchmarks.md). A deployment can still override them.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/faceval \
    FACEVAL_MODEL_DIR=/opt/faceval/models \
    FACEVAL_HOST=0.0.0.0 \
    FACEVAL_PORT=8000 \
    FACEVAL_EMBEDDED_MONGO=false \
    FACEVAL_STATE_DIR=/tmp/faceval \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENCV_FOR_THREADS_NUM=1
WORKDIR /home/faceval
USER 10001:10001
# 8000: the gateway's API and /metrics. 9100: a worker's /metrics (FACEVAL_METRICS_PORT).
EXPOSE 8000 9100
# The gateway's liveness. Worker services override it with a check of their metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FACEVAL_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["faceval"]
CMD ["gateway"]
