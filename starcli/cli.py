"""The `starlight` entry point: the Typer app of starcli/commands/ with every command module loaded, and
`main()`, which turns errors into one line.

Errors a user can act on print as one line on stderr with exit 1 (usage errors exit 2); `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import sys

from .commands import alignment, app, experiments, solutions, star, workbench  # noqa: F401  (each module adds its commands)


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

