# cookieguard as a sidecar container.
#   build:  docker build -t cookieguard .
#   run:    docker run -p 8080:8080 -v $PWD/my.yaml:/etc/cookieguard/cookieguard.yaml:ro \
#             -e COGNITO_CLIENT_SECRET -e COOKIEGUARD_STORE_KEY cookieguard
# No secret is baked in: the config reads them from the environment (${VAR}).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
WORKDIR /src
# Installed from the build context (this checkout), never from PyPI by name.
COPY pyproject.toml README.md ./
COPY cookieguard ./cookieguard
RUN /opt/venv/bin/python -m pip install ".[speed]" \
    && /opt/venv/bin/cookieguard --version

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COOKIEGUARD_CONFIG=/etc/cookieguard/cookieguard.yaml
RUN groupadd --system --gid 10001 cookieguard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin cookieguard
COPY --from=build /opt/venv /opt/venv
COPY deploy/cookieguard.default.yaml /etc/cookieguard/cookieguard.yaml
RUN cookieguard check > /dev/null
USER 10001:10001
EXPOSE 8080
# python, not curl: the slim image has no curl. Any error (refused, non-2xx, timeout) exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/.cookieguard/healthz', timeout=4)"]
# Exec form: cookieguard is PID 1 and receives SIGTERM itself, then drains in-flight requests.
ENTRYPOINT ["cookieguard"]
CMD ["run"]
