"""Resume files every minute, not every epoch, whatever the model's size (loop.ResumeFile.due), driven by a
clock the test controls: which epochs are written, and that a run killed between writes still ends in
the byte-identical checkpoint, for anchors and stars."""

from __future__ import annotations

import pytest
import torch

from starcli.engine import loop, recipes, training
from starcli.engine.starlight import TSampling, fit_star
from starcli.errors import UsageError

from starcli.engine.data import load_split


class Clock:
    """Advances `step` seconds every time it is read (each read is one finished epoch's `due`)."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Killed(Exception):
    pass


def _bytes(model) -> list[bytes]:
    return [v.contiguous().numpy().tobytes() for v in model.state_dict().values()]


def _written_epochs(tmp_path, every: str, monkeypatch, epochs: int = 6) -> list[int]:
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, every)
    config = recipes.resolve("mnist1d-mlp", epochs=epochs, width=16)
    split = load_split("mnist1d", "train", torch.device("cpu"))
    resume = loop.ResumeFile(tmp_path / "run", clock=Clock(25.0))
    written = []
    original = resume.save

    def save(model, optimizer, epoch, extra=None, extra_tensors=None):
        written.append(epoch)
        original(model, optimizer, epoch, extra, extra_tensors)

    resume.save = save
    training.fit(config, 1, torch.device("cpu"), split, resume)
    return written


def test_resume_files_are_written_every_60_seconds_and_at_the_end_whatever_the_size(tmp_path, monkeypatch):
    # The clock moves 25 s per read. Epoch 1's `due` reads 25 (the start), epochs 2, 3 read 50, 75 (under
    # 60 s since), epoch 4 reads 100 (75 s: written; the write reads 125), epoch 5 reads 150 (25 s since),
    # and the last epoch is always written. This MLP's file is a few hundred kB: small ones wait too.
    assert _written_epochs(tmp_path, "60", monkeypatch) == [4, 6]
    assert _written_epochs(tmp_path / "every-epoch", "0", monkeypatch) == [1, 2, 3, 4, 5, 6]


def test_a_bad_interval_is_one_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "soon")
    with pytest.raises(UsageError, match=r"STARLIGHT_RESUME_EVERY_S must be a number of seconds"):
        loop.ResumeFile(tmp_path)


def _kill_after(epoch: int):
    def on_epoch(e, loss, acc):
        if e == epoch:
            raise Killed

    return on_epoch


@pytest.mark.slow
def test_killed_between_writes_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "60")
    torch.set_num_threads(1)
    config = recipes.resolve("mnist1d-mlp", epochs=6, width=16)
    dev = torch.device("cpu")
    split = load_split("mnist1d", "train", dev)
    clean = training.fit(config, 1, dev, split)
    resume = loop.ResumeFile(tmp_path / "anchor", clock=Clock(25.0))
    with pytest.raises(Killed):
        training.fit(config, 1, dev, split, resume, on_epoch=_kill_after(5))
    assert resume.epoch() == 4  # epoch 5 was not due: the rerun repeats it
    resumed = training.fit(config, 1, dev, split, loop.ResumeFile(tmp_path / "anchor", clock=Clock(25.0)))
    assert _bytes(resumed) == _bytes(clean)


@pytest.mark.slow
def test_a_star_killed_between_writes_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "60")
    torch.set_num_threads(1)
    config = recipes.resolve("mnist1d-mlp", epochs=2, width=16)
    dev = torch.device("cpu")
    split = load_split("mnist1d", "train", dev)
    anchors = [training.fit(config, s, dev, split).state_dict() for s in (1, 2)]
    star_config = dict(config, epochs=6)
    sampling = TSampling.parse("uniform")
    clean = fit_star(star_config, anchors, 1, dev, split, sampling)
    resume = loop.ResumeFile(tmp_path / "star", clock=Clock(25.0))
    with pytest.raises(Killed):
        fit_star(star_config, anchors, 1, dev, split, sampling, on_epoch=_kill_after(5), resume=resume)
    assert resume.epoch() == 4
    resumed = fit_star(star_config, anchors, 1, dev, split, sampling,
                       resume=loop.ResumeFile(tmp_path / "star", clock=Clock(25.0)))
    assert _bytes(resumed) == _bytes(clean)


@pytest.mark.slow
def test_a_run_killed_between_writes_still_keeps_every_epochs_history_row(tmp_path, monkeypatch):
    from starcli.solutions.anchors import History

    monkeypatch.setenv(loop.RESUME_EVERY_ENV, "60")
    torch.set_num_threads(1)
    config = recipes.resolve("mnist1d-mlp", epochs=6, width=16)
    dev = torch.device("cpu")
    split = load_split("mnist1d", "train", dev)
    clean = History()
    training.fit(config, 1, dev, split, on_epoch=clean)
    file = tmp_path / "anchor" / "history.json"
    killed = History(file=file)

    def kill_after_5(e, loss, acc):
        killed(e, loss, acc)
        if e == 5:
            raise Killed

    resume = loop.ResumeFile(tmp_path / "anchor", clock=Clock(25.0))
    with pytest.raises(Killed):
        training.fit(config, 1, dev, split, resume, on_epoch=kill_after_5)
    assert resume.epoch() == 4 and len(file.read_text().splitlines()) == 5  # one appended line per epoch
    resumed = History(file=file)  # rows 1-5; epoch 5 runs again and replaces its row
    training.fit(config, 1, dev, split, loop.ResumeFile(tmp_path / "anchor", clock=Clock(25.0)), on_epoch=resumed)
    assert resumed.rows == clean.rows and [r["epoch"] for r in resumed.rows] == [1, 2, 3, 4, 5, 6]
    assert History(file=file).rows == clean.rows


def test_a_history_file_of_the_old_json_list_or_with_a_torn_last_line_is_read(tmp_path):
    import json

    from starcli.solutions.anchors import History

    rows = [{"epoch": e, "train_loss": 1.0 / e} for e in (1, 2, 3)]
    old = tmp_path / "old" / "history.json"
    old.parent.mkdir()
    old.write_text(json.dumps(rows))  # written before the rows were appended
    history = History(file=old)
    history(4, 0.25)
    assert History(file=old).rows == rows + [{"epoch": 4, "train_loss": 0.25}]
    torn = tmp_path / "torn" / "history.json"
    torn.parent.mkdir()
    torn.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + '{"epoch": 3, "train_lo')  # a kill mid-line
    history = History(file=torn)
    assert history.rows == rows[:2]
    history(3, 1.0 / 3)
    assert History(file=torn).rows == rows
