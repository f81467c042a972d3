"""The ``script-ec2`` command line: global options, sub-app registration and the one error wrapper.

Start-up must stay fast: this module and every ``commands`` module import only typer and the
standard library at module level; heavy libraries are imported inside the functions that use them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from script_ec2 import __version__
from script_ec2.errors import EXIT_FAILED, EXIT_USAGE, ScriptEc2Error, environment_failure

app = typer.Typer(
    name="script-ec2",
    help="Data-and-model backend of SCRIPT: sync private charging data, compute statistics, "
    "train and publish models, fit scenarios.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"script-ec2 {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML config file [env SCRIPT_EC2_CONFIG].")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Home of the embedded defaults [env SCRIPT_EC2_DATA_DIR]."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Database URL [env SCRIPT_EC2_DATABASE_URL]."),
    ] = None,
    data_uri: Annotated[
        str | None,
        typer.Option(
            "--data-uri",
            help="Private data: s3://bucket/prefix or folder [env SCRIPT_EC2_DATA_URI].",
        ),
    ] = None,
    public_uri: Annotated[
        str | None,
        typer.Option(
            "--public-uri",
            help="Public models: s3://bucket/prefix or folder [env SCRIPT_EC2_PUBLIC_URI].",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Local data cache [env SCRIPT_EC2_CACHE_DIR]."),
    ] = None,
    models_dir: Annotated[
        str | None,
        typer.Option("--models-dir", help="Model registry [env SCRIPT_EC2_MODELS_DIR]."),
    ] = None,
    broker_url: Annotated[
        str | None,
        typer.Option("--broker-url", help="Celery broker URL [env SCRIPT_EC2_BROKER_URL]."),
    ] = None,
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint-url", help="S3 endpoint override [env SCRIPT_EC2_S3_ENDPOINT_URL]."
        ),
    ] = None,
    quiet: Annotated[
        bool | None,
        typer.Option("--quiet", "-q", help="Only warnings and errors [env SCRIPT_EC2_QUIET]."),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="text or json [env SCRIPT_EC2_LOG_FORMAT]."),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    from script_ec2 import log
    from script_ec2.context import AppContext
    from script_ec2.settings import resolve

    flags = {
        "data_dir": data_dir,
        "database_url": database_url,
        "data_uri": data_uri,
        "public_uri": public_uri,
        "cache_dir": cache_dir,
        "models_dir": models_dir,
        "broker_url": broker_url,
        "s3_endpoint_url": s3_endpoint_url,
        "quiet": quiet,
        "log_format": log_format,
    }
    settings = resolve(flags=flags, config_file=config)
    log.configure(settings.log_format, settings.quiet, command=ctx.invoked_subcommand or "")
    ctx.obj = AppContext(settings)


def _register() -> None:
    from script_ec2.commands import config as config_cmd
    from script_ec2.commands import db as db_cmd
    from script_ec2.commands import demo as demo_cmd
    from script_ec2.commands import doctor as doctor_cmd
    from script_ec2.commands import fit as fit_cmd
    from script_ec2.commands import jobs as jobs_cmd
    from script_ec2.commands import models as models_cmd
    from script_ec2.commands import publish as publish_cmd
    from script_ec2.commands import results as results_cmd
    from script_ec2.commands import stats as stats_cmd
    from script_ec2.commands import sync as sync_cmd
    from script_ec2.commands import train as train_cmd
    from script_ec2.commands import worker as worker_cmd

    app.add_typer(config_cmd.app, name="config")
    app.add_typer(db_cmd.app, name="db")
    app.add_typer(demo_cmd.app, name="demo")
    app.command("sync")(sync_cmd.sync)
    app.command("stats")(stats_cmd.stats)
    app.add_typer(train_cmd.app, name="train")
    app.add_typer(models_cmd.app, name="models")
    app.add_typer(fit_cmd.app, name="fit")
    app.add_typer(results_cmd.app, name="results")
    app.command("publish")(publish_cmd.publish)
    app.command("doctor")(doctor_cmd.doctor)
    app.add_typer(jobs_cmd.app, name="jobs")
    app.command("worker")(worker_cmd.worker)


_register()


# Logging options that cron lines put after the command (`script-ec2 sync --quiet --log-format
# json`); main() moves them before it, where the root callback reads them.
_HOISTED_FLAGS = ("--quiet", "-q")
_HOISTED_VALUES = ("--log-format",)


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move --quiet/-q and --log-format VALUE given after the command to the front."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in _HOISTED_FLAGS:
            front.append(arg)
        elif arg in _HOISTED_VALUES and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        elif any(arg.startswith(f"{name}=") for name in _HOISTED_VALUES):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; expected failures become one ``Error:`` line."""
    argv = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    from script_ec2.settings import mask_url

    try:  # typer >= 0.25 vendors click as typer._click; older releases use click itself
        from typer._click.exceptions import ClickException, UsageError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

    try:
        rv = app(args=argv, prog_name="script-ec2", standalone_mode=False)
    except ScriptEc2Error as exc:
        sys.stdout.flush()
        print(f"Error: {mask_url(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("Error: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except ClickException as exc:
        exc.show()
        return exc.exit_code or EXIT_FAILED
    except Exception as exc:
        message = environment_failure(exc)
        if message is None:
            raise  # a bug: keep the traceback
        sys.stdout.flush()
        print(f"Error: {mask_url(message)}", file=sys.stderr)
        return EXIT_FAILED
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
