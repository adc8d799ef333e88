# syntax=docker/dockerfile:1
# Multi-stage build: wheels are built with a compiler in the first stage, the runtime
# stage has only the virtualenv and runs as an unprivileged user.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/hitl-gateway \
    && /opt/hitl-gateway/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/hitl-gateway/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=build /opt/hitl-gateway /opt/hitl-gateway
COPY config /etc/hitl-gateway
ENV PATH=/opt/hitl-gateway/bin:$PATH \
    GATEWAY_CONFIG=/etc/hitl-gateway/gateway.yaml \
    GATEWAY_HTTP_HOST=0.0.0.0 \
    GATEWAY_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["hitl-gateway"]
CMD ["serve"]
