# cookieguard as a sidecar container.
#   build:  docker build -t cookieguard .
#   run:    docker run -p 8080:8080 -v $PWD/my.yaml:/etc/cookieguard/cookieguard.yaml:ro \
#             -e COGNITO_CLIENT_SECRET -e COOKIEGUARD_STORE_KEY cookieguard
# No secret is baked in: the config reads them from the environment (${VAR}).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# binutils only for `strip`, in this stage only (unpinned: a pinned Debian version stops building
# at the next point release, and nothing of it reaches the final image).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
# Installed from the build context (this checkout), never from PyPI by name.
COPY pyproject.toml README.md ./
COPY cookieguard ./cookieguard
# Then the venv is made runtime-only (docs/operations.md, "Docker": what the image weighs and why):
# - pip and setuptools leave it: nothing installs anything at run time;
# - the wheels' C extensions lose their debug symbols (uvloop 13.6 -> 1.6 MB; the dynamic symbol
#   table Python loads them by is kept), and every one of them is imported once to prove it;
# - the .pyc files pip compiled stay: they halve the start-up of every `cookieguard healthcheck`.
RUN /opt/venv/bin/python -m pip install ".[speed]" \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
    && find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
    && /opt/venv/bin/python -c "import importlib, pathlib, sysconfig; sp = pathlib.Path(sysconfig.get_path('platlib')); mods = ['.'.join(p.relative_to(sp).with_name(p.name.split('.')[0]).parts) for p in sp.rglob('*.so') if '.cpython-' in p.name or '.abi3.' in p.name]; [importlib.import_module(m) for m in mods]; print(len(mods), 'extension modules import')" \
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
# Probes <admin_listen><admin_prefix>/healthz as the config in $COOKIEGUARD_CONFIG says (default
# 127.0.0.1:9090, inside the container: readyz and metrics are not on the published port; a mounted
# config on another port or prefix stays healthy); exit 1 with the reason on anything but 200 within 3 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["cookieguard", "healthcheck"]
# Exec form: cookieguard is PID 1 and receives SIGTERM itself, then drains in-flight requests.
ENTRYPOINT ["cookieguard"]
CMD ["run"]
