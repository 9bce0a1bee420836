"""GPU steps without host synchronisations: a training epoch and a star epoch wait on the device a
constant number of times, however many steps they take (counted on the CPU, where the same calls run)."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from starcli.engine import recipes, starlight, training
from starcli.engine.data import Split

# Calls that make the host wait for the device: reading a value back, or copying to another device.
READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"}
COPIES = {"to", "copy_", "pin_memory", "cuda"}


class HostSyncs(TorchFunctionMode):
    """Counts reads of tensor values and device copies made through torch's function overrides."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        moves = name in COPIES and (name != "to" or any(isinstance(a, (torch.device, str)) for a in args[1:])
                                    or "device" in kwargs)
        if name in READS or moves:
            self.calls.append(name)
        return func(*args, **kwargs)


def images(n: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def vectors(n: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randn(n, 1, 40, generator=g), torch.randint(0, 10, (n,), generator=g))


def mlp_config(batch_size: int, epochs: int) -> dict:
    return recipes.resolve("mnist1d-mlp", width=16, epochs=epochs, batch_size=batch_size)


def conv_config(batch_size: int, epochs: int) -> dict:
    config = recipes.resolve("cifar10-resnet18", width=4, epochs=epochs, batch_size=batch_size)
    assert config["augmentation"] == "flip-crop"  # the per-step uploads this test exists to catch
    return config


def syncs_of_training(config: dict, split: Split) -> list[str]:
    with HostSyncs() as mode:
        training.fit(config, 1, torch.device("cpu"), split)
    return mode.calls


def syncs_of_a_star(config: dict, split: Split) -> list[str]:
    anchors = [training.fit(config, s, torch.device("cpu"), split).state_dict() for s in (1, 2)]
    with HostSyncs() as mode:
        starlight.fit_star(config, anchors, 0, torch.device("cpu"), split, starlight.TSampling.parse("uniform"))
    return mode.calls


def per_epoch(count, make_config, split: Split, batch_sizes: tuple[int, int]) -> tuple[int, int]:
    """(syncs of a whole run, syncs each further epoch), the same for both batch sizes (few and many steps)."""
    out = set()
    for b in batch_sizes:
        one, two = (len(count(make_config(b, e), split)) for e in (1, 2))
        out.add((one, two - one))
    assert len(out) == 1, f"the number of syncs depends on the number of steps: {sorted(out)}"
    return out.pop()


def test_a_training_epoch_syncs_a_constant_number_of_times_not_once_per_step():
    run, epoch = per_epoch(syncs_of_training, mlp_config, vectors(512), (256, 16))  # 2 vs 32 steps per epoch
    # Per epoch: the shuffle's upload and the loss's one read (the non-finite check).
    assert epoch <= 2 and run <= 8, (run, epoch)


def test_a_training_epoch_with_flip_crop_augmentation_uploads_its_draws_once():
    run, epoch = per_epoch(syncs_of_training, conv_config, images(64), (32, 8))  # 2 vs 8 steps
    # Per epoch: the shuffle, the augmentation draws (pinned on CUDA) and the loss's one read.
    assert epoch <= 3, (run, epoch)


def test_a_star_epoch_syncs_a_constant_number_of_times_not_once_per_step():
    run, epoch = per_epoch(syncs_of_a_star, mlp_config, vectors(512), (256, 16))
    assert epoch <= 2, (run, epoch)


def test_the_counter_sees_a_per_step_sync():
    with HostSyncs() as mode:
        for _ in range(3):
            torch.ones(2).sum().item()
            torch.ones(2).to("cpu")
    assert mode.calls == ["item", "to"] * 3


def reference_flip_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """flip-crop as the loop drew it step by step before: flip, then dx, dy, from the CPU generator."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=g)
    dy = torch.randint(0, 9, (n,), generator=g)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def test_an_epochs_augmentation_drawn_at_once_equals_drawing_it_batch_after_batch():
    from starcli.engine import data

    x = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    sizes = [4, 4, 2]
    draws = data.draw_augmentation("flip-crop", sizes, torch.Generator().manual_seed(7), torch.device("cpu"))
    g = torch.Generator().manual_seed(7)
    for batch, d in zip(x.split(sizes), draws):
        assert torch.equal(data.apply_augmentation(batch, d), reference_flip_crop(batch, g))
