#!/bin/bash
# script-ec2 EC2 bootstrap: installs script-ec2 into /opt/script-ec2/.venv, writes
# /etc/script-ec2/config.toml, migrates the database and starts the systemd units of scripts/systemd
# (sync every 30 minutes; the Celery worker too when a broker is configured).
#
# Use: set the values in the block below, then pass this file as the instance's user data
# (`aws ec2 run-instances ... --user-data file://scripts/ec2-user-data.sh`). cloud-init runs it
# once, as root, at first boot; its output is in /var/log/script-ec2-bootstrap.log. Running it
# again by hand is safe: it updates the package and the units and keeps an existing config file.
# Works on Amazon Linux 2023 (dnf) and Debian/Ubuntu (apt) with Python >= 3.11.
#
# No secret belongs in user data (anyone on the instance can read it back from the metadata
# service). The database password and the broker URL are read at boot from SSM Parameter Store
# SecureStrings named below; the instance role needs ssm:GetParameter (and kms:Decrypt) on them.
set -euo pipefail

# ---- settings ------------------------------------------------------------------------------
# Where script-ec2 comes from: a git URL (cloned at BOOTSTRAP_REF) or an s3:// URL of a source
# tarball (a `git archive --format=tar.gz` of the repository).
BOOTSTRAP_SOURCE="${BOOTSTRAP_SOURCE:-}"
BOOTSTRAP_REF="${BOOTSTRAP_REF:-main}"
# Settings written to the config file (README, section "Settings").
SCRIPT_EC2_DATA_URI="${SCRIPT_EC2_DATA_URI:-}"
SCRIPT_EC2_PUBLIC_URI="${SCRIPT_EC2_PUBLIC_URI:-}"
SCRIPT_EC2_MODELS_DIR="${SCRIPT_EC2_MODELS_DIR:-/var/lib/script-ec2/models}"
# postgresql://USER@HOST:5432/DB, without a password (see BOOTSTRAP_PGPASS_PARAMETER).
SCRIPT_EC2_DATABASE_URL="${SCRIPT_EC2_DATABASE_URL:-}"
SCRIPT_EC2_AWS_REGION="${SCRIPT_EC2_AWS_REGION:-}"
# Optional SSM SecureString names: the database password (written to ~script-ec2/.pgpass) and
# the whole broker URL, password included (written to the config file). No broker: no worker.
BOOTSTRAP_PGPASS_PARAMETER="${BOOTSTRAP_PGPASS_PARAMETER:-}"
BOOTSTRAP_BROKER_URL_PARAMETER="${BOOTSTRAP_BROKER_URL_PARAMETER:-}"
# ---- end of settings -----------------------------------------------------------------------

# Where things go. The systemd units expect these paths: change them together.
PREFIX="${PREFIX:-/opt/script-ec2}"
VENV="${VENV:-$PREFIX/.venv}"
SRC="$PREFIX/src"
CONFIG_FILE="${CONFIG_FILE:-/etc/script-ec2/config.toml}"
SERVICE_USER="${SERVICE_USER:-script-ec2}"
SERVICE_HOME="${SERVICE_HOME:-/var/lib/script-ec2}"
UNIT_DIR="/etc/systemd/system"
UNITS_SYNC=(script-ec2-sync.service script-ec2-sync.timer)
UNITS_WORKER=(script-ec2-worker.service)
LOG_FILE="/var/log/script-ec2-bootstrap.log"
PYTHON=""
BROKER_URL=""

say() { printf 'script-ec2 bootstrap: %s\n' "$*" >&2; }
fail() { say "error: $*"; exit 1; }

require_settings() {
  local name missing=()
  for name in BOOTSTRAP_SOURCE SCRIPT_EC2_DATA_URI SCRIPT_EC2_PUBLIC_URI SCRIPT_EC2_DATABASE_URL; do
    [[ -n "${!name}" ]] || missing+=("$name")
  done
  if ((${#missing[@]})); then
    say "error: set ${missing[*]} in the settings block at the top of this script"
    exit 2
  fi
  if [[ "$SCRIPT_EC2_DATABASE_URL" =~ ://[^/@]*:[^/@]*@ ]]; then
    say "error: SCRIPT_EC2_DATABASE_URL must not hold a password; use BOOTSTRAP_PGPASS_PARAMETER"
    exit 2
  fi
}

install_os_packages() {
  if command -v dnf >/dev/null; then
    dnf install -y python3.11 python3.11-pip git tar
    PYTHON=python3.11
  elif command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends python3 python3-venv git ca-certificates
    PYTHON=python3
  else
    fail "neither dnf nor apt-get found: install Python >= 3.11 and git, then run this again"
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "$PYTHON is older than 3.11"
}

create_user() {
  if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$SERVICE_HOME" --create-home --shell /sbin/nologin "$SERVICE_USER"
  fi
}

fetch_source() {
  rm -rf "$SRC.new"
  if [[ "$BOOTSTRAP_SOURCE" == s3://* ]]; then
    command -v aws >/dev/null || fail "the aws CLI is needed to fetch $BOOTSTRAP_SOURCE"
    mkdir -p "$SRC.new"
    aws s3 cp --only-show-errors "$BOOTSTRAP_SOURCE" - | tar -xz -C "$SRC.new"
  else
    git clone --quiet --depth 1 --branch "$BOOTSTRAP_REF" "$BOOTSTRAP_SOURCE" "$SRC.new"
  fi
  [[ -f "$SRC.new/pyproject.toml" ]] || fail "$BOOTSTRAP_SOURCE holds no pyproject.toml"
  rm -rf "$SRC"
  mv "$SRC.new" "$SRC"
}

install_package() {
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --no-cache-dir --upgrade "$SRC"
  "$VENV/bin/script-ec2" --version
}

ssm_secret() {
  aws ssm get-parameter --with-decryption --name "$1" --query Parameter.Value --output text \
    ${SCRIPT_EC2_AWS_REGION:+--region "$SCRIPT_EC2_AWS_REGION"}
}

# A TOML basic string: backslashes and double quotes escaped.
toml_string() {
  local value="${1//\\/\\\\}"
  printf '"%s"' "${value//\"/\\\"}"
}

write_config() {
  if [[ -e "$CONFIG_FILE" ]]; then
    say "keeping the existing $CONFIG_FILE"
    return
  fi
  mkdir -p "$(dirname "$CONFIG_FILE")"
  local tmp="$CONFIG_FILE.tmp"
  (
    umask 027
    {
      echo "# Written by scripts/ec2-user-data.sh; see the README, section \"Settings\"."
      echo "database_url = $(toml_string "$SCRIPT_EC2_DATABASE_URL")"
      echo "data_uri = $(toml_string "$SCRIPT_EC2_DATA_URI")"
      echo "public_uri = $(toml_string "$SCRIPT_EC2_PUBLIC_URI")"
      echo "models_dir = $(toml_string "$SCRIPT_EC2_MODELS_DIR")"
      [[ -z "$SCRIPT_EC2_AWS_REGION" ]] || echo "aws_region = $(toml_string "$SCRIPT_EC2_AWS_REGION")"
      [[ -z "$BROKER_URL" ]] || echo "broker_url = $(toml_string "$BROKER_URL")"
      echo 'log_format = "json"'
    } >"$tmp"
  )
  if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    chgrp "$SERVICE_USER" "$tmp"
  fi
  mv "$tmp" "$CONFIG_FILE"
}

# ~script-ec2/.pgpass for the database URL's host, port, database and user.
write_pgpass() {
  [[ -n "$BOOTSTRAP_PGPASS_PARAMETER" ]] || return 0
  command -v aws >/dev/null || fail "the aws CLI is needed to read $BOOTSTRAP_PGPASS_PARAMETER"
  local pgpass="$SERVICE_HOME/.pgpass"
  ssm_secret "$BOOTSTRAP_PGPASS_PARAMETER" | "$VENV/bin/python" -c '
import sys
from sqlalchemy.engine import make_url

url = make_url(sys.argv[1])
password = sys.stdin.read().rstrip("\n")
fields = [url.host or "localhost", str(url.port or 5432), url.database or "*", url.username or "*"]
escape = lambda text: text.replace("\\", "\\\\").replace(":", "\\:")
print(":".join(escape(f) for f in [*fields, password]))
' "$SCRIPT_EC2_DATABASE_URL" >"$pgpass.tmp"
  chmod 600 "$pgpass.tmp"
  chown "$SERVICE_USER:" "$pgpass.tmp"
  mv "$pgpass.tmp" "$pgpass"
}

as_service_user() {
  runuser -u "$SERVICE_USER" -- env SCRIPT_EC2_CONFIG="$CONFIG_FILE" "$VENV/bin/script-ec2" "$@"
}

install_units() {
  local unit
  for unit in "${UNITS_SYNC[@]}" "${UNITS_WORKER[@]}"; do
    install -m 644 "$SRC/scripts/systemd/$unit" "$UNIT_DIR/$unit"
  done
  systemctl daemon-reload
  systemctl enable --now script-ec2-sync.timer
  if [[ -n "$BROKER_URL" ]]; then
    systemctl enable --now script-ec2-worker.service
    systemctl restart script-ec2-worker.service
  else
    say "no broker configured: the worker unit is installed but not enabled"
  fi
}

main() {
  exec > >(tee -a "$LOG_FILE") 2>&1
  require_settings
  install_os_packages
  create_user
  fetch_source
  install_package
  if [[ -n "$BOOTSTRAP_BROKER_URL_PARAMETER" ]]; then
    command -v aws >/dev/null || fail "the aws CLI is needed to read $BOOTSTRAP_BROKER_URL_PARAMETER"
    BROKER_URL="$(ssm_secret "$BOOTSTRAP_BROKER_URL_PARAMETER")"
  fi
  write_config
  write_pgpass
  as_service_user db upgrade
  install_units
  # The full check, write test included; a failure is reported here, not retried.
  if as_service_user doctor; then
    say "done: script-ec2 doctor passed"
  else
    say "installed, but script-ec2 doctor found problems (above); fix them and run it again"
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
