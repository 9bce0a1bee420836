"""The `starlight` commands: each module parses options, calls one function of the engine, solutions or
experiments wing, and prints. The Typer `app` lives here; starcli/cli.py imports the command modules by
name, so nothing imports the CLI back. Command modules import no torch at import time."""

from __future__ import annotations

from typing import Optional

import typer

from . import common

app = typer.Typer(
    name="starlight",
    help="Star domains of neural-network solutions: train solutions, build star models, measure barriers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    home: Optional[str] = typer.Option(None, "--home", help="Registry folder (default $STARLIGHT_HOME or ./.starlight)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="Intra-op threads per process (default $OMP_NUM_THREADS, else 1; see README)."
    ),
) -> None:
    from starcli.engine import threads as thread_policy  # torch-free: --help, list and show stay fast

    common.state.home = home
    common.state.debug = debug
    # Every command runs through this callback, so every entry point that computes gets the policy.
    common.state.threads = thread_policy.apply(threads)
