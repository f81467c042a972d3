"""Job-end notifications: a webhook on a local HTTP server, email to a local aiosmtpd server,
retries with backoff, and the delivery log kept on the job. A failed notification never changes
the job's outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from script_ec2 import jobs, notify
from script_ec2.context import AppContext
from script_ec2.errors import ConfigError, UsageError
from script_ec2.settings import resolve
from tests.conftest import Result, free_port

if TYPE_CHECKING:
    from tests.fixtures_broker import Webhook

pytest_plugins = ["tests.fixtures_broker"]

Cli = Callable[..., Result]
KEY = "b" * 64


@pytest.fixture(autouse=True)
def _job_commands() -> None:
    from tests.fixtures_broker import ensure_job_commands

    ensure_job_commands()


@pytest.fixture
def app_ctx(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppContext]:
    """Embedded mode on SQLite, with a stand-in fit runner and millisecond backoff."""
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'jobs.db'}")
    monkeypatch.setenv("SCRIPT_EC2_NOTIFY_BACKOFF", "0.01s")
    monkeypatch.setenv("SCRIPT_EC2_NOTIFY_ATTEMPTS", "3")
    monkeypatch.setitem(jobs.RUNNERS, "fit", lambda ctx, job, progress: job.key)
    ctx = AppContext(resolve())
    yield ctx
    ctx.engine.dispose()


@dataclass
class Mailbox:
    """What the local SMTP server received; ``replies`` scripts its answers to DATA."""

    port: int
    messages: list[Any] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.replies.pop(0) if self.replies else "250 Message accepted for delivery"
        if reply.startswith("250"):
            self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return reply


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def submit(ctx: AppContext, target: dict[str, Any]) -> jobs.Job:
    # Tests set notification variables after the fixture resolved the settings: resolve again.
    ctx.settings = resolve()
    submission = jobs.submit_job(ctx, kind="fit", key=KEY, params={}, notify=target)
    assert submission.job_id is not None
    return jobs.get(ctx.engine, submission.job_id)


# --------------------------------------------------------------------------- webhook


def test_webhook_gets_the_job_outcome_and_the_attempt_is_recorded(
    app_ctx: AppContext, webhook: Webhook, cli: Cli
) -> None:
    job = submit(app_ctx, {"webhook": webhook.url})

    assert job.state == jobs.SUCCEEDED
    [body] = webhook.received
    assert body == {
        "job_id": job.id,
        "kind": "fit",
        "status": "succeeded",
        "result_key": KEY,
        "error": None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    assert webhook.paths == ["/hooks/secret-token"]
    [entry] = job.notifications
    port = webhook.url.split(":")[2].split("/")[0]
    assert entry["channel"] == "webhook" and entry["ok"] is True and entry["attempt"] == 1
    assert entry["detail"] == "HTTP 200"
    # The token in the webhook's path is a secret: the log and the output show only the host.
    assert entry["target"] == f"http://127.0.0.1:{port}/…"
    shown = cli("jobs", "status", job.id, "--format", "json")
    assert "secret-token" not in shown.stdout
    assert json.loads(shown.stdout)["notify"]["webhooks"] == [f"http://127.0.0.1:{port}/…"]
    table = cli("jobs", "status", job.id)
    assert "webhook http://127.0.0.1" in table.stdout and "ok after 1 attempt" in table.stdout


def test_webhook_is_retried_after_a_server_error(app_ctx: AppContext, webhook: Webhook) -> None:
    webhook.statuses = [500, 200]
    job = submit(app_ctx, {"webhook": webhook.url})

    assert len(webhook.received) == 2
    assert [(e["attempt"], e["ok"], e["detail"]) for e in job.notifications] == [
        (1, False, "HTTP 500"),
        (2, True, "HTTP 200"),
    ]
    assert job.state == jobs.SUCCEEDED


def test_a_webhook_that_keeps_failing_never_fails_the_job(
    app_ctx: AppContext, webhook: Webhook, cli: Cli
) -> None:
    webhook.statuses = [503, 503, 503, 503]
    job = submit(app_ctx, {"webhook": webhook.url})

    assert job.state == jobs.SUCCEEDED
    assert [e["detail"] for e in job.notifications] == ["HTTP 503"] * 3
    waited = cli("jobs", "wait", job.id)
    assert waited.exit_code == 0
    assert "failed (HTTP 503) after 3 attempt(s)" in waited.stdout


def test_a_client_error_is_not_retried(app_ctx: AppContext, webhook: Webhook) -> None:
    webhook.statuses = [404]
    job = submit(app_ctx, {"webhook": webhook.url})
    assert [(e["attempt"], e["detail"]) for e in job.notifications] == [(1, "HTTP 404")]


def test_an_unreachable_webhook_is_retried_with_backoff(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    config = notify.NotifyConfig(attempts=4, backoff=0.5)
    pauses: list[float] = []
    recorded: list[dict[str, Any]] = []

    records = notify.deliver(
        {"webhooks": [url]}, {"job_id": "j"}, config, recorded.append, sleep=pauses.append
    )

    assert pauses == [0.5, 1.0, 2.0]
    assert records == recorded and len(records) == 4
    assert all(not r["ok"] and r["detail"].startswith("cannot connect") for r in records)


def test_backoff_doubles_and_is_capped() -> None:
    assert notify.backoff_delays(notify.NotifyConfig(attempts=5, backoff=2)) == [2, 4, 8, 16]
    assert notify.backoff_delays(notify.NotifyConfig(attempts=4, backoff=40)) == [40, 60, 60]
    assert notify.backoff_delays(notify.NotifyConfig(attempts=1)) == []


def test_a_failed_job_notifies_with_its_error(
    app_ctx: AppContext, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from script_ec2.errors import DataError

    def broken(ctx: AppContext, job: jobs.Job, progress: Callable[[float], None]) -> str:
        raise DataError("no sessions for Alpine")

    monkeypatch.setitem(jobs.RUNNERS, "fit", broken)
    job = submit(app_ctx, {"webhook": webhook.url})
    [body] = webhook.received
    assert (body["status"], body["error"], body["result_key"]) == (
        "failed",
        "no sessions for Alpine",
        None,
    )
    assert job.notifications[0]["ok"] is True


def test_the_standing_webhook_setting_applies_to_every_job(
    app_ctx: AppContext, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_NOTIFY_WEBHOOK_URL", webhook.url)
    job = submit(app_ctx, {})
    assert [b["job_id"] for b in webhook.received] == [job.id]
    assert job.notify["webhooks"] == [webhook.url]


# --------------------------------------------------------------------------- email


def test_email_is_sent_through_smtp(
    app_ctx: AppContext, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_SMTP_URL", f"smtp://127.0.0.1:{mailbox.port}")
    monkeypatch.setenv("SCRIPT_EC2_NOTIFY_EMAIL_FROM", "script-ec2@example.org")
    job = submit(app_ctx, {"email": "ops@example.org, planner@example.org"})

    [(recipients, message)] = mailbox.messages
    assert recipients == ["ops@example.org", "planner@example.org"]
    assert message["Subject"] == f"script-ec2 job {job.id} succeeded"
    assert message["From"] == "script-ec2@example.org"
    text = message.get_payload(decode=True).decode()
    assert f"result_key: {KEY}" in text
    assert json.loads(text.strip().splitlines()[-1])["job_id"] == job.id
    [entry] = job.notifications
    assert (entry["channel"], entry["target"], entry["ok"]) == (
        "email",
        "ops@example.org, planner@example.org",
        True,
    )


def test_email_is_retried_after_a_temporary_smtp_failure(
    app_ctx: AppContext, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_SMTP_URL", f"smtp://127.0.0.1:{mailbox.port}")
    mailbox.replies = ["451 Try again later"]
    job = submit(app_ctx, {"email": "ops@example.org"})

    assert len(mailbox.messages) == 1
    assert [(e["attempt"], e["ok"], e["detail"]) for e in job.notifications] == [
        (1, False, "SMTP 451"),
        (2, True, f"accepted by 127.0.0.1:{mailbox.port}"),
    ]


def test_a_permanent_smtp_failure_is_not_retried(
    app_ctx: AppContext, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_SMTP_URL", f"smtp://127.0.0.1:{mailbox.port}")
    mailbox.replies = ["554 Transaction failed"]
    job = submit(app_ctx, {"email": "ops@example.org"})
    assert [(e["attempt"], e["ok"], e["detail"]) for e in job.notifications] == [
        (1, False, "SMTP 554")
    ]
    assert job.state == jobs.SUCCEEDED and mailbox.messages == []


def test_webhook_and_email_together(
    app_ctx: AppContext, webhook: Webhook, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_SMTP_URL", f"smtp://127.0.0.1:{mailbox.port}")
    started = time.monotonic()
    job = submit(app_ctx, {"webhook": webhook.url, "email": "ops@example.org"})
    assert time.monotonic() - started < 10
    assert [e["channel"] for e in job.notifications] == ["webhook", "email"]
    assert len(webhook.received) == 1 and len(mailbox.messages) == 1


# --------------------------------------------------------------------------- configuration


def test_targets_are_checked_when_the_job_is_submitted(app_ctx: AppContext) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"webhook": "file:///etc/passwd"}, "must be http:// or https://"),
        ({"email": "not-an-address"}, "is not an email address"),
        ({"pager": "555"}, "unknown notification target(s): pager"),
        ({"webhook": 5}, "must be a string or a list of strings"),
    ]
    for target, message in cases:
        with pytest.raises(UsageError) as caught:
            jobs.submit_job(app_ctx, kind="fit", key=KEY, params={}, notify=target)
        assert message in str(caught.value)
    assert jobs.list_jobs(app_ctx.engine) == []


def test_settings_are_read_and_checked(isolated_env: Path) -> None:
    env = {
        "SCRIPT_EC2_NOTIFY_WEBHOOK_URL": "https://hooks.example.org/T000/abc",
        "SCRIPT_EC2_NOTIFY_EMAIL_TO": "a@example.org,b@example.org",
        "SCRIPT_EC2_SMTP_URL": "smtp+starttls://user:pw@mail.example.org:587",
        "SCRIPT_EC2_NOTIFY_ATTEMPTS": "7",
        "SCRIPT_EC2_NOTIFY_BACKOFF": "1m",
    }
    config = notify.config_from_settings(resolve(env=env))
    assert config.email_to == ("a@example.org", "b@example.org")
    assert (config.attempts, config.backoff) == (7, 60.0)
    defaults = notify.config_from_settings(resolve(env={}))
    assert (defaults.webhook_url, defaults.attempts, defaults.backoff) == ("", 5, 2.0)

    with pytest.raises(ConfigError) as caught:
        notify.config_from_settings(resolve(env={"SCRIPT_EC2_SMTP_URL": "imap://u:hunter2@h"}))
    assert "imap://u:***@h" in str(caught.value) and "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="'notify_attempts' must be at least 1"):
        resolve(env={"SCRIPT_EC2_NOTIFY_ATTEMPTS": "0"})
    with pytest.raises(UsageError, match="notify_backoff must be a duration"):
        notify.config_from_settings(resolve(env={"SCRIPT_EC2_NOTIFY_BACKOFF": "soon"}))
