# leadflow: one image for every process. `docker run IMAGE ingest|scoring|pipeline|topics`.
#
#   docker build -t leadflow .
#   docker run --rm -e LEADFLOW_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 -p 127.0.0.1:8001:8001 \
#       -e LEADFLOW_API_KEYS="$(cat api-keys)" leadflow ingest   # lines of `leadflow keys create`
#
# The builder installs the package (not editable) into a virtualenv; the runtime stage
# gets only that virtualenv, so the code ships inside its site-packages with its
# package data (scoring model, alembic.ini, migrations).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the wheel is built from (README.md is the package's readme).
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# pip and setuptools are only needed to build: the runtime venv goes without them.
RUN pip install . \
    && pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 leadflow \
    && useradd --system --uid 10001 --gid leadflow --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin leadflow
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LEADFLOW_HOST=0.0.0.0
WORKDIR /app
USER 10001:10001
# ingest, scoring, pipeline (each service's default LEADFLOW_PORT)
EXPOSE 8001 8002 8003 8004
# No HEALTHCHECK: the port depends on the service; compose and Kubernetes probe
# /healthz and /readyz themselves.
ENTRYPOINT ["leadflow"]
CMD ["--help"]
