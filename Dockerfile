# syntax=docker/dockerfile:1
# script-ec2 in one image: the CLI, the Celery workers and the sync scheduler (see compose.yaml).
#   docker build -t script-ec2 .
#   docker run --rm -e SCRIPT_EC2_DATABASE_URL=... script-ec2 doctor
# No secret is built in: settings and credentials come from the environment at run time (the
# database and broker URLs, the AWS chain), and only pyproject.toml, README.md and script_ec2/ are
# copied into the build (.dockerignore keeps everything else out of the context).

ARG PYTHON_VERSION=3.12

# ---- build: a virtual environment holding script-ec2 and its dependencies (wheels only) ----
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY script_ec2 ./script_ec2
RUN python -m venv /opt/script-ec2 \
    && /opt/script-ec2/bin/pip install --no-cache-dir . \
    && /opt/script-ec2/bin/script-ec2 --version

# ---- runtime: the same Python, the environment from the build stage, a non-root user ----
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="script-ec2" \
      org.opencontainers.image.description="Data-and-model backend of SCRIPT (EV charging planning)" \
      org.opencontainers.image.licenses="BSD-3-Clause"
RUN groupadd --system --gid 10001 script-ec2 \
    && useradd --system --uid 10001 --gid script-ec2 --home-dir /var/lib/script-ec2 \
       --create-home --shell /usr/sbin/nologin script-ec2
COPY --from=build /opt/script-ec2 /opt/script-ec2
ENV PATH=/opt/script-ec2/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCRIPT_EC2_DATA_DIR=/var/lib/script-ec2 \
    SCRIPT_EC2_LOG_FORMAT=json
# The data folder (SQLite file, cache, local buckets, models) belongs to the user, so a named
# volume mounted here starts out writable by it.
WORKDIR /var/lib/script-ec2
USER 10001:10001
# --quick: no write to the public target and no model checksums every minute (see README).
HEALTHCHECK --interval=1m --timeout=30s --start-period=1m --retries=3 \
    CMD ["script-ec2", "doctor", "--quick"]
ENTRYPOINT ["script-ec2"]
CMD ["--help"]
