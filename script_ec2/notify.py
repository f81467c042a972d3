"""Tell someone a job ended: an HTTP POST of JSON to a webhook and/or an email over SMTP.

Each target is tried up to ``attempts`` times with exponential backoff (``backoff``, then twice
that, and so on, capped at :data:`MAX_BACKOFF_S`). Every attempt is handed to a ``record``
callback, which the jobs module appends to the job's delivery log. A notification that cannot be
delivered is logged and recorded; it never changes the job's outcome.

Where to send comes from the job (its ``notify`` targets, fixed when it was submitted); how to
send (SMTP server, sender, attempts, backoff) comes from the settings of the process that sends.
"""

from __future__ import annotations

import functools
import json
import logging
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from script_ec2 import __version__, log
from script_ec2.errors import ConfigError, UsageError
from script_ec2.settings import Settings, mask_url

DEFAULT_ATTEMPTS = 5
DEFAULT_BACKOFF_S = 2.0
MAX_BACKOFF_S = 60.0
TIMEOUT_S = 10.0
DEFAULT_SMTP_URL = "smtp://127.0.0.1:25"
SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
# A client error other than these means the request itself is wrong: sending it again cannot help.
RETRYABLE_CLIENT_STATUSES = (408, 425, 429)

Record = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class NotifyConfig:
    """How to send, and the operator's standing targets (added to every job's own)."""

    webhook_url: str = ""
    email_to: tuple[str, ...] = ()
    email_from: str = ""
    smtp_url: str = DEFAULT_SMTP_URL
    attempts: int = DEFAULT_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF_S
    timeout: float = TIMEOUT_S


def config_from_settings(settings: Settings) -> NotifyConfig:
    """The notification settings (``notify_*`` and ``smtp_url``), checked."""

    def value(key: str, default: str) -> str:
        text = str(getattr(settings, key, "") or "").strip()
        return text if text else default

    attempts = int(getattr(settings, "notify_attempts", DEFAULT_ATTEMPTS) or DEFAULT_ATTEMPTS)
    if attempts < 1:
        raise ConfigError(f"notify_attempts must be an integer >= 1, got {attempts}")
    from script_ec2.durations import parse_duration

    backoff = parse_duration(value("notify_backoff", f"{DEFAULT_BACKOFF_S}s"), "notify_backoff")
    smtp_url = value("smtp_url", DEFAULT_SMTP_URL)
    _parse_smtp_url(smtp_url)
    email_from = value("notify_email_from", f"script-ec2@{socket.gethostname()}")
    return NotifyConfig(
        webhook_url=check_webhook_url(value("notify_webhook_url", "")),
        email_to=_addresses(value("notify_email_to", "")),
        email_from=email_from,
        smtp_url=smtp_url,
        attempts=attempts,
        backoff=backoff.total_seconds(),
    )


def check_webhook_url(url: str) -> str:
    """``url`` itself if it is empty or an http(s) URL with a host; else a usage error."""
    if not url:
        return url
    parts = urlsplit(url)
    # urllib would also open file:// and ftp:// URLs: a webhook must never read local files.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"webhook URL {redact_url(url)!r} must be http:// or https:// with a host "
            "(check notify_webhook_url / SCRIPT_EC2_NOTIFY_WEBHOOK_URL)"
        )
    return url


def redact_url(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries often carry the secret token."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "<invalid URL>"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{parts.hostname}{port}{rest}"


def targets(config: NotifyConfig, request: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """The job's targets: the operator's standing ones plus those of this request.

    ``request`` may hold ``webhook`` and ``email``, each a string or a list of strings.
    """
    request = request or {}
    unknown = set(request) - {"webhook", "email"}
    if unknown:
        raise UsageError(f"unknown notification target(s): {', '.join(sorted(unknown))}")
    webhooks = _merge([config.webhook_url], _strings(request.get("webhook"), "webhook"))
    emails = _merge(list(config.email_to), _strings(request.get("email"), "email"))
    for url in webhooks:
        check_webhook_url(url)
    for address in emails:
        if "@" not in address or any(c.isspace() for c in address):
            raise UsageError(f"notification email {address!r} is not an email address")
    return {"webhooks": webhooks, "emails": emails}


def merge_targets(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    """The union of two target sets, order kept, duplicates dropped."""
    return {
        channel: _merge(list(old.get(channel, [])), list(new.get(channel, [])))
        for channel in ("webhooks", "emails")
    }


def payload(
    job_id: str,
    kind: str,
    status: str,
    result_key: str | None,
    error: str | None,
    finished_at: datetime | None,
) -> dict[str, Any]:
    """The JSON a webhook receives (stable keys) and an email carries."""
    return {
        "job_id": job_id,
        "kind": kind,
        "status": status,
        "result_key": result_key,
        "error": error,
        "finished_at": finished_at.isoformat() if finished_at else None,
    }


def deliver(
    job_targets: Mapping[str, Any],
    body: Mapping[str, Any],
    config: NotifyConfig,
    record: Record,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Send ``body`` to every target, retrying each with backoff; return the attempt records."""
    records: list[dict[str, Any]] = []

    def keep(entry: dict[str, Any]) -> None:
        records.append(entry)
        try:
            record(entry)
        except Exception as exc:  # a log that cannot be written must not stop the sending
            log.event(
                "could not record a notification attempt",
                logging.WARNING,
                job_id=body.get("job_id"),
                error=f"{type(exc).__name__}: {exc}",
            )

    for url in job_targets.get("webhooks", []):
        _with_retries(
            "webhook",
            redact_url(url),
            functools.partial(_post, url, body, config.timeout),
            config,
            keep,
            sleep,
        )
    emails = list(job_targets.get("emails", []))
    if emails:
        _with_retries(
            "email",
            ", ".join(emails),
            functools.partial(_send_email, config, emails, body),
            config,
            keep,
            sleep,
        )
    return records


def backoff_delays(config: NotifyConfig) -> list[float]:
    """The pauses between attempts: backoff, 2 x backoff, 4 x ..., each at most MAX_BACKOFF_S."""
    return [min(config.backoff * 2**i, MAX_BACKOFF_S) for i in range(config.attempts - 1)]


class _Outcome:
    def __init__(self, ok: bool, detail: str, retryable: bool = True) -> None:
        self.ok, self.detail, self.retryable = ok, detail, retryable


def _with_retries(
    channel: str,
    target: str,
    send: Callable[[], _Outcome],
    config: NotifyConfig,
    keep: Record,
    sleep: Callable[[float], None],
) -> None:
    delays = backoff_delays(config)
    for attempt in range(1, config.attempts + 1):
        outcome = send()
        keep(
            {
                "channel": channel,
                "target": target,
                "attempt": attempt,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "ok": outcome.ok,
                "detail": mask_url(outcome.detail),
            }
        )
        if outcome.ok:
            return
        if not outcome.retryable or attempt == config.attempts:
            log.event(
                f"{channel} notification failed",
                logging.WARNING,
                target=target,
                attempts=attempt,
                detail=mask_url(outcome.detail),
            )
            return
        sleep(delays[attempt - 1])


def _post(url: str, body: Mapping[str, Any], timeout: float) -> _Outcome:
    request = urllib.request.Request(
        url,
        data=json.dumps(body, sort_keys=True).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"script-ec2/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        retryable = exc.code >= 500 or exc.code in RETRYABLE_CLIENT_STATUSES
        return _Outcome(False, f"HTTP {exc.code}", retryable)
    except urllib.error.URLError as exc:
        return _Outcome(False, f"cannot connect: {exc.reason}")
    except (OSError, ValueError) as exc:
        return _Outcome(False, f"{type(exc).__name__}: {exc}")
    return _Outcome(200 <= status < 300, f"HTTP {status}")


@dataclass(frozen=True)
class _SmtpServer:
    scheme: str
    host: str
    port: int
    user: str
    password: str


def _parse_smtp_url(url: str) -> _SmtpServer:
    parts = urlsplit(url)
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
        raise ConfigError(
            f"smtp_url {mask_url(url)!r} must look like smtp://host:25, "
            "smtp+starttls://user:password@host:587 or smtps://user:password@host:465"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"smtp_url {mask_url(url)!r} has an invalid port") from None
    default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}[parts.scheme]
    return _SmtpServer(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or default_port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def _send_email(config: NotifyConfig, to: Sequence[str], body: Mapping[str, Any]) -> _Outcome:
    server = _parse_smtp_url(config.smtp_url)
    message = EmailMessage()
    message["Subject"] = f"script-ec2 job {body.get('job_id')} {body.get('status')}"
    message["From"] = config.email_from
    message["To"] = ", ".join(to)
    lines = [f"{key}: {value}" for key, value in body.items() if value is not None]
    message.set_content("\n".join(lines) + "\n\n" + json.dumps(body, sort_keys=True) + "\n")
    try:
        smtp: smtplib.SMTP
        if server.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(
                server.host,
                server.port,
                timeout=config.timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(server.host, server.port, timeout=config.timeout)
        with smtp:
            if server.scheme == "smtp+starttls":
                smtp.starttls(context=ssl.create_default_context())
            if server.user:
                smtp.login(server.user, server.password)
            refused = smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        # 5xx replies are permanent (bad recipient, authentication); 4xx ones are worth a retry.
        return _Outcome(False, f"SMTP {exc.smtp_code}", retryable=exc.smtp_code < 500)
    except (smtplib.SMTPException, OSError) as exc:
        return _Outcome(False, f"{type(exc).__name__}: {exc}")
    if refused:
        return _Outcome(False, f"refused recipients: {', '.join(sorted(refused))}", False)
    return _Outcome(True, f"accepted by {server.host}:{server.port}")


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        if name == "email":
            return list(_addresses(value))
        return [value.strip()] if value.strip() else []
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise UsageError(f"notification {name} must be a string or a list of strings")


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _merge(first: Iterable[str], second: Iterable[str]) -> list[str]:
    merged: list[str] = []
    for item in [*first, *second]:
        if item and item not in merged:
            merged.append(item)
    return merged
