"""The CLI's conventions: --version, global options after the command, --quiet, option panels in
--help, progress with an ETA (plain lines off a terminal), a resumed run's progress starting where it
resumed, Ctrl-C saying a rerun resumes, and listing sweeps without torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import starcli
from starcli.cli import hoist_globals
from starcli.progress import LogReporter, PlainReporter, RichReporter, for_stderr

ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "STARLIGHT_HOME": str(home), "OMP_NUM_THREADS": "1"}


def test_version_prints_the_package_version(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out == f"starlight {starcli.__version__}\n"


def test_the_version_is_pyprojects_read_from_the_installed_metadata_and_py_typed_ships():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert starcli.__version__ == project["project"]["version"]
    assert (ROOT / "starcli" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["starcli"]


def test_global_options_after_the_command_are_moved_in_front_and_nothing_after_double_dash():
    assert hoist_globals(["list", "--home", "H", "--kind", "star", "--quiet"]) == ["--home", "H", "--quiet", "list", "--kind", "star"]
    assert hoist_globals(["--home", "H", "list", "--debug"]) == ["--home", "H", "--debug", "list"]
    assert hoist_globals(["show", "3", "--home=H"]) == ["--home=H", "show", "3"]
    assert hoist_globals(["show", "--", "--debug"]) == ["show", "--", "--debug"]


def test_home_given_after_the_command_is_the_registry_used(cli, tmp_path):
    other = tmp_path / "other"
    code, out, err = cli("doctor", "--home", str(other), "--json")
    assert code == 0, err
    import json

    assert json.loads(out)["home"] == str(other)  # not $STARLIGHT_HOME


def test_quiet_shows_messages_but_no_progress_display(capsys):
    rep = for_stderr(quiet=True)
    assert type(rep) is LogReporter
    task = rep.task("seed 1", 10)
    task.advance(5, loss=0.5)
    task.done()
    rep.log("seed 1: solution 1")
    assert capsys.readouterr().err == "seed 1: solution 1\n"


def test_off_a_terminal_progress_is_plain_periodic_lines_with_an_eta(capsys):
    now = [0.0]
    rep = PlainReporter(interval=10, clock=lambda: now[0])
    task = rep.task("seed 1", 10)
    for step in range(1, 5):
        now[0] = 10.0 * step
        task.advance(loss=1.0 / step)
    task.done()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "seed 1: started (10 steps)"
    # after 2 steps in 20 s, 8 steps left at 10 s each
    assert lines[2] == "seed 1: 2/10 (0:20 elapsed, ETA 1:20)  loss 0.5"
    assert lines[-1] == "seed 1: 10/10 (0:40 elapsed)  loss 0.25 done"
    assert len(lines) == 6  # start, one line per 10 s, done


def test_the_rich_bar_of_a_resumed_task_starts_where_it_resumed_and_has_an_eta():
    rep = RichReporter()
    rep.task("seed 1", 400, completed=120)
    (t,) = rep.progress.tasks
    assert t.completed == 120 and "resumed at 120" in t.description
    assert any(type(c).__name__ == "TimeRemainingColumn" for c in rep.progress.columns)


def test_an_interrupted_training_resumes_and_its_progress_says_where(reg, tiny_config, capsys, monkeypatch):
    monkeypatch.setenv("STARLIGHT_RESUME_EVERY_S", "0")  # a file every epoch: the stop falls after one
    from starcli.engine import data, training
    from starcli.engine.loop import ResumeFile
    from starcli.solutions import anchors, records
    from starcli.solutions.anchors import anchor_key

    resume = ResumeFile(reg.home / "runs" / anchor_key(tiny_config, 1)[:24])
    import torch

    cpu = torch.device("cpu")
    split = data.load_split(tiny_config["dataset"], "train", cpu, cache_dir=records.dataset_cache(reg))

    def stop_after_two(epoch, loss, acc):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.fit(tiny_config, 1, cpu, split, resume, on_epoch=stop_after_two)
    assert resume.epoch() == 2
    anchors.train(reg, tiny_config, [1], device="cpu", reporter=PlainReporter(interval=0))
    err = capsys.readouterr().err
    assert "seed 1: started, resumed at 2/3" in err and "seed 1: 3/3" in err


@pytest.mark.slow
def test_ctrl_c_says_that_rerunning_the_command_resumes(tmp_path, mnist1d_cache):
    home = tmp_path / "h"
    (home / "datasets").mkdir(parents=True)
    (home / "datasets" / "mnist1d.npz").write_bytes(mnist1d_cache.read_bytes())
    # A resume file every epoch: the wait below for the first one is short.
    env = {**_env(home), "STARLIGHT_PROGRESS_INTERVAL": "0", "STARLIGHT_RESUME_EVERY_S": "0"}
    # Many epochs, so that the interrupt lands mid-run however fast or loaded the machine is.
    # The child gets Ctrl-C's default action even when the tests run as a background job, which starts
    # with SIGINT ignored (and Python then leaves it ignored, as `nohup starlight train &` should).
    proc = subprocess.Popen([sys.executable, "-m", "starcli", "train", "--seed", "1", "--epochs", "4000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any((home / "runs").glob("*/*.safetensors")):
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]  # still training when interrupted
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err


def test_help_groups_cluster_and_output_options_in_their_own_sections(cli):
    code, out, _ = cli("train", "--help")
    assert code == 0
    sections = {}
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif line.strip().startswith("-") and sections:
            current.append(line.split()[0].rstrip(","))
    assert "--partition" in sections["Cluster (--executor slurm | ray)"] and "--partition" not in sections["Options"]
    assert sections["Output"] == ["--json"] and "--recipe" in " ".join(sections["Options"]) + " -r --recipe"
    code, out, _ = cli("--help")
    assert "--install-completion" in out and "--version" in out and "--quiet" in out


def test_listing_the_shipped_sweeps_imports_no_torch(tmp_path):
    code = (
        "import sys\nfrom starcli.cli import main\nrc = main(['sweep'])\n"
        "assert rc == 0\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "h"), capture_output=True, text=True, check=True).stdout
    assert "width-mnist1d" in out and "MNIST-1D MLP" in out and out.rstrip().endswith("NO-TORCH")


# --- one spelling per concept -------------------------------------------------------------------

# Spellings that once named a concept that has one name now: the name to use instead.
RETIRED_OPTIONS = {
    "--output": "--out", "--outdir": "--out", "--out-dir": "--out", "--aligned": "--align", "--alignment": "--align",
    "--align-method": "--align", "--split-names": "--splits", "--n-samples": "--samples", "--num-samples": "--samples",
    "--seeds": "--seed", "--workers": "--jobs", "--n-jobs": "--jobs", "--plot-format": "--format",
    "--no-align": "--align none", "--align-anchors": "--realign", "--no-align-anchors": "--no-realign",
}


def command_options() -> dict[str, list[tuple[str, list[str]]]]:
    """Every visible option of every command: {command: [(long name, all its spellings)]}."""
    import typer.main

    import starcli.cli  # noqa: F401  (loads every command module)
    from starcli.commands import app

    group = typer.main.get_command(app)
    out = {}
    for name in group.list_commands(None):
        cmd = group.get_command(None, name)
        out[name] = [
            (max(p.opts, key=len), list(p.opts) + list(p.secondary_opts))
            for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden
        ]  # fmt: skip
    return out


def test_no_command_spells_a_concept_the_way_another_retired():
    found = [(cmd, s) for cmd, opts in command_options().items() for _, spellings in opts for s in spellings if s in RETIRED_OPTIONS]
    assert not found, [f"{cmd} {s}: use {RETIRED_OPTIONS[s]}" for cmd, s in found]


def test_an_option_has_the_same_short_flag_in_every_command_that_has_it():
    shorts: dict[str, dict[str, str | None]] = {}
    for cmd, opts in command_options().items():
        for long, spellings in opts:
            short = next((s for s in spellings if len(s) == 2), None)
            shorts.setdefault(long, {})[cmd] = short
    differ = {long: by_cmd for long, by_cmd in shorts.items() if len(set(by_cmd.values())) > 1}
    assert not differ, differ


def test_pair_kinds_are_spelled_with_plain_hyphens_in_every_output():
    """JSON and CSV say star-held-out; the markdown, captions and legends must say it the same way."""
    import pathlib

    import starcli

    root = pathlib.Path(starcli.__file__).parent
    odd = [str(p.relative_to(root)) for p in root.rglob("*.py") if "–held-out" in p.read_text(encoding="utf-8")]
    assert not odd, odd


def _option(command: str, name: str):
    import typer.main

    import starcli.cli  # noqa: F401
    from starcli.commands import app

    cmd = typer.main.get_command(app).get_command(None, command)
    return next(p for p in cmd.params if name in getattr(p, "opts", ()))


def test_alignment_before_comparison_is_one_valued_option_auto_weight_none_wherever_it_appears():
    having = [cmd for cmd, opts in command_options().items() if any(long == "--align" for long, _ in opts)]
    assert {"barrier", "soup"} <= set(having), having
    # The listings' --align is a filter over stored rows (which alignment they were measured with), not an
    # alignment to perform: no default, and its help says so.
    filters = [cmd for cmd in having if _option(cmd, "--align").help.startswith("Only rows")]
    assert set(filters) == {"barriers", "curves"}, filters
    for cmd in filters:
        assert _option(cmd, "--align").default is None, cmd
    for cmd in set(having) - set(filters):
        option = _option(cmd, "--align")
        assert not option.is_flag and option.default == "auto", cmd
        assert "auto" in option.help and "weight" in option.help and "none" in option.help, cmd


def test_the_stars_per_epoch_re_permutation_is_its_own_option_realign(cli):
    option = _option("star", "--realign")
    assert option.is_flag and option.secondary_opts == ["--no-realign"]
    assert not any("align" in s and "realign" not in s for s in option.opts + option.secondary_opts)


@pytest.mark.parametrize("args, new", [
    (("soup", "--anchors", "1-2", "--no-align"), "--align none"),
    (("star", "--anchors", "1,2", "--align-anchors"), "--realign"),
    (("star", "--anchors", "1,2", "--no-align-anchors"), "--no-realign"),
])
def test_a_retired_spelling_is_one_line_naming_the_new_one(cli, args, new):
    code, out, err = cli(*args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"{args[-1]} is now spelled {new}" in err


def test_a_bad_align_choice_of_soup_is_one_line(cli):
    code, _, err = cli("soup", "--anchors", "1-2", "--align", "bogus")
    assert code == 2 and err.count("\n") == 1 and "auto, weight, none" in err


def test_a_sweep_files_old_align_anchors_key_reads_as_realign():
    from starcli.errors import UsageError
    from starcli.experiments import sweep_file

    table = {"recipe": "mnist1d-mlp", "grid": {"widths": [8], "anchor_seeds": "1-2", "held_out_seeds": "3"}}
    assert sweep_file.parse({**table, "star": {"align_anchors": False}}).star == {"realign": False}
    assert sweep_file.parse({**table, "star": {"realign": True}}).star == {"realign": True}
    with pytest.raises(UsageError, match="both align_anchors and realign"):
        sweep_file.parse({**table, "star": {"align_anchors": True, "realign": True}})


def test_out_is_the_output_path_spelled_o_everywhere_and_split_is_one_split_splits_a_list():
    for cmd, opts in command_options().items():
        for long, spellings in opts:
            if long == "--out":
                assert "-o" in spellings, cmd
            else:
                assert "-o" not in spellings, f"{cmd} {long} takes -o, which means --out"
            if long == "--split":
                assert not _option(cmd, "--split").multiple and "one split" in _option(cmd, "--split").help, cmd
            if long == "--splits":
                assert "list" in _option(cmd, "--splits").help, cmd


# One name per concept in the code too. A name listed here once named two things (or a concept the CLI
# spells otherwise); it may be defined once at most, outside the commands (a command's function is named
# after the command: `commands/solutions.py:train` is `starlight train`).
ONE_DEFINITION = ("train", "star_settings", "fan_out")
# Python names retired for the CLI's spelling. Stored keys keep their first name ("align_anchors" in a
# star's config is part of its key), so strings are allowed: only identifiers are checked.
RETIRED_NAMES = {"align_anchors": "realign"}


def _package_trees():
    import ast

    root = Path(starcli.__file__).parent
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root), ast.parse(path.read_text(encoding="utf-8"))


def test_a_concept_has_one_python_name_defined_once_outside_the_commands():
    import ast

    defined: dict[str, list[str]] = {}
    for rel, tree in _package_trees():
        if rel.parts[0] == "commands":
            continue
        for node in tree.body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            for name in names:
                if name in ONE_DEFINITION:
                    defined.setdefault(name, []).append(str(rel))
    twice = {name: where for name, where in defined.items() if len(where) > 1}
    assert not twice, twice
    assert "train" in defined  # the guard looks where definitions are (anchors.train)


def test_no_python_identifier_uses_a_retired_spelling():
    import ast

    found = []
    for rel, tree in _package_trees():
        for node in ast.walk(tree):
            name = (
                node.name if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                node.arg if isinstance(node, (ast.arg, ast.keyword)) else
                node.attr if isinstance(node, ast.Attribute) else
                node.id if isinstance(node, ast.Name) else None
            )  # fmt: skip
            if name in RETIRED_NAMES:
                found.append(f"{rel}:{node.lineno}: {name} (use {RETIRED_NAMES[name]})")
    assert not found, found
