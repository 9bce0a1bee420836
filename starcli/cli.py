"""The `starlight` entry point: the Typer app of starcli/commands/ with every command module loaded, and
`main()`, which turns errors into one line.

Errors a user can act on print as one line on stderr with exit 1 (usage errors exit 2); `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import sys

from .commands import alignment, app, experiments, solutions, star  # noqa: F401  (each module adds its commands)


def main(argv: list[str] | None = None) -> int:
    from registry import RegistryError

    from .errors import StarlightError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if not debug:
        _quiet_warnings()
    from .commands import common

    common.state.argv = tuple(argv if argv is not None else sys.argv[1:])
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
        # The environment (disk, permissions, database, damaged files, memory), or a bug: one line either way.
        from .failures import describe

        message, code = describe(e)
        print(f"error: {message}", file=sys.stderr)
        return code


def _quiet_warnings() -> None:
    """Library warnings (torch, timm, torchvision) are advice to developers, printed with site-packages
    paths; a user sees none of them, and any other warning as one line without a path (--debug: all)."""
    import warnings

    warnings.filterwarnings("ignore", module=r"(torch|torchvision|timm|matplotlib)(\.|$)")
    warnings.filterwarnings("ignore", message=r".*(TypedStorage|weights_only|NumPy|numpy)")

    def one_line(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()
        print(f"warning: {text[0] if text else category.__name__}", file=sys.stderr)

    warnings.showwarning = one_line

