"""The precision policy (engine/precision.py): bf16 + channels_last for convolutional networks on CUDA,
recorded in the config; on the CPU every config, key and checkpoint byte is what it was before it."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
import torch

from starcli.engine import evaluation, interpolation, precision, recipes, stacked, training
from starcli.engine.data import Split, load_split
from starcli.errors import UsageError

# config_hash of every shipped recipe as resolved before the policy existed (main at b5420e5): the keys
# of every CPU solution already registered, and of the README's documented numbers.
KEYS_BEFORE = {
    "cifar10-resnet18": "9807815599004a8a1ae7eaf0ddc36024476733d42b895b425368deb8e367c7db",
    "cifar10-vgg11": "4b33e1ece1b8eb3e040d6615d4ca27de45ff1d7c0b8dd067b64594063a07881a",
    "cifar10-wrn-22": "f648748bbc6f5197c25816ffb14884058b5e2f0f4ca282034c9edca7f1747d53",
    "cifar100-resnet18": "299cd101b3faa83e55054190d4b436cb11151d70e11853d5627ee12833f8ff70",
    "digits-mlp": "6dafde14337948ffb719b623ddc91fd6a2be24e829097db53c23a611276762f7",
    "linreg-linear2": "5be80c34998f5c3a268e7a2b841da37e26088a2f159a6abe9dcc954307702412",
    "mnist-mlp": "88e8786f5e7b787e120d33947d57d08e3a3c460b930d0473bc42fbd7d103aee4",
    "mnist1d-cnn": "283c52f1e695d144935adf2b8163c4edac3bda48320cfe50d53866cbcdfaa7a8",
    "mnist1d-mlp": "db2b78fd941a1598fd54d1a84a14747b3dcc2dc5dfbfbc0156536eeb5179e75d",
}


def test_policy_is_a_pure_function_of_arch_shape_and_device():
    assert precision.defaults("cifar_resnet18", (3, 32, 32), "cuda") == {"precision": "bf16", "memory_format": "channels_last"}
    assert precision.defaults("wrn", (3, 32, 32), "cuda") == {"precision": "bf16", "memory_format": "channels_last"}
    # A 1-D convnet: bf16, but channels_last is a layout of 4-D tensors only.
    assert precision.defaults("mnist1d_cnn", (40,), "cuda") == {"precision": "bf16"}
    # MLPs stay fp32 everywhere, and no device but CUDA changes anything.
    assert precision.defaults("mlp", (1, 28, 28), "cuda") == {}
    for device in ("cpu", "mps"):
        assert precision.defaults("cifar_resnet18", (3, 32, 32), device) == {}


@pytest.mark.parametrize("device", [None, "cpu", "auto"])
def test_cpu_configs_keep_their_keys(device):
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("auto is CUDA here")
    for name, key in KEYS_BEFORE.items():
        config = recipes.resolve(name, device=device)
        assert "memory_format" not in config and config["precision"] == "fp32"
        assert recipes.config_hash(config) == key, name


def _digest(model: torch.nn.Module) -> str:
    return hashlib.sha256(b"".join(v.contiguous().numpy().tobytes() for v in model.state_dict().values())).hexdigest()


def test_cpu_checkpoint_bits_unchanged(monkeypatch):
    """The policy leaves a CPU run's bits as they were before it existed. The reference is computed here, on
    this machine and library build, the old way (the policy's hooks replaced by what training did without
    them): a digest recorded on another CPU would differ wherever MKL or oneDNN pick other kernels."""
    torch.set_num_threads(1)
    config = recipes.resolve("mnist1d-mlp", epochs=2, device="cpu")
    dev = torch.device("cpu")
    split = load_split("mnist1d", "train", dev)
    with_policy = _digest(training.fit(config, 1, dev, split))
    assert _digest(training.fit(config, 1, dev, split)) == with_policy  # deterministic here, so comparable
    with monkeypatch.context() as m:
        m.setattr(precision, "autocast", lambda device, config: contextlib.nullcontext())
        m.setattr(precision, "prepare_model", lambda model, config, device: model)
        m.setattr(precision, "inputs", lambda x, config: x)
        before_policy = _digest(training.fit(config, 1, dev, split))
    assert with_policy == before_policy


def test_cuda_defaults_are_recorded_and_explicit_settings_win():
    # Resolving for CUDA needs no GPU: the policy only reads the device's type.
    config = recipes.resolve("cifar10-resnet18", device="cuda")
    assert (config["precision"], config["memory_format"]) == ("bf16", "channels_last")
    assert recipes.config_hash(config) != KEYS_BEFORE["cifar10-resnet18"]  # part of the key
    explicit = recipes.resolve("cifar10-resnet18", device="cuda:0", overrides={"precision": "fp32", "memory_format": "contiguous"})
    assert (explicit["precision"], explicit["memory_format"]) == ("fp32", "contiguous")
    only_fp32 = recipes.resolve("cifar10-resnet18", device="cuda", overrides={"precision": "fp32"})
    assert (only_fp32["precision"], only_fp32["memory_format"]) == ("fp32", "channels_last")
    # MLPs on CUDA: exactly the CPU config.
    assert recipes.config_hash(recipes.resolve("mnist1d-mlp", device="cuda")) == KEYS_BEFORE["mnist1d-mlp"]
    cnn1d = recipes.resolve("mnist1d-cnn", device="cuda")
    assert cnn1d["precision"] == "bf16" and "memory_format" not in cnn1d


def test_channels_last_needs_image_inputs():
    with pytest.raises(UsageError, match="memory_format = channels_last .*needs image inputs"):
        recipes.resolve("mnist1d-cnn", overrides={"memory_format": "channels_last"})
    with pytest.raises(UsageError, match="memory_format must be contiguous or channels_last"):
        recipes.resolve("cifar10-resnet18", overrides={"memory_format": "nhwc"})


def test_stacking_refuses_what_it_cannot_stack_bit_identically():
    mlp = recipes.resolve("digits-mlp")
    assert stacked.stackable(mlp, torch.device("cpu"))
    assert not stacked.stackable(dict(mlp, memory_format="channels_last"), torch.device("cpu"))
    assert not stacked.stackable(dict(mlp, precision="bf16"), torch.device("cuda"))


def test_layout_and_autocast_apply_on_cuda_only():
    nhwc = {"memory_format": "channels_last", "precision": "bf16"}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.channels_last(nhwc, cuda) and not precision.channels_last(nhwc, cpu)
    assert not precision.channels_last({"memory_format": "contiguous"}, cuda) and not precision.channels_last(None, cuda)
    x = torch.randn(2, 3, 4, 4)
    assert precision.inputs(x, nhwc) is x  # on the CPU: as it is
    assert isinstance(precision.autocast(cpu, nhwc), type(precision.autocast(cpu, None)))


def test_a_cuda_config_runs_every_path_on_cpu_with_the_same_numbers():
    """A config resolved for CUDA (bf16, channels_last) trained, evaluated, BN-recalibrated and
    interpolated on the CPU: the CPU computes it in fp32 and contiguous, so the bytes equal the CPU
    config's (the key differs; the bits do not)."""
    torch.set_num_threads(1)
    base = recipes.resolve("cifar10-resnet18", epochs=1, batch_size=32, width=4)
    gpu = recipes.resolve("cifar10-resnet18", epochs=1, batch_size=32, width=4, device="cuda")
    assert gpu["memory_format"] == "channels_last"
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
    dev = torch.device("cpu")
    a = training.fit(base, 1, dev, split)
    b = training.fit(gpu, 1, dev, split)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    evaluation.recalibrate_bn(a, split.x, config=base)
    evaluation.recalibrate_bn(b, split.x, config=gpu)
    assert evaluation.metrics(a, {"train": (split.x, split.y)}, config=base) == evaluation.metrics(
        b, {"train": (split.x, split.y)}, config=gpu
    )
    curves = []
    for config in (base, gpu):
        line = interpolation.LineEvaluator(
            config["arch"], config["arch_kwargs"], dev, {"train": (split.x, split.y)}, split.x, config=config
        )
        curves.append(line.curve(a.state_dict(), b.state_dict(), [0.5])["train"]["loss"])
    assert curves[0] == curves[1]
