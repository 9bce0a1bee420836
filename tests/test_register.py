"""Importing outside checkpoints: safetensors and plain state dicts only, loaded strictly."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from starcli import models
from starcli.errors import StarlightError
from starcli.solutions import imports, records

KW = {"width": 16}


def _mlp_state():
    torch.manual_seed(0)
    return models.create("mlp", num_classes=10, in_chans=1, input_size=40, width=16).state_dict()


@pytest.fixture
def home_with_data(home, mnist1d_cache):
    import shutil

    (home / "datasets").mkdir(parents=True)
    shutil.copy(mnist1d_cache, home / "datasets" / "mnist1d.npz")
    return home


def test_register_a_safetensors_file(reg, home_with_data, tmp_path):
    path = tmp_path / "net.safetensors"
    save_file(_mlp_state(), str(path))
    sol, created = imports.register(reg, path, "mlp", "mnist1d", arch_kwargs=KW, seed=3, device="cpu")
    assert created and sol.kind == "external" and sol.width == 16 and sol.seed == 3
    assert 0 <= sol.metrics["train_acc"] <= 100
    loaded = records.state_dict(reg, sol)
    assert all(torch.equal(loaded[k], v) for k, v in _mlp_state().items())


def test_register_a_pt_state_dict_under_state_dict_with_module_prefix(reg, home_with_data, tmp_path):
    path = tmp_path / "net.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _mlp_state().items()}, "epoch": 3}, path)
    sol, _ = imports.register(reg, path, "mlp", "mnist1d", arch_kwargs=KW, device="cpu")
    assert sol.kind == "external"


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickle_that_is_not_a_plain_state_dict_is_refused_without_running_it(reg, home_with_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": Boom()}, f)
    with pytest.raises(StarlightError, match="weights_only"):
        imports.register(reg, path, "mlp", "mnist1d", arch_kwargs=KW, device="cpu")
    assert not (tmp_path / "PWNED").exists()
    assert records.query(reg) == []


def test_a_checkpoint_that_does_not_fit_lists_missing_and_unexpected_keys(reg, home_with_data, tmp_path):
    state = _mlp_state()
    state["extra.weight"] = torch.ones(1)
    del state["layers.1.bias"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(StarlightError, match=r"missing keys layers\.1\.bias.*unexpected keys extra\.weight"):
        imports.register(reg, path, "mlp", "mnist1d", arch_kwargs=KW, device="cpu")
    assert records.query(reg) == []


def test_a_shape_mismatch_is_a_clear_error(reg, home_with_data, tmp_path):
    path = tmp_path / "wide.safetensors"
    save_file(_mlp_state(), str(path))
    with pytest.raises(StarlightError, match="does not fit"):
        imports.register(reg, path, "mlp", "mnist1d", arch_kwargs={"width": 32}, device="cpu")


def test_cli_register_bad_file_is_one_line_and_exit_1(home_with_data, cli, tmp_path):
    code, out, err = cli("register", str(tmp_path / "nope.pt"), "--arch", "mlp", "--dataset", "mnist1d")
    assert code == 1 and err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
