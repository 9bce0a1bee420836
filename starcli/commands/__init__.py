"""The `starlight` commands: each module parses options, calls one function of the engine, solutions or
experiments wing, and prints. The Typer `app` lives here; starcli/cli.py imports the command modules by
name, so nothing imports the CLI back. Command modules import no torch at import time."""

from __future__ import annotations

from typing import Optional

import typer

from . import common


class _App(typer.Typer):
    """Every command's help groups its options in panels (common.PanelledCommand)."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or common.PanelledCommand, **kwargs)


app = _App(
    name="starlight",
    help="Star domains of neural-network solutions: train solutions, build star models, measure barriers.",
    no_args_is_help=True,
    # Typer's own --install-completion / --show-completion (bash, zsh, fish, PowerShell); its modules
    # load only when those options are used.
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=common.SectionedGroup,  # the workflow (train, star, barrier) first, then the rest grouped
)


def _version(value: bool) -> None:
    if value:
        from starcli import __version__

        print(f"starlight {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    home: Optional[str] = typer.Option(None, "--home", help="Registry folder (default $STARLIGHT_HOME or ./.starlight)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="Intra-op threads per process (default $OMP_NUM_THREADS, else 1; see README)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (messages and results still print)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Global options go before or after the command: `starlight --home H list` = `starlight list --home H`."""
    from starcli.engine import threads as thread_policy  # torch-free: --help, list and show stay fast

    common.state.home = home
    common.state.debug = debug
    common.state.quiet = quiet
    # Every command runs through this callback, so every entry point that computes gets the policy.
    common.state.threads = thread_policy.apply(threads)
    from starcli.engine import allocator  # torch-free too (ctypes)

    allocator.apply()
