"""The per-epoch train accuracy of the stored history, against plain references: a step-by-step loop that
reads each batch's count with `.item()`, and (for a star) networks whose accuracy is known in advance."""

from __future__ import annotations

import torch

from starcli import models
from starcli.engine import evaluation, loop, recipes, starlight, training
from starcli.engine.data import Split

CPU = torch.device("cpu")


def vectors(n: int, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g))


def config(**overrides) -> dict:
    return dict(recipes.resolve("mnist1d-mlp", width=16, epochs=3, batch_size=32), **overrides)


def reference_running_accuracy(cfg: dict, seed: int, split: Split) -> list[float]:
    """The epoch loop written out plainly: each step's correct count read right away, before its update."""
    torch.manual_seed(seed)
    model = models.create(cfg["arch"], **cfg["arch_kwargs"])
    opt = loop.build_optimizer(model.parameters(), cfg)
    steps = len(loop.batches(len(split.x), cfg["batch_size"], loop.epoch_generator(seed, 0)))
    model.train()
    accs = []
    for epoch in range(cfg["epochs"]):
        g = loop.epoch_generator(seed, epoch)
        torch.manual_seed(seed * 1_000_003 + epoch)
        right = 0
        for i, idx in enumerate(loop.batches(len(split.x), cfg["batch_size"], g)):
            for group in opt.param_groups:
                group["lr"] = loop.lr_at(cfg, epoch * steps + i, steps)
            out = model(split.x[idx])
            right += int((out.argmax(1) == split.y[idx]).sum().item())
            opt.zero_grad()
            torch.nn.functional.cross_entropy(out, split.y[idx]).backward()
            opt.step()
        accs.append(100.0 * right / len(split.x))
    return accs


def test_an_epochs_train_accuracy_is_the_running_count_of_right_answers_over_its_samples():
    split, cfg = vectors(200), config()  # 200 = 6 batches of 32 and a trailing 8: uneven on purpose
    seen = []
    training.fit(cfg, 3, CPU, split, on_epoch=lambda e, loss, acc: seen.append(acc))
    assert seen == reference_running_accuracy(cfg, 3, split)
    assert len(set(seen)) > 1  # training moved it: the per-epoch values are not one constant


def test_a_regression_run_has_no_accuracy():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(64, 1, 40, generator=g), torch.randn(64, 10, generator=g))
    seen = []
    training.fit(config(epochs=1), 1, CPU, split, on_epoch=lambda e, loss, acc: seen.append((loss, acc)))
    assert len(seen) == 1 and seen[0][1] is None and seen[0][0] > 0


def test_a_stars_accuracy_is_that_of_the_interpolated_networks_averaged_over_the_draws_without_the_mu_term():
    split = vectors(200)
    cfg = config(epochs=2, lr=0.0)  # lr 0: no network moves, so every step's accuracy is known in advance
    anchor = training.fit(config(epochs=2), 5, CPU, split)
    anchor.train()
    with torch.no_grad():
        expected = 100.0 * float((anchor(split.x).argmax(1) == split.y).sum()) / len(split.x)
    states = [anchor.state_dict(), anchor.state_dict()]
    seen = []
    # t = 1: each drawn interpolated network is the anchor itself; the star's own μ* term must not count.
    starlight.fit_star(cfg, states, 0, CPU, split, starlight.TSampling.parse("constant:1"), samples_per_step=2,
                       mu_star=0.5, on_epoch=lambda e, loss, acc: seen.append(acc))
    assert seen == [expected, expected]
    # And t = 0: the interpolated network is the (unmoving) star, whose accuracy differs from the anchor's.
    seen.clear()
    star = starlight.fit_star(cfg, states, 0, CPU, split, starlight.TSampling.parse("constant:0"),
                              on_epoch=lambda e, loss, acc: seen.append(acc))
    with torch.no_grad():
        own = 100.0 * float((star(split.x).argmax(1) == split.y).sum()) / len(split.x)
    assert seen == [own, own] and own != expected


def test_correct_count_counts_per_leading_axis_for_stacked_outputs():
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0]], [[0.0, 1.0], [0.0, 1.0]]])  # 2 seeds, 2 samples
    y = torch.tensor([[0, 1], [0, 1]])
    assert evaluation.correct_count(logits, y).tolist() == [2, 1]
    assert evaluation.correct_count(logits[0], y[0]).item() == 2
