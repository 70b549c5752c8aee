# cdcsync container image. From the repository root:
#   docker build -t cdcsync .                      (or: podman build -t cdcsync .)
#   docker run -d -p 127.0.0.1:8080:8080 -v "$PWD/cdcsync.yaml:/etc/cdcsync/cdcsync.yaml:ro" \
#       -e NATS_URL -e DATABASE_URL -e CDCSYNC_API_TOKEN cdcsync
# The mounted configuration must bind the API to 0.0.0.0:8080 inside the container (and
# should set a token); secrets come from the environment as ${VAR}, never from the image.
# compose.yaml runs it with NATS and PostgreSQL; docs/operations.md, "As a container".

# 1. The dashboard: static files built by Vite.
FROM docker.io/library/node:20-bookworm-slim AS dashboard
WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build

# 2. cdcsync and its dependencies in a virtual environment (all wheels: no compiler). The
# build hook (hatch_build.py) finds the dashboard built above and puts it into the wheel.
FROM docker.io/library/python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY cdcsync/ cdcsync/
COPY --from=dashboard /src/dashboard/dist/ dashboard/dist/
RUN python -m venv /opt/cdcsync \
    && /opt/cdcsync/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && cd / && /opt/cdcsync/bin/python -c "from cdcsync.api.dashboard import dashboard_dir as d; \
        assert (d() / 'index.html').is_file(), f'no dashboard in the package: {d()}'"

# 3. The runtime: the base image, the virtual environment, a user without privileges.
FROM docker.io/library/python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cdcsync
COPY --from=build /opt/cdcsync /opt/cdcsync
ENV PATH=/opt/cdcsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# SIGTERM drains in-flight batches (at most 15 s): give `docker stop` more than that (-t 30).
STOPSIGNAL SIGTERM
# Healthy = every flow applying events (/health answers 200). A 503 (a standby, a destination
# down) marks the container unhealthy, which Docker and compose do not restart on; see
# docs/operations.md. Set CDCSYNC_HEALTHCHECK_URL when the API listens elsewhere.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(os.environ.get('CDCSYNC_HEALTHCHECK_URL', 'http://127.0.0.1:8080/health'), timeout=4)"]
ENTRYPOINT ["cdcsync"]
CMD ["serve", "/etc/cdcsync/cdcsync.yaml", "--log-format", "json"]
