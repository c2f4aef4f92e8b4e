# keras-serve image. Stages:
#   train  TensorFlow + the `train` extra; bakes the default Iris bundle; can retrain on its own:
#            docker build --target train -t keras-serve-train .
#            docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/artifacts:/app/artifacts" \
#              keras-serve-train python -m training
#   serve  (final) the `serve` extra only: LiteRT runtime, no TensorFlow; serves the baked
#          bundle, or whatever is mounted at /app/artifacts (read-only is fine).
# BASE_IMAGE: the official Python image by default; CI builds on a bare Debian image made with
# debootstrap (.ci/docker-engine.sh), which gets Debian's python3 (3.11 on bookworm) from apt.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Python and the non-root user (uid 10001), shared by every stage.
FROM ${BASE_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && apt-get clean \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ARTIFACTS_DIR=/app/artifacts

# A venv to install into; each stage below adds what it needs.
FROM runtime AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src

# The dependency lists of both stages, read from pyproject.toml. Copied from here by content,
# so an edit elsewhere in pyproject.toml (or README.md) does not reinstall TensorFlow.
FROM build AS requirements
COPY pyproject.toml deploy/docker/requirements.py ./
RUN mkdir /requirements \
    && python requirements.py train > /requirements/train.txt \
    && python requirements.py serve > /requirements/serve.txt

# The project as a wheel, built once for both stages.
FROM build AS wheel
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY training/ training/
COPY service/ service/
COPY keras_serve/ keras_serve/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM build AS train
COPY --from=requirements /requirements/train.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt \
    && pip freeze > /opt/constraints.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
    && rm -rf /wheels \
    && mkdir -p /app/artifacts \
    && chown 10001:10001 /app/artifacts
WORKDIR /app
# Keras and matplotlib want a writable home for caches; the user has none.
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=3
USER 10001:10001
RUN python -m training --quiet
CMD ["python", "-m", "training"]

# The serving venv, built apart so that the final stage gets it as one layer without pip,
# setuptools or numpy's test suite (the serve extra has no scikit-learn or SciPy).
FROM build AS serve-venv
# Same versions as the stage that trained the baked bundle (numpy, joblib, LiteRT, ...).
COPY --from=train /opt/constraints.txt /tmp/constraints.txt
COPY --from=requirements /requirements/serve.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt -c /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)" \
    && python -m pip uninstall --yes pip setuptools \
    && site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && rm -rf "$site"/numpy/tests "$site"/numpy/*/tests

FROM runtime AS serve
COPY --from=serve-venv /opt/venv /opt/venv
# Owned by root: the service only reads bundles. A volume mounted at /app/artifacts replaces it.
COPY --from=train /app/artifacts /app/artifacts
WORKDIR /app
# SHUTDOWN_TIMEOUT_SECONDS stays under `docker stop`'s default 10 s grace period.
ENV HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_RUNTIME=litert \
    SHUTDOWN_TIMEOUT_SECONDS=8
USER 10001:10001
EXPOSE 8000 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
# Exec form: python is PID 1 and gets SIGTERM itself; uvicorn drains in-flight requests.
CMD ["python", "-m", "service"]
