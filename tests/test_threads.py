"""The thread policy: one intra-op thread by default, `--threads N` and $OMP_NUM_THREADS override, applied
by every command and by every local worker."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from starcli.engine import threads

ROOT = Path(__file__).resolve().parents[1]

# Every command that computes; the test below fails if one of them is missing from the app.
COMPUTING = ["train", "register", "star", "barrier", "demo", "align", "spec", "sweep", "soup", "bma", "report"]


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    yield
    torch.set_num_threads(before)


def test_the_policy_is_the_option_then_the_environment_then_one_thread(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve(None) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.resolve(None) == 3
    assert threads.resolve(2) == 2


@pytest.mark.parametrize("command", COMPUTING)
def test_every_computing_command_applies_the_thread_option(command, cli, home, restore_threads):
    from typer.main import get_command

    from starcli.cli import app

    assert command in get_command(app).commands
    torch.set_num_threads(1)
    # The global callback runs before the command parses its own options, for every command.
    code, _, err = cli("--threads", "3", command, "--help")
    assert code == 0, err
    assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"


def test_a_training_run_uses_the_threads_asked_for(cli, tiny_config, restore_threads):
    torch.set_num_threads(2)
    code, _, err = cli("--threads", "1", "train", "--set", "arch_kwargs.width=8", "--epochs", "1", "--device", "cpu")
    assert code == 0, err
    assert torch.get_num_threads() == 1


def test_without_option_or_environment_a_command_and_a_later_torch_import_get_one_thread(home, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    script = (
        "import sys; from starcli.cli import main; main(['--home', sys.argv[1], 'list']);"
        "assert 'torch' not in sys.modules; import torch; print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "h")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"


def test_the_environment_overrides_the_default_in_a_fresh_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    script = "import sys; from starcli.cli import main; main(['--home', sys.argv[1], 'list']); import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "h")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "2"


def test_a_local_worker_takes_the_count_its_pool_gives_not_one_thread_per_core(monkeypatch, restore_threads):
    from starcli.engine import threads as thread_policy
    from starcli.runners import local

    # The pool gives its workers the count of the process that opens it (tests/test_executors.py checks
    # that end to end), which may differ from $OMP_NUM_THREADS in a library caller's process.
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(3)
    assert thread_policy.current() == 3
    torch.set_num_threads(1)
    slots: queue.Queue = queue.Queue()
    slots.put((None, "cpu"))
    local.pin_worker(slots, 3, os.getppid())
    assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"


def test_a_thread_count_below_one_is_a_usage_error(cli, home, restore_threads):
    code, _, err = cli("--threads", "0", "list")
    assert code == 2 and err.strip() == "error: --threads must be at least 1, got 0"
