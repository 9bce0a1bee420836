"""The compile policy (engine/compilation.py): `--compile` runs the training step through torch.compile,
is recorded in the config and the key, never stacks, and leaves every eager config, key and bit as it was.

The compiled runs are real (inductor on this CPU, which builds C++ kernels): they take seconds each."""

from __future__ import annotations

import pytest
import torch

from starcli.engine import compilation, recipes, stacked, starlight, training
from starcli.engine.data import load_split
from starcli.errors import StarlightError, UsageError
from starcli.solutions import records


def _resolve(**kw):
    return recipes.resolve("mnist1d-mlp", width=16, epochs=2, **kw)


def test_compile_is_absent_from_eager_configs_and_false_or_off_key_as_eager():
    eager = _resolve()
    assert "compile" not in eager
    for off in ("false", "off", '"off"'):
        assert _resolve(overrides=recipes.parse_set([f"compile={off}"])) == eager


def test_true_and_the_flag_mean_the_default_mode_and_change_the_key():
    eager = _resolve()
    on = _resolve(overrides=recipes.parse_set(["compile=true"]))
    assert on["compile"] == "default"
    assert _resolve(compile_step=True) == on
    # A mode named by --set wins over the bare flag.
    graphs = _resolve(overrides=recipes.parse_set(["compile=reduce-overhead"]), compile_step=True)
    assert graphs["compile"] == "reduce-overhead"
    keys = {records.solution_key("anchor", c, 1) for c in (eager, on, graphs)}
    assert len(keys) == 3


def test_an_unknown_mode_is_one_line_naming_the_modes():
    with pytest.raises(UsageError) as e:
        _resolve(overrides=recipes.parse_set(["compile=fast"]))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("compile = ") and "fast" in msg
    assert "reduce-overhead" in msg and "max-autotune" in msg


def test_a_compiled_config_never_stacks():
    cpu = torch.device("cpu")
    assert stacked.stackable(_resolve(), cpu)
    assert not stacked.stackable(_resolve(compile_step=True), cpu)


def test_eager_is_the_function_itself():
    def fn(x):
        return x

    assert compilation.compiled(fn, _resolve()) is fn
    assert compilation.compiled(fn, None) is fn


@pytest.fixture
def split(tiny_config, home):
    return load_split("mnist1d", "train", torch.device("cpu"), cache_dir=home / "datasets")


def _flat(model):
    return torch.cat([v.detach().flatten().double() for v in model.state_dict().values()])


def test_a_compiled_anchor_trains_like_the_eager_one_and_repeats_its_own_bits(split):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager_cfg = _resolve()
    compiled_cfg = _resolve(compile_step=True)
    eager = _flat(training.fit(eager_cfg, 1, torch.device("cpu"), split))
    assert counters["stats"]["unique_graphs"] == 0
    first = _flat(training.fit(compiled_cfg, 1, torch.device("cpu"), split))
    assert counters["stats"]["unique_graphs"] > 0  # the step really went through dynamo
    again = _flat(training.fit(compiled_cfg, 1, torch.device("cpu"), split))
    assert torch.equal(first, again)  # same seed and config: the same checkpoint, compiled too
    # Same training, other kernels: equal up to rounding, not bit for bit (hence the key).
    assert torch.allclose(first, eager, rtol=1e-4, atol=1e-5)


def test_a_compiled_star_step_compiles_once_not_once_per_t(split):
    from torch._dynamo.utils import counters

    cfg = _resolve(compile_step=True)
    anchors = [training.fit(_resolve(), s, torch.device("cpu"), split).state_dict() for s in (1, 2)]
    torch._dynamo.reset()
    counters.clear()
    sampling = starlight.TSampling.parse("uniform")
    star = starlight.fit_star(cfg, anchors, 0, torch.device("cpu"), split, sampling, mu_star=1.0)
    steps = 2 * -(-len(split.x) // cfg["batch_size"])
    frames = counters["stats"]["unique_graphs"]
    # Every step draws a new t; the graphs compiled are per shape (full and last batch) and per function
    # (segment and own loss), a handful, not one per step.
    assert 0 < frames <= 8 < steps
    eager = starlight.fit_star(_resolve(), anchors, 0, torch.device("cpu"), split, sampling, mu_star=1.0)
    assert torch.allclose(_flat(star), _flat(eager), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_train_and_star_take_compile_from_the_command_line(cli, tiny_config, monkeypatch, tmp_path):
    import json

    def config_of(sid: int) -> dict:
        code, out, err = cli("show", str(sid), "--json")
        assert code == 0, err
        return json.loads(out)["config"]

    common = ["--set", "arch_kwargs.width=16", "--epochs", "1", "--device", "cpu"]
    code, _, err = cli("train", "--seed", "1-2", *common)
    assert code == 0, err
    code, out, err = cli("train", "--seed", "1", "--compile", *common, "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert row["id"] == 3 and config_of(3)["compile"] == "default"  # not the eager seed 1 (id 1)
    # A star of eager anchors is eager unless asked; --compile makes another star.
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--device", "cpu", "--json")
    assert code == 0, err
    assert "compile" not in config_of(json.loads(out)["id"])
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--device", "cpu", "--compile", "--json")
    assert code == 0, err
    sid = json.loads(out)["id"]
    assert sid == 5 and config_of(sid)["compile"] == "default"
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--device", "cpu", "--compile", "--json")
    assert code == 0 and json.loads(out)["id"] == 5  # the same request finds it registered
    # Registered answers need no compiler: a machine without one (a login node) still gets them.
    _no_compiler(monkeypatch, tmp_path)
    code, out, err = cli("train", "--seed", "1", "--compile", *common, "--json")
    assert code == 0 and [row["id"] for row in json.loads(out)] == [3], err
    code, out, err = cli("star", "--anchors", "1-2", "--epochs", "1", "--device", "cpu", "--compile", "--json")
    assert code == 0 and json.loads(out)["id"] == 5, err


def _no_compiler(monkeypatch, tmp_path) -> None:
    (tmp_path / "empty").mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)


def test_no_compiler_is_one_line_before_anything_loads_or_trains(cli, home, split, monkeypatch, tmp_path):
    from starcli.registry import open_registry

    _no_compiler(monkeypatch, tmp_path)
    assert compilation.missing_compiler("cpu") and compilation.missing_compiler("cuda")
    code, out, err = cli("train", "--compile", "--epochs", "1", "--device", "cpu", "--set", "arch_kwargs.width=8")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "C++ compiler" in err and "without --compile" in err
    assert records.query(open_registry(home)) == []  # nothing registered
    # The engine's own entry (a remote worker, the Python API) says the same, not an InductorError.
    with pytest.raises(StarlightError, match=r"C\+\+ compiler"):
        training.fit(_resolve(compile_step=True), 1, torch.device("cpu"), split)
    # Eager training needs no compiler.
    assert training.fit(_resolve(), 1, torch.device("cpu"), split) is not None
    monkeypatch.setenv("CXX", "/bin/sh")  # $CXX names the compiler, found by path
    assert compilation.missing_compiler("cpu") is None
    monkeypatch.setenv("CC", "/no/such/cc")  # a $CC that is not there does not count
    assert compilation.missing_compiler("cuda") is not None
