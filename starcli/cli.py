"""The `starlight` command line: a Typer app whose commands live in starcli/commands/.

Errors a user can act on print as one line on stderr with exit 1 (usage errors exit 2); `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from .commands import common

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
) -> None:
    common.state.home = home
    common.state.debug = debug


def _register_commands() -> None:
    from .commands import solutions  # noqa: F401

    for name in ("star", "alignment", "scale", "experiments"):
        try:
            __import__(f"starcli.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"starcli.commands.{name}":
                raise


_register_commands()


def main(argv: list[str] | None = None) -> int:
    from registry import RegistryError

    from .errors import StarlightError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = app(args=argv, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except (StarlightError, RegistryError) as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # Click's own exceptions (typer may vendor click, so match by class name, not by import).
        kinds = {c.__name__ for c in type(e).__mro__}
        if "Exit" in kinds:
            return getattr(e, "exit_code", 0)
        if "Abort" in kinds:
            print("aborted", file=sys.stderr)
            return 130
        if debug:
            raise
        if "UsageError" in kinds:
            ctx = getattr(e, "ctx", None)
            where = f"starlight {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "starlight --help"
            print(f"error: {e.format_message()} (see {where})", file=sys.stderr)
            return 2
        # A bug, or an environment problem we did not foresee.
        print(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1

