"""Stacked training: every seed bit-identical to `training.fit`, the reference it replaces."""

import pytest
import torch

from starcli.engine import data, loop, recipes, stacked, training
from starcli.errors import StarlightError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    # Bit-identity is a claim about one fixed kernel configuration; the project's CPU runs use one thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split(mnist1d_cache):
    """The first 1000 MNIST-1D training samples: seconds per run, real data."""
    x, y = data.load("mnist1d", "train", cache_dir=mnist1d_cache.parent)
    return data.Split(x[:1000], y[:1000])


def config(**overrides):
    return recipes.resolve("mnist1d-mlp", width=32, overrides={"epochs": 3, **overrides})


def state_bytes(model):
    return {k: v.detach().contiguous().numpy().tobytes() for k, v in model.state_dict().items()}


def fit_with_losses(cfg, seed, split, resume=None):
    losses = []
    model = training.fit(cfg, seed, CPU, split, resume, on_epoch=lambda e, loss, acc: losses.append((e, loss, acc)))
    return model, losses


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"arch_kwargs.batch_norm": True},
        {"arch_kwargs.depth": 2, "arch_kwargs.batch_norm": True, "optimizer": "adamw", "lr": 1e-3},
        {"optimizer": "adam", "lr": 1e-3, "label_smoothing": 0.1},
    ],
    ids=["sgd", "batchnorm", "deep-bn-adamw", "adam-label-smoothing"],
)
def test_each_stacked_seed_is_bit_identical_to_fit(split, overrides):
    cfg = config(**overrides)
    seeds = [1, 2, 7, 3]
    losses = {s: [] for s in seeds}
    runs = stacked.fit_stacked(cfg, seeds, CPU, split, on_epoch=lambda s, e, loss, acc: losses[s].append((e, loss, acc)))
    assert [r.seed for r in runs] == seeds and all(r.error is None for r in runs)
    for run in runs:
        reference, reference_losses = fit_with_losses(cfg, run.seed, split)
        assert state_bytes(run.model) == state_bytes(reference), f"seed {run.seed}"
        assert losses[run.seed] == reference_losses
        assert all(0 < acc < 100 for _, _, acc in reference_losses)  # a real accuracy, not None on both sides
    # Different seeds really are different networks (the comparison above is not trivially true).
    assert state_bytes(runs[0].model) != state_bytes(runs[1].model)


def test_the_stacked_network_is_the_one_seed_network(split):
    cfg = config(**{"arch_kwargs.batch_norm": True})
    run = stacked.fit_stacked(cfg, [4], CPU, split)[0]
    assert type(run.model).__name__ == "MLP" and run.model.training
    assert int(run.model.layers[2].num_batches_tracked) == 3 * len(loop.batches(1000, 128, torch.Generator()))


class Interrupted(Exception):
    pass


def interrupt_at(seed, epoch):
    def on_epoch(s, e, loss, acc):
        if (s, e) == (seed, epoch):
            raise Interrupted

    return on_epoch


def test_an_interrupted_stacked_run_resumes_to_fit_s_uninterrupted_weights(split, tmp_path, monkeypatch):
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "0")  # a file every epoch: the interruption falls after one
    cfg = config(epochs=4, **{"arch_kwargs.batch_norm": True})
    seeds = [1, 2, 3]
    files = [loop.ResumeFile(tmp_path / f"seed{s}") for s in seeds]
    # Stopped while reporting seed 1's second epoch: seed 1 has saved epoch 2, seeds 2 and 3 only epoch 1,
    # so the resumed run continues from two different epochs.
    with pytest.raises(Interrupted):
        stacked.fit_stacked(cfg, seeds, CPU, split, files, on_epoch=interrupt_at(1, 2))
    from safetensors import safe_open

    def saved_epoch(f):
        with safe_open(str(f.tensors), framework="pt") as h:
            return int(h.metadata()["epoch"])

    assert [saved_epoch(f) for f in files] == [2, 1, 1]
    runs = stacked.fit_stacked(cfg, seeds, CPU, split, files)
    for run in runs:
        assert state_bytes(run.model) == state_bytes(training.fit(cfg, run.seed, CPU, split)), f"seed {run.seed}"


@pytest.mark.parametrize("overrides", [{}, {"optimizer": "adamw", "lr": 1e-3}], ids=["sgd", "adamw"])
def test_resume_files_are_fit_s_own_format_in_both_directions(split, tmp_path, overrides, monkeypatch):
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "0")
    cfg = config(epochs=4, **overrides)
    seeds = [5, 6]
    reference = {s: state_bytes(training.fit(cfg, s, CPU, split)) for s in seeds}
    # Begun stacked, finished one seed at a time by fit.
    files = [loop.ResumeFile(tmp_path / "a" / str(s)) for s in seeds]
    with pytest.raises(Interrupted):
        stacked.fit_stacked(cfg, seeds, CPU, split, files, on_epoch=interrupt_at(6, 2))
    for s, f in zip(seeds, files):
        assert state_bytes(training.fit(cfg, s, CPU, split, f)) == reference[s]
    # Begun by fit, finished stacked.
    files = [loop.ResumeFile(tmp_path / "b" / str(s)) for s in seeds]
    for s, f in zip(seeds, files):
        with pytest.raises(Interrupted):
            training.fit(cfg, s, CPU, split, f, on_epoch=lambda e, loss, acc, s=s: interrupt_at(s, 3)(s, e, loss, acc))
    runs = stacked.fit_stacked(cfg, seeds, CPU, split, files)
    assert [state_bytes(r.model) for r in runs] == [reference[s] for s in seeds]


def test_a_diverging_seed_stops_alone_with_fit_s_error(split):
    # A constant lr of 20 blows most seeds up in epoch 2, at a step that depends on the seed; seed 6
    # survives. fit is the reference for which seed fails where, and the others must not notice.
    cfg = config(epochs=2, lr=20.0, schedule="constant")
    seeds = [3, 6, 1]
    expected = {}
    for s in seeds:
        try:
            expected[s] = state_bytes(training.fit(cfg, s, CPU, split))
        except StarlightError as e:
            expected[s] = str(e)
    diverged = [s for s in seeds if isinstance(expected[s], str)]
    assert 0 < len(diverged) < len(seeds), f"precondition: some but not all seeds diverge ({expected})"
    runs = stacked.fit_stacked(cfg, seeds, CPU, split)
    for run in runs:
        if isinstance(expected[run.seed], str):
            assert run.model is None and str(run.error) == expected[run.seed]
        else:
            assert run.error is None and state_bytes(run.model) == expected[run.seed]


def stacks_exactly_here(cfg, seeds: int, samples: int = 512) -> bool:
    """The self-test's question answered directly: do stacked seeds train to fit's bytes on this machine,
    on a synthetic split of the dataset's shape?"""
    info = data.info(cfg["dataset"])
    g = torch.Generator().manual_seed(11)
    split = data.Split(torch.randn(samples, *info.shape, generator=g), torch.randint(0, info.num_classes, (samples,), generator=g))
    cfg = dict(cfg, epochs=2)
    runs = stacked.fit_stacked(cfg, list(range(1, seeds + 1)), CPU, split)
    return all(r.model is not None and state_bytes(r.model) == state_bytes(training.fit(cfg, r.seed, CPU, split)) for r in runs)


def test_the_self_test_agrees_with_a_direct_comparison_and_catches_an_inexact_formulation(monkeypatch):
    # Whether a formulation is exact depends on the CPU's kernels (MKL and oneDNN pick them by instruction
    # set), so the self-test is checked against a comparison made here, never against one machine's answer.
    for cfg, seeds in [(config(), 2), (config(**{"arch_kwargs.batch_norm": True}), 8)]:
        assert stacked.stacking_is_exact(cfg, CPU, seeds=seeds) == stacks_exactly_here(cfg, seeds)

    # bmm's own backward computes the weight gradient as xᵀ·grad (then transposed), fit's addmm as
    # gradᵀ·x: the same sums rounded in another order, which is inexact on most CPUs, not all.
    def autograd_linear(x, weight, bias):
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    with monkeypatch.context() as m:
        m.setattr(stacked._StackedLinear, "apply", autograd_linear)
        assert stacked.stacking_is_exact(config(), CPU) == stacks_exactly_here(config(), 2)

    # A formulation off by one ulp in every output is inexact on every CPU: the self-test must say so.
    real = stacked._StackedLinear.apply

    def one_ulp_off(x, weight, bias):
        out = real(x, weight, bias)
        return out + (torch.nextafter(out.detach(), torch.full_like(out, float("inf"))) - out.detach())

    monkeypatch.setattr(stacked._StackedLinear, "apply", one_ulp_off)
    assert not stacks_exactly_here(config(), 2)
    assert not stacked.stacking_is_exact(config(), CPU)


def test_only_plain_chains_stack():
    assert stacked.stackable(config(), CPU)
    assert not stacked.stackable(config(precision="bf16"), torch.device("cuda"))
    assert not stacked.stacking_is_exact(recipes.resolve("cifar10-resnet18", overrides={"arch_kwargs.width": 4}), CPU)
    with pytest.raises(StarlightError, match="cannot be stacked"):
        stacked.fit_stacked(recipes.resolve("cifar10-resnet18", overrides={"arch_kwargs.width": 4}), [1], CPU, None)


def test_a_two_layer_linear_regression_stacks_exactly_too():
    # linear2 has no biases (bmm instead of baddbmm) and a regression loss (per-seed loss_fn).
    cfg = recipes.resolve("linreg-linear2", overrides={"epochs": 3})
    x, y = data.load("linreg", "train")
    split = data.Split(x, y)
    runs = stacked.fit_stacked(cfg, [1, 2, 3], CPU, split)
    for run in runs:
        assert state_bytes(run.model) == state_bytes(training.fit(cfg, run.seed, CPU, split)), f"seed {run.seed}"


@pytest.mark.parametrize(
    "width,batch_size,batch_norm",
    [(17, 7, False), (1, 32, False), (16, 32, True), (100, 32, True)],
    ids=["unaligned-blocks", "matrix-vector", "bn-16-channels", "bn-100-channels"],
)
def test_shapes_whose_kernels_differ_fall_back_to_per_seed_calls_and_stay_exact(width, batch_size, batch_norm):
    # Each of these was inexact with plain bmm / one side-by-side batch_norm on this CPU.
    cfg = recipes.resolve(
        "mnist1d-mlp", width=width, batch_size=batch_size, overrides={"arch_kwargs.batch_norm": batch_norm}
    )
    assert stacked.stacking_is_exact(cfg, CPU, seeds=3, samples=256)


def test_train_of_several_seeds_stacks_and_registers_the_checkpoints_fit_would(reg, tiny_config, monkeypatch):
    from starcli.engine import data as engine_data
    from starcli.solutions import anchors as anchor_training
    from starcli.solutions import records

    calls = []
    real = stacked.fit_stacked
    monkeypatch.setattr(
        stacked, "fit_stacked", lambda config, seeds, dev, split, *a, **k: calls.append((list(seeds), len(split.x)))
        or real(config, seeds, dev, split, *a, **k)
    )
    outcomes = anchor_training.train(reg, tiny_config, [1, 2, 3], device="cpu")
    # The self-test stacks on a small synthetic split first; then the real run stacks all three seeds.
    assert calls[-1] == ([1, 2, 3], 4000) and all(o.trained for o in outcomes)
    split = engine_data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=reg.home / "datasets")
    alone = training.fit(tiny_config, 2, torch.device("cpu"), split).state_dict()
    stored = records.state_dict(reg, outcomes[1].solution)
    assert alone.keys() == stored.keys() and all(torch.equal(alone[k], stored[k]) for k in alone)
    assert not any((reg.home / "runs").glob("*/last.safetensors"))  # resume files removed once registered
