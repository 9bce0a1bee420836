"""The one epoch loop that anchor training (training.py) and star training (starlight.py) both run on.

A plain loop over tensors already on the device (airbench style): the optimizer, the learning rate as
a pure function of the step (`lr_at`), shuffles and augmentation drawn from (seed, epoch) alone, the
non-finite check before every step, and the resume file. Because nothing but (seed, epoch) decides an
epoch's randomness, a run that resumes from its last saved epoch continues exactly as if it had
never stopped, and on the CPU the same seed and config give a byte-identical checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from starcli.errors import StarlightError, UsageError

from . import data, precision
from .data import Split


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed the global generators that dropout and other global-RNG users draw from on `device`.

    On a CPU that is the default generator alone, seeded exactly as `torch.manual_seed` seeds it. The
    full call also queues a seed for every accelerator not yet initialised (CUDA, XPU, MTIA), formatting a
    stack trace for each: 0.36 ms an epoch from 45 frames deep, ~1.5% of a default-recipe epoch, for
    generators a CPU run never draws from (the default generator's state is the same either way).
    Elsewhere the full call, as before."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def build_optimizer(params, config: dict[str, Any]) -> torch.optim.Optimizer:
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=config["lr"],
            momentum=config["momentum"],
            nesterov=bool(config["nesterov"]) and config["momentum"] > 0,
            weight_decay=config["weight_decay"],
        )
    cls = torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=config["lr"], weight_decay=config["weight_decay"])


def lr_at(config: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """Learning rate of one optimizer step; a pure function of the step, so resuming needs no scheduler state."""
    base, total = config["lr"], config["epochs"] * steps_per_epoch
    warmup = config["warmup_epochs"] * steps_per_epoch
    if step < warmup:
        return base * (step + 1) / warmup
    if config["schedule"] == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    if config["schedule"] == "step":
        epoch = step // steps_per_epoch
        return base * config["gamma"] ** sum(epoch >= m for m in config["milestones"])
    return base


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch; a trailing batch of one sample joins its predecessor (BatchNorm needs two)."""
    order = torch.randperm(n, generator=generator)
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2] = torch.cat([parts[-2], parts.pop()])
    return parts


def autocast(device: torch.device, config: dict[str, Any]):
    return precision.autocast(device, config)


def prepare_model(model: nn.Module, device: torch.device, config: dict[str, Any]) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        # Fixed input shapes (one batch size, one image size): let cuDNN pick the fastest kernels once.
        torch.backends.cudnn.benchmark = True
    # The config's memory format (channels_last where the precision policy chose it): it is part of the
    # key, since on a GPU it selects other kernels, which round differently.
    return precision.prepare_model(model, config, device)


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """One optimizer step on `loss`; returns the loss, detached and still on the device (no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def loss_accumulator(device: torch.device) -> torch.Tensor:
    # float64 sums the float32 step losses exactly as Python's float sum of `.item()`s did (same epoch
    # means on the CPU); MPS has no float64.
    return torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)


def non_finite_message(who: str, epoch: int, advice: str) -> str:
    """One wording for a diverged run, whether it trained alone or stacked (stacked.py stops a seed at its
    first non-finite step, the loop sees the epoch's sum: naming no value keeps the two messages equal)."""
    return f"{who}: the loss became non-finite (NaN or infinite) in epoch {epoch}; nothing was registered. {advice}"


def epoch_sums(total: torch.Tensor, correct: torch.Tensor | None, who: str, epoch: int, advice: str) -> tuple[float, float | None]:
    """The epoch's summed loss and correct count as floats, read back together: the one host
    synchronisation of an epoch (None for the count where the task has no accuracy).

    A NaN or infinite step loss makes the sum non-finite: the run stops here, before the epoch is saved
    for resuming, so it keeps its last good epoch and nothing half-trained is registered.
    """
    if correct is None:
        value, count = total.item(), None
    else:
        # One read for both: the count is exact in the float64 accumulator (far below 2**53).
        value, count = torch.stack([total, correct.to(total.dtype)]).tolist()
    if not math.isfinite(value):
        raise StarlightError(non_finite_message(who, epoch, advice))
    return value, count


# A resume file is written at most every RESUME_EVERY_S seconds, whatever the model's size, and always
# after the last epoch: a ResNet-18's is 90 MB, more than a fast GPU epoch costs; a small MLP's costs
# little, but eight of them (a stacked `train --seed 11-18`) with two fsyncs each took a quarter of the
# wall when written every epoch.
RESUME_EVERY_S = 60.0
RESUME_EVERY_ENV = "STARLIGHT_RESUME_EVERY_S"


def resume_every_s() -> float:
    """Seconds between resume files: $STARLIGHT_RESUME_EVERY_S, else RESUME_EVERY_S."""
    raw = os.environ.get(RESUME_EVERY_ENV, "").strip()
    if not raw:
        return RESUME_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"${RESUME_EVERY_ENV} must be a number of seconds ≥ 0, got {raw!r}")
    return value


class ResumeFile:
    """The last saved epoch of one run: model, optimizer state, epoch, any extra JSON state (a star's
    draw position) and any extra tensors (the star a `--realign-every K` star last re-aligned to), as
    safetensors + JSON metadata.

    Lives outside the content-addressed store (under $STARLIGHT_HOME/runs/<key>/) and is removed once
    the solution is registered.

    Cadence (`due`): the file is written at most every `resume_every_s()` seconds, whatever the model's
    size, and always after the last epoch, so a killed run loses at most that much training (0 s: every
    epoch). It resumes from the last written epoch and, since an epoch's randomness is a function of
    (seed, epoch) alone, still ends in the byte-identical checkpoint. `clock` is injectable for tests.

    It also keeps the run's wall clock across segments: the file records the seconds spent up to its
    epoch, so a run killed and resumed reports the time of all its segments (`seconds`), not only the
    last one's. The time between a segment's last saved epoch and its kill is not counted: that epoch is
    trained again. A file written before this field existed resumes as if its earlier segments took 0 s.
    `share` is the fraction of this process's time that is this run's (1/n when n seeds train stacked).
    """

    def __init__(self, folder: Path, share: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.tensors = folder / "last.safetensors"
        # The extra state of the last `load` (empty when there was nothing to resume).
        self.extra: dict[str, Any] = {}
        # The extra tensors of the last `load`, by the names they were saved under (empty likewise).
        self.extra_tensors: dict[str, torch.Tensor] = {}
        self.share = share
        # Wall seconds of the segments before this one, as the file recorded them (set by `load`).
        self.earlier_seconds = 0.0
        self._started = time.perf_counter()
        self.clock = clock
        self.every_s = resume_every_s()
        self._last_write: float | None = None  # clock time of the last write, or of the first `due`

    def seconds(self) -> float:
        """Wall seconds of the run so far: the earlier segments' plus this one's since the file object was made."""
        return self.earlier_seconds + self.share * (time.perf_counter() - self._started)

    def due(self, final: bool) -> bool:
        """Whether the epoch just finished should be written (see the class's cadence)."""
        if final:
            return True
        now = self.clock()
        if self._last_write is None:
            self._last_write = now  # the run's start (its first epoch) counts as the last write
        return now - self._last_write >= self.every_s

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, extra: dict[str, Any] | None = None,
             extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
        from safetensors.torch import save

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors |= {f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()}
        scalars: dict[str, Any] = {}
        for idx, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{key}"] = value
        metadata = {"epoch": str(epoch), "scalars": json.dumps(scalars), "seconds": repr(self.seconds())}
        if extra is not None:
            metadata["extra"] = json.dumps(extra)
        data = save(tensors, metadata=metadata)
        tmp = self.folder / f".tmp{os.getpid()}.safetensors"
        for attempt in (1, 2):
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                self._write(tmp, data)
                self._last_write = self.clock()
                return
            except FileNotFoundError:
                # Another run of the same seed (a resubmitted job) finished and removed the folder
                # between our mkdir and our write: make it again.
                if attempt == 2:
                    raise

    def _write(self, tmp: Path, data: bytes) -> None:
        """Write, fsync, rename over the last checkpoint, fsync the folder: a crash (or power loss) at any
        point leaves either the old or the new checkpoint, never a torn one; the temp file never outlives
        a failure."""
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.tensors)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:  # a folder that cannot be opened (some platforms): the rename itself is done
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> int:
        """Restore and return the number of finished epochs (0 when there is nothing to resume)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.tensors), framework="pt", device="cpu") as f:
                meta = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except FileNotFoundError:
            # Nothing to resume, or another run of the same seed just finished and removed it.
            self.extra = {}
            self.extra_tensors = {}
            self.earlier_seconds = 0.0
            return 0
        self.extra = json.loads(meta.get("extra", "{}"))
        self.extra_tensors = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("extra.")}
        self.earlier_seconds = _seconds(meta.get("seconds"))
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v.to(device)
        for k, v in json.loads(meta["scalars"]).items():
            idx, key = k.split(".", 1)
            state.setdefault(int(idx), {})[key] = v
        sd = optimizer.state_dict()
        optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
        return int(meta["epoch"])

    def epoch(self) -> int:
        """Finished epochs recorded in the file (0 without one), read from its header only: what a
        progress display shows before `load` restores the tensors."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.tensors), framework="pt", device="cpu") as f:
                return int(f.metadata()["epoch"])
        except (FileNotFoundError, KeyError, ValueError):
            return 0

    def remove(self) -> None:
        """Once the run is registered: the checkpoint, and the temp file of any earlier attempt that was
        killed inside `save` (kill -9 runs no cleanup), so the folder itself can go."""
        self.tensors.unlink(missing_ok=True)
        for tmp in self.folder.glob(".tmp*.safetensors"):
            tmp.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass


def _seconds(recorded: str | None) -> float:
    """The earlier segments' wall seconds a resume file recorded; 0 for a file from before the field (or
    an unreadable value): the time is a report, never a reason to refuse a resume."""
    try:
        value = float(recorded) if recorded is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


# --- the `starlight train` command as a function -------------------------------------------------


def run_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    seed: int,
    device: torch.device,
    split: Split,
    step_loss: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    who: str,
    advice: str,
    start: int = 0,
    resume: ResumeFile | None = None,
    before_epoch: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    resume_extra: Callable[[], dict[str, Any]] | None = None,
    resume_tensors: Callable[[], dict[str, torch.Tensor]] | None = None,
) -> nn.Module:
    """Epochs `start`..config["epochs"] of minibatch descent on `step_loss(x_batch, y_batch)`, which returns
    the step's loss and how many of the batch's samples it classified right (`evaluation.correct_count`,
    None for regression).

    `seed` fixes every epoch's shuffle and augmentation (and the global RNG that dropout draws from);
    `before_epoch(epoch)` runs first in each epoch (the star re-aligns its anchors there); the resume
    file, when given, is written after the epochs its cadence picks (`ResumeFile.due`), with
    `resume_extra()` (JSON) and `resume_tensors()` beside the weights when given. `on_epoch(epoch, mean_loss, train_acc)`: the
    mean of the epoch's step losses and the percentage of the epoch's samples classified right as each
    step saw them (train mode, augmented, before that step's update: the running accuracy, free because
    the logits were computed anyway), or None.
    """
    steps_per_epoch = len(batches(len(split.x), config["batch_size"], epoch_generator(seed, 0)))
    model.train()
    for epoch in range(start, config["epochs"]):
        if before_epoch is not None:
            before_epoch(epoch)
        g = epoch_generator(seed, epoch)
        seed_global_rng(seed * 1_000_003 + epoch, device)  # dropout and other global-RNG users
        # The epoch's shuffle and augmentation draws, drawn from g in the order the steps used to draw
        # them (same values) and uploaded once: no step waits on a host-to-device copy.
        parts = batches(len(split.x), config["batch_size"], g)
        sizes = [len(p) for p in parts]
        order = torch.cat(parts).to(split.x.device, non_blocking=True).split(sizes)
        draws = data.draw_augmentation(config["augmentation"], sizes, g, split.x.device)
        total = loss_accumulator(split.x.device)
        correct = None
        for i, idx in enumerate(order):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, epoch * steps_per_epoch + i, steps_per_epoch)
            xb = precision.inputs(data.apply_augmentation(split.x[idx], draws[i]), config)
            yb = split.y[idx]
            with autocast(device, config):
                loss, right = step_loss(xb, yb)
            total += descend(optimizer, loss)
            if right is not None:
                # Summed on the device, in the loss's accumulator type: no step waits to read it.
                correct = right.to(total.dtype) if correct is None else correct + right
        loss_sum, right_sum = epoch_sums(total, correct, who, epoch + 1, advice)
        if resume and resume.due(final=epoch + 1 == config["epochs"]):
            resume.save(model, optimizer, epoch + 1, resume_extra() if resume_extra else None,
                        resume_tensors() if resume_tensors else None)
        if on_epoch:
            acc = None if right_sum is None else 100.0 * right_sum / len(split.x)
            on_epoch(epoch + 1, loss_sum / steps_per_epoch, acc)
    return model
