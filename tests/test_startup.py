"""Commands start in about a second: timm and torchvision only for timm models, torch not for a barrier
query answered from the registry, nor for `--help`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from starcli.solutions import anchors as anchor_training

ROOT = Path(__file__).resolve().parents[1]


def run_and_report_modules(args: list[str], home: Path) -> tuple[dict, str]:
    """Run the CLI in a fresh process; return which heavy modules it imported, and its stdout."""
    script = (
        "import json, sys; from starcli.cli import main; code = main(sys.argv[1:]);"
        "heavy = ['torch', 'timm', 'torchvision', 'scipy.optimize', 'starcli.registry'];"
        "sys.stderr.write('MODULES' + json.dumps({m: m in sys.modules for m in heavy}) + '\\n'); sys.exit(code)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script, "--home", str(home), *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("MODULES")][-1]
    return json.loads(line[len("MODULES"):]), out.stdout


def test_the_barrier_module_copies_of_engine_constants_agree_with_the_engine():
    from starcli.engine import data, evaluation
    from starcli.runners import options
    from starcli.solutions import barriers, bends, landscapes, planes

    assert barriers.SPLITS == data.SPLITS and barriers.EVAL_BATCH == evaluation.EVAL_BATCH
    # One torch-free copy, not one per module: the instruments take the barrier module's.
    assert bends.SPLITS is planes.SPLITS is barriers.SPLITS and not hasattr(landscapes, "SPLITS")
    # The default SLURM time has one definition, which the command bundle shows as its default.
    import typer.main

    import starcli.cli  # noqa: F401  (loads every command module)
    from starcli.commands import app

    group = typer.main.get_command(app)
    defaults = {p.default for name in group.list_commands(None) for p in group.get_command(None, name).params
                if "--time" in getattr(p, "opts", ())}  # fmt: skip
    assert options.RunOptions().time == options.DEFAULT_TIME and defaults == {options.DEFAULT_TIME}


def test_our_architectures_are_built_without_timm_and_equal_timms_build(tmp_path):
    script = (
        "import sys, torch; from starcli import models; torch.manual_seed(3);"
        "net = models.create('mlp', num_classes=10, in_chans=1, input_size=40, width=16, batch_norm=None);"
        "assert 'timm' not in sys.modules and 'torchvision' not in sys.modules, 'timm imported';"
        "torch.save(net.state_dict(), sys.argv[1])"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ours.pt")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import timm

    from starcli.models.builders import into_timm

    into_timm()

    torch.manual_seed(3)
    reference = timm.create_model("mlp", pretrained=False, num_classes=10, in_chans=1, input_size=40, width=16)
    ours = torch.load(tmp_path / "ours.pt")
    assert ours.keys() == reference.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in reference.state_dict().items())


def test_timm_models_still_go_through_timm():
    from starcli import models

    net = models.create("resnet18", num_classes=3, in_chans=1)
    assert type(net).__module__.startswith("timm.") and net.num_classes == 3


def test_help_imports_neither_torch_nor_the_registry(tmp_path):
    modules, out = run_and_report_modules(["--help"], tmp_path / "h")
    assert "barrier" in out
    assert not modules["torch"] and not modules["starcli.registry"]


def test_a_barrier_query_answered_from_the_registry_imports_no_torch(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    code, first, err = cli("barrier", "--pair", "1", "2", "--points", "3", "--json")
    assert code == 0, err
    modules, again = run_and_report_modules(["barrier", "--pair", "1", "2", "--points", "3", "--json"], home)
    assert not modules["torch"] and not modules["timm"]
    assert json.loads(again) == json.loads(first)
    assert json.loads(again)["settings"]["align"] == "weight"  # auto resolved from the stored rows


def test_spec_and_align_of_mlps_import_no_timm(reg, home, tiny_config):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    modules, out = run_and_report_modules(["spec", "--arch", "mlp"], home)
    assert "permutation groups" in out
    assert not modules["timm"] and not modules["torchvision"] and not modules["scipy.optimize"]
    modules, out = run_and_report_modules(["align", "2", "--to", "1"], home)
    assert out.startswith("aligned solution 2 to 1")
    assert not modules["timm"] and not modules["torchvision"]


def test_an_alignment_already_registered_is_answered_without_torch(reg, home, tiny_config):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    modules, first = run_and_report_modules(["align", "2", "--to", "1", "--json"], home)
    assert modules["torch"]  # computing it needs torch
    modules, again = run_and_report_modules(["align", "2", "--to", "1", "--json"], home)
    assert not modules["torch"] and not modules["timm"]
    assert json.loads(again) == json.loads(first)
    modules, text = run_and_report_modules(["align", "2", "--to", "1"], home)
    assert text.startswith(f"already aligned solution 2 to 1 as solution {json.loads(first)['id']}")
    assert not modules["torch"]
