"""The `starlight` entry point: the Typer app of starcli/commands/ with every command module loaded, and
`main()`, which turns errors into one line.

Errors a user can act on print as one line on stderr with exit 1 (usage errors exit 2); `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import sys

from .commands import alignment, app, experiments, instruments, solutions, star, transfer, workbench  # noqa: F401  (each module adds its commands)

# Training keeps a resume file per epoch and barriers keep the pairs they finished.
INTERRUPTED = "interrupted; rerun the same command to resume"

# Spellings retired for one name per concept: permutation before comparison is `--align auto|weight|none`
# in every command; the star's per-epoch re-permutation of its anchors is a concept of its own.
RENAMED_OPTIONS = {
    "--no-align": "--align none",
    "--align-anchors": "--realign",
    "--no-align-anchors": "--no-realign",
}

# The global options (commands/__init__.py), which may also follow the command.
GLOBAL_FLAGS = ("--debug", "--quiet", "-q")
GLOBAL_VALUED = ("--home", "--threads")


def hoist_globals(argv: list[str]) -> list[str]:
    """Move global options given after the command in front of it, where Click parses them:
    `starlight list --home H` reads as `starlight --home H list`. Nothing after `--` is touched."""
    command_at = next((i for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] not in GLOBAL_VALUED)), None)
    if command_at is None:
        return list(argv)
    front, rest, moved = list(argv[:command_at]), [], []
    i = command_at
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i:]
            break
        if a in GLOBAL_FLAGS:
            moved.append(a)
        elif a in GLOBAL_VALUED and i + 1 < len(argv):
            moved += [a, argv[i + 1]]
            i += 1
        elif any(a.startswith(v + "=") for v in GLOBAL_VALUED):
            moved.append(a)
        else:
            rest.append(a)
        i += 1
    return front + moved + rest


def main(argv: list[str] | None = None) -> int:
    from .errors import StarlightError

    argv = hoist_globals(list(argv if argv is not None else sys.argv[1:]))
    debug = "--debug" in argv
    if not debug:
        _quiet_warnings()
    try:
        result = app(args=argv, prog_name="starlight", standalone_mode=False)
        if result == 130:
            # Typer catches Ctrl-C itself and, outside standalone mode, returns 130 (no command returns it).
            print(INTERRUPTED, file=sys.stderr)
        return result if isinstance(result, int) else 0
    except StarlightError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as e:
        # RegistryError, matched without importing the registry (sqlmodel costs `--help` half a second):
        # if the registry package was never imported, nothing raised it.
        if isinstance(e, getattr(sys.modules.get("starcli.registry"), "RegistryError", ())):
            if debug:
                raise
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code  # type: ignore[attr-defined]
        # Click's own exceptions (typer may vendor click, so match by class name, not by import).
        kinds = {c.__name__ for c in type(e).__mro__}
        if "Exit" in kinds:
            return getattr(e, "exit_code", 0)
        if "Abort" in kinds:  # Click's form of Ctrl-C
            print(INTERRUPTED, file=sys.stderr)
            return 130
        if debug:
            raise
        if "UsageError" in kinds:
            ctx = getattr(e, "ctx", None)
            where = f"starlight {ctx.info_name} --help" if ctx is not None and ctx.parent is not None else "starlight --help"
            renamed = RENAMED_OPTIONS.get(getattr(e, "option_name", None)) if "NoSuchOption" in kinds else None
            message = f"{e.option_name} is now spelled {renamed}" if renamed else e.format_message()  # type: ignore[attr-defined]
            print(f"error: {message} (see {where})", file=sys.stderr)
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

