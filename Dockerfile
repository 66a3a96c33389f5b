# Auth gateway image: slim Python, non-root, config at /etc/gateway/gateway.yaml.
#   docker build -t auth-gateway .
#   docker run -p 8080:8080 -e GATEWAY_JWT_SECRET=$(openssl rand -hex 32) auth-gateway
FROM python:3.11-slim AS build
# A C compiler for the hot path, compiled with mypyc (GATEWAY_NATIVE=1, see gateway/native.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY config ./config
COPY auth ./auth
COPY gateway ./gateway
RUN GATEWAY_NATIVE=1 pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /var/lib/gateway --create-home gateway \
    && mkdir -p /etc/gateway
COPY gateway.yaml /etc/gateway/gateway.yaml
USER gateway
# The embedded SQLite database (and its generated JWT secret) live here: mount a volume.
WORKDIR /var/lib/gateway
VOLUME ["/var/lib/gateway"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
CMD ["gateway", "serve", "--config", "/etc/gateway/gateway.yaml"]
