"""What every command shares: the global options, opening the registry, printing data and errors."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from starcli.errors import StarlightError, UsageError
from starcli.runners.options import DEFAULT_TIME  # torch-free


@dataclass
class GlobalState:
    home: str | None = None
    debug: bool = False
    threads: int | None = None
    quiet: bool = False


state = GlobalState()

# Help panels: the options most runs need come first, under "Options"; these follow.
OUTPUT, CLUSTER, DATA = "Output", "Cluster (--executor slurm | ray)", "Data"

# Options several commands share, declared once (as sqlite-utils does with its output_options).
def _device_name(name: str | None) -> str | None:
    """--device in its one spelling (devices.canonical); an empty one is a usage error, not auto."""
    if name is not None and not name.strip():
        raise UsageError("--device is empty; use auto, cpu, cuda, cuda:N or mps")
    from starcli.engine.devices import canonical  # torch-free

    return canonical(name)


DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps", callback=_device_name)
CompileOpt = typer.Option(
    False, "--compile",
    help="Compile the training step with torch.compile (pays on GPUs, not for small CPU models; part of the key). "
    "Other modes: --set compile=reduce-overhead|max-autotune.",
)
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.", rich_help_panel=OUTPUT)
CsvOpt = typer.Option(False, "--csv", help="CSV on stdout.", rich_help_panel=OUTPUT)
MdOpt = typer.Option(False, "--md", help="Markdown table on stdout.", rich_help_panel=OUTPUT)
HeldOutOpt = typer.Option(None, "--held-out", help="Held-out ids, e.g. 6-10.")
BnCalibrationOpt = typer.Option(
    "full", "--bn-calibration", help="BatchNorm re-estimation: full, or N (a fixed seeded subset of N samples)."
)
DataDirOpt = typer.Option(None, "--data-dir", help="Folder of torchvision datasets (default $STARLIGHT_DATA_DIR).", rich_help_panel=DATA)
DownloadOpt = typer.Option(False, "--download", help="Download a torchvision dataset into --data-dir.", rich_help_panel=DATA)
FormatOpt = typer.Option(None, "--format", help="Figure format: png | pdf | svg (default: the file's suffix, else png).", rich_help_panel=OUTPUT)
DpiOpt = typer.Option(None, "--dpi", help="Figure resolution in dots per inch (default 150).", rich_help_panel=OUTPUT)
ForceOpt = typer.Option(False, "--force", help="Write into --out even when it already holds files (they are replaced).", rich_help_panel=OUTPUT)


# The executor options, one bundle: a command decorated with `run_options` gets them all (or --jobs
# alone, for work that runs only here) and receives one checked `RunOptions` as its `run` argument; no
# command declares any of them itself (tests/test_layout.py).
_EXECUTOR_OPTIONS: list[tuple[str, Any, Any]] = [
    ("executor", str, typer.Option("local", "--executor", "-x", help="local | slurm | ray: where the work runs.", rich_help_panel=CLUSTER)),
    ("jobs", Optional[int], typer.Option(
        None, "--jobs", "-j",
        help="Jobs at once. local: worker processes (default one per visible GPU, else 1 = this process); "
        "slurm: array parallelism; ray: tasks in flight.", rich_help_panel=CLUSTER,
    )),
    ("partition", Optional[str], typer.Option(None, "--partition", help="slurm: the partition to submit to.", rich_help_panel=CLUSTER)),
    ("time", str, typer.Option(DEFAULT_TIME, "--time", help="slurm: time limit per job (90, 4:00:00, 1-12:00:00).", rich_help_panel=CLUSTER)),
    ("gpus_per_job", Optional[float], typer.Option(
        None, "--gpus-per-job", help="slurm/ray: GPUs per job (default 1, or 0 with --device cpu; ray: 0.5 shares).", rich_help_panel=CLUSTER
    )),
    ("slurm_cluster", str, typer.Option(
        "slurm", "--slurm-cluster", help="slurm: slurm, or local/debug to try the submission on this machine.", rich_help_panel=CLUSTER
    )),
    ("ray_address", Optional[str], typer.Option(
        None, "--ray-address", help="ray: cluster address (default $RAY_ADDRESS, else a local Ray).", rich_help_panel=CLUSTER
    )),
]
EXECUTOR_FLAGS = tuple(option.param_decls[0] for _, _, option in _EXECUTOR_OPTIONS)


def run_options(command=None, *, jobs: bool = True, cluster: bool = True):
    """Give a command the executor options and hand it one checked `RunOptions` as `run` (its last
    parameter, `run=None`). `cluster=False`: --jobs alone (work that runs on this machine only);
    `jobs=False`: no --jobs (one unit of work). The options are checked before the command's body
    runs, with no torch imported."""
    if command is None:
        return lambda f: run_options(f, jobs=jobs, cluster=cluster)
    wanted = [(n, t, o) for n, t, o in _EXECUTOR_OPTIONS if (n == "jobs" and jobs) or (n != "jobs" and cluster)]
    signature = inspect.signature(command)
    assert "run" in signature.parameters, f"{command.__name__} takes no `run`"
    params = [p for p in signature.parameters.values() if p.name != "run"]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t) for n, t, o in wanted]

    @functools.wraps(command)
    def with_run_options(*args, **kwargs):
        from starcli.runners.options import RunOptions  # torch-free

        given = {n: kwargs.pop(n) for n, _, _ in wanted}
        return command(*args, run=RunOptions(**given), **kwargs)

    with_run_options.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    with_run_options.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "run"} | {
        n: t for n, t, _ in wanted
    }
    with_run_options.executor_options = tuple(n for n, _, _ in wanted)  # type: ignore[attr-defined]
    return with_run_options


LogOpt = typer.Option(None, "--log", help="Stream each run's per-epoch loss to mlflow | tensorboard | wandb (offline).")
LogDirOpt = typer.Option(None, "--log-dir", help="Where --log writes: a folder (or MLflow tracking URI); default <home>/<tracker>.")


class PanelledCommand(TyperCommand):
    """Plain-text help (the app sets rich_markup_mode=None, so brackets in help texts print as written)
    with the options grouped by their `rich_help_panel`: Typer draws panels only in rich mode."""

    def format_options(self, ctx, formatter) -> None:
        args, panels = [], {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        for name, records in panels.items():
            if records:
                with formatter.section(name):
                    formatter.write_dl(records)


# `starlight --help`: the workflow a newcomer runs first, then the rest grouped by what it is for. A command
# not named here is listed last, under "Other".
COMMAND_SECTIONS = {
    "Workflow": ("train", "star", "barrier"),
    "Solutions": ("list", "show", "register", "doctor", "rm", "tag", "untag", "note"),
    "Results": ("barriers", "curves", "landscapes", "history"),
    "Experiments": ("demo", "sweep", "soup", "bma", "report"),
    "Instruments": ("sharpness", "plane", "curve"),
    "Alignment": ("align", "spec"),
    "Moving solutions": ("export", "import"),
}


class SectionedGroup(TyperGroup):
    """The app's command list in COMMAND_SECTIONS' order and headings (Typer groups commands in rich mode only)."""

    def list_commands(self, ctx) -> list[str]:
        order = [name for names in COMMAND_SECTIONS.values() for name in names]
        return [n for n in order if n in self.commands] + [n for n in self.commands if n not in order]

    def format_commands(self, ctx, formatter) -> None:
        commands = [(n, self.get_command(ctx, n)) for n in self.list_commands(ctx)]
        commands = [(n, c) for n, c in commands if c is not None and not c.hidden]
        if not commands:
            return
        widest = max(len(n) for n, _ in commands)
        limit = formatter.width - 6 - widest
        named = {n for names in COMMAND_SECTIONS.values() for n in names}
        for title, names in [*COMMAND_SECTIONS.items(), ("Other", ())]:
            # padded to the widest name, so every section's descriptions start in one column
            rows = [(n.ljust(widest), c.get_short_help_str(limit)) for n, c in commands if (n in names if names else n not in named)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'width-mnist1d'?' for a near miss, else nothing (difflib's closest match)."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_path(name: str) -> bool:
    from pathlib import Path

    return name.endswith(".toml") or Path(name).exists()


def check_recipe_name(name: str) -> None:
    """An unknown shipped recipe is one line, with the nearest name, before torch is imported (a path is the
    loader's to check)."""
    from starcli.engine import recipes  # torch-free at import

    if not _is_path(name) and name not in recipes.available():
        raise StarlightError(
            f"unknown recipe {name!r}{did_you_mean(name, recipes.available())} "
            f"(available: {', '.join(recipes.available())}, or a .toml path)"
        )


def check_sweep_name(name: str | None) -> None:
    """An unknown shipped sweep is one line, with the nearest name, before torch is imported."""
    if name is None or _is_path(name):
        return
    from starcli.experiments import sweep_file  # torch-free at import

    if name not in sweep_file.available():
        raise StarlightError(
            f"unknown sweep {name!r}{did_you_mean(name, sweep_file.available())} "
            f"(available: {', '.join(sweep_file.available()) or 'none'}, or a .toml path)"
        )


def home_folder() -> str:
    """The registry folder this command looks in (--home, else $STARLIGHT_HOME, else ./.starlight), for messages."""
    from starcli.registry.paths import home

    return str(home(state.home))


def registry(create: bool = True, read_only: bool = False):
    """Open (and migrate) the registry at --home / $STARLIGHT_HOME / ./.starlight; read_only for commands
    that only read (list, show, doctor): they never wait for a writer and work on a read-only registry."""
    from starcli.registry import open_registry

    return open_registry(state.home, create=create, read_only=read_only)


def existing_registry(read_only: bool = False):
    """The registry for commands that only act on what is registered: a failing one in an empty home
    must leave no new registry.db behind."""
    reg = registry(create=False, read_only=read_only)
    if reg is None:
        raise StarlightError(f"there is no registry in {home_folder()} yet (train some solutions first, or pass --home)")
    return reg


def reporter(enabled: bool = True):
    """Progress on stderr: a rich display on a terminal, plain periodic lines elsewhere (SLURM logs,
    nohup), messages only under --quiet; or a silent one."""
    from starcli.progress import Reporter, for_stderr

    return for_stderr(quiet=state.quiet) if enabled else Reporter()


def echo_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def one_format(**flags: bool) -> str | None:
    chosen = [name for name, on in flags.items() if on]
    if len(chosen) > 1:
        raise UsageError(f"choose one output format, not {' and '.join('--' + c for c in chosen)}")
    return chosen[0] if chosen else None


def ids(text: str, what: str = "id", unique: bool = False) -> list[int]:
    from starcli.selectors import parse_ids

    return parse_ids(text, what, unique=unique)


def check_out_folder(out, force: bool) -> None:
    """An --out folder is checked before any work: an existing file, or a folder that already holds files
    (which the command would overwrite) without --force, is a usage error; its parent must be writable."""
    from pathlib import Path

    from starcli.reports.figures import check_writable_folder

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is an existing file; name a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise UsageError(f"--out {folder} already holds files that would be overwritten; choose an empty folder or pass --force")
    check_writable_folder(folder, "--out")


def device(name: str) -> str:
    """Check --device before anything is opened: a cached answer must not hide `--device tpu`."""
    from starcli.engine import devices

    devices.check(name)
    return name


def tracking(reg, log: str | None, log_dir: str | None):
    """The live tracker `--log` asks for (checked before any training starts), or None. Its runs are grouped
    by the command that runs them: the sweep's name for `sweep`, else the command's (train, star)."""
    if log is None:
        return None
    from starcli.solutions import tracking as tr

    return tr.live(log, log_dir or tr.default_dest(reg, log), group=_group())


def _group() -> str | None:
    import click
    from pathlib import Path

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    name = ctx.params.get("name") if ctx.info_name == "sweep" else None
    return f"sweep {Path(name).stem}" if name else ctx.info_name


def solution_ids(text: str, what: str = "id", unique: bool = False) -> list[int]:
    """Solution ids from plain ids (`1-5`) or attributes (`seed=1-5,recipe=mnist1d-mlp`); `unique`: a
    solution listed twice is a usage error."""
    from starcli.selectors import is_attribute_selector, parse_ids

    if not is_attribute_selector(text):
        return parse_ids(text, what, unique=unique)
    from starcli.solutions import records

    reg = registry(create=False)
    if reg is None:
        raise UsageError(f"{what} selector {text!r} names attributes, but there is no registry here yet")
    return records.select_ids(reg, text, what)


def flatten_metrics(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k != "metrics"}
        row.update(r.get("metrics") or {})
        rows.append(row)
    return rows
