"""The CLI as a newcomer meets it: the workflow first in --help, usage errors before torch is imported, a missing
registry that names the folder looked in, `show` printing values, tables that fit the terminal and CSV that keeps
every digit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from starcli.reports import tables

ROOT = Path(__file__).resolve().parents[1]


def run_without_torch(args: list[str], home: Path) -> tuple[int, str, bool]:
    """Run the CLI in a fresh process; (exit code, stderr, whether torch was imported)."""
    script = (
        "import sys; from starcli.cli import main; code = main(sys.argv[1:]);"
        "sys.stderr.write('TORCH=%s\\n' % ('torch' in sys.modules)); sys.exit(code)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", script, "--home", str(home), *args], env=env, capture_output=True, text=True, timeout=120
    )
    lines = out.stderr.splitlines()
    return out.returncode, "\n".join(ln for ln in lines if not ln.startswith("TORCH=")), "TORCH=True" in lines


def test_help_lists_the_workflow_first_then_the_rest_grouped(cli):
    code, out, _ = cli("--help")
    assert code == 0
    sections = [ln.rstrip(":") for ln in out.splitlines() if ln and not ln.startswith(" ") and ln.endswith(":")]
    assert sections[sections.index("Workflow") :] == [
        "Workflow", "Solutions", "Results", "Experiments", "Instruments", "Alignment", "Moving solutions"
    ]  # fmt: skip
    commands = [ln.split()[0] for ln in out.split("Workflow:")[1].splitlines() if ln.startswith("  ")]
    assert commands[:3] == ["train", "star", "barrier"]
    from starcli.commands import common

    listed = {n for names in common.COMMAND_SECTIONS.values() for n in names}
    assert set(commands) == listed and "Other:" not in out  # every command has its section


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["train", "--seed", "5-1"], 2, "error: descending range '5-1' in seed selector; write 1-5"),
        (["train", "--recipe", "mnist1d-mpl"], 1, "error: unknown recipe 'mnist1d-mpl'; did you mean 'mnist1d-mlp'?"),
        (["sweep", "width-mnist1"], 1, "error: unknown sweep 'width-mnist1'; did you mean 'width-mnist1d'?"),
        (["sweep", "zzz"], 1, "error: unknown sweep 'zzz' (available: "),  # nothing near: no guess
    ],
    ids=["descending-seeds", "recipe-typo", "sweep-typo", "sweep-unknown"],
)
def test_usage_errors_come_before_torch_is_imported(tmp_path, args, code, message):
    got, err, torch_imported = run_without_torch(args, tmp_path / "home")
    assert (got, err.count("\n")) == (code, 0) and err.startswith(message), err
    assert not torch_imported
    assert not (tmp_path / "home").exists()  # and before the registry is made


def test_a_missing_registry_names_the_folder_it_looked_in(tmp_path, cli):
    home = tmp_path / "nowhere"
    code, out, err = cli("--home", str(home), "list")
    assert code == 0 and out == "" and f"no solutions registered yet in {home} (no registry there)" in err
    code, _, err = cli("--home", str(home), "show", "3")
    assert code == 1 and f"there is no registry in {home} yet" in err


def test_show_prints_values_not_python_reprs(reg, cli):
    import torch

    from starcli.solutions import records

    sol, _ = records.add(
        reg, {"w": torch.ones(3)}, key="k", kind="anchor", arch="mlp", arch_kwargs={"width": 4}, width=4, seed=3,
        dataset="mnist1d", recipe="mnist1d-mlp", config={"lr": 0.1}, epochs=2,
        metrics={"train_loss": 0.5, "train_acc": 90.0, "test_acc": 80.0}, device="cpu", wall_seconds=1.0, versions={},
    )  # fmt: skip
    assert cli("tag", str(sol.id), "paper")[0] == 0 and cli("tag", str(sol.id), "appendix")[0] == 0
    code, out, err = cli("show", str(sol.id))
    assert code == 0, err
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(": ") for ln in out.splitlines())}
    assert sorted(fields["tags"].split(", ")) == ["appendix", "paper"]
    assert fields["note"] == "-" and fields["anchors"] == "-"  # nothing, not None or []
    assert "None" not in out and "['" not in out
    assert json.loads(fields["metrics"])["train_acc"] == 90.0  # a mapping stays JSON


def test_csv_keeps_every_digit_of_a_float(tmp_path):
    rows = [{"pair": "9-6", "loss_barrier": 5.8e-19, "acc": 1 / 3}]
    text = tables.table_text(rows, ["pair", "loss_barrier", "acc"], "csv")
    assert text == f"pair,loss_barrier,acc\n9-6,5.8e-19,{1 / 3!r}\n"
    path = tables.write_csv(tmp_path / "b.csv", rows)
    [row] = tables.read_csv(path)
    assert float(row["loss_barrier"]) == 5.8e-19 and float(row["acc"]) == 1 / 3  # reads back to the same floats


def test_rich_tables_fit_the_terminal_and_are_not_wrapped_off_one(monkeypatch):
    rows = [{"id": i, "description": "a long description of this solution " * 3} for i in range(3)]
    monkeypatch.setenv("COLUMNS", "60")
    narrow = tables.table_text(rows, ["id", "description"], None)
    assert max(len(ln) for ln in narrow.splitlines()) <= 60
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    piped = tables.table_text(rows, ["id", "description"], None)
    assert len(piped.splitlines()) == 2 + len(rows)  # header, rule, one line a row: never wrapped
    assert tables.text_width() == tables.PIPE_WIDTH


def test_the_terminal_width_is_used_on_a_terminal(monkeypatch):
    import shutil

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((100, 40)))
    assert tables.text_width() == 100
