"""The pairwise barrier matrix and repeatable --pair: every pair measured once, stored as usual, the CSV
equal to the pairs measured one by one, and a heatmap figure."""

from __future__ import annotations

import csv

import shutil

import pytest

from starcli.registry import BarrierResult
from starcli.errors import UsageError
from starcli.experiments.matrix import barrier_matrix, matrix_pairs, output_paths
from starcli.solutions import barriers

PNG = b"\x89PNG\r\n\x1a\n"


def rows(reg) -> list[BarrierResult]:
    from sqlmodel import select

    with reg.session() as s:
        return list(s.exec(select(BarrierResult)))


@pytest.fixture
def reg(home, request, anchor_home):
    """The test's registry: when the test uses `three`, a copy of conftest's `anchor_home((1, 2, 3))`
    (trained once per session instead of once per test), else empty."""
    from starcli.registry import open_registry

    if "three" in request.fixturenames:
        shutil.copytree(anchor_home((1, 2, 3)), home, dirs_exist_ok=True)  # database, blobs, dataset cache
    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture
def three(reg, tiny_config):
    from starcli.solutions import records

    found = sorted(records.query(reg, kind="anchor"), key=lambda sol: sol.seed)
    assert [sol.seed for sol in found] == [1, 2, 3]
    return [sol.id for sol in found]


def test_matrix_pairs_are_every_unordered_pair_and_bad_lists_are_usage_errors():
    assert matrix_pairs([4, 2, 9]) == [(4, 2), (4, 9), (2, 9)]
    with pytest.raises(UsageError, match="at least two"):
        matrix_pairs([3])
    with pytest.raises(UsageError, match="twice"):
        matrix_pairs([3, 3])
    assert output_paths("m.csv", "pdf")[1].name == "m.pdf"
    assert [p.name for p in output_paths("folder")] == ["barrier-matrix.csv", "barrier-matrix.png"]


@pytest.mark.slow
def test_the_matrix_equals_the_pairs_measured_one_by_one_and_is_stored(reg, three, tmp_path):
    result = barrier_matrix(reg, three, tmp_path / "m", points=3, splits=("train",))
    assert len(rows(reg)) == 3  # stored as any pair
    with (tmp_path / "m" / "barrier-matrix.csv").open() as f:
        table = list(csv.reader(f))
    assert table[0] == ["id", *map(str, three)]
    values = {int(r[0]): [float(v) for v in r[1:]] for r in table[1:]}
    for k, a in enumerate(three):
        assert values[a][k] == 0.0
        for j, b in enumerate(three):
            if a == b:
                continue
            x, y = sorted((a, b), key=three.index)
            one = barriers.measure(reg, pairs=[(x, y)], points=3, splits=("train",))["pairs"][0]
            # the plain reference: Eq. 1 on the stored curve, by hand
            t, loss = one["t"], one["train"]["loss"]
            by_hand = max(0.0, max(v - ((1 - tt) * loss[0] + tt * loss[-1]) for tt, v in zip(t, loss)))
            assert values[a][j] == pytest.approx(by_hand, rel=1e-5, abs=1e-6)
            assert values[a][j] == values[b][k]
    assert (tmp_path / "m" / "barrier-matrix.png").read_bytes()[:8] == PNG
    assert result["matrix"]["split"] == "train" and len(rows(reg)) == 3  # nothing measured twice


def test_barrier_cli_matrix_writes_csv_and_a_pdf_and_answers_again_from_the_registry(reg, three, cli, tmp_path):
    ids = f"{three[0]}-{three[-1]}"
    out = tmp_path / "mx.csv"
    code, stdout, err = cli("barrier", "--matrix", ids, "--points", "3", "--splits", "train", "-o", str(out),
                            "--format", "pdf", "--csv")
    assert code == 0, err
    assert out.exists() and out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert len(stdout.splitlines()) == 1 + 3 and len(rows(reg)) == 3
    code, _, err = cli("barrier", "--matrix", ids, "--points", "3", "--splits", "train", "-o", str(out))
    assert code == 0 and "3 of 3 pairs answered from the registry" in err


def test_repeated_pair_options_keep_every_pair(reg, three, cli):
    a, b, c = three
    code, out, err = cli("barrier", "--pair", str(a), str(b), "--pair", str(b), str(c), "--points", "3",
                         "--splits", "train", "--csv")
    assert code == 0, err
    assert [line.split(",")[:2] for line in out.splitlines()[1:]] == [[str(a), str(b)], [str(b), str(c)]]
    assert len(rows(reg)) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--matrix", "1"], "at least two"),
        (["--matrix", "1-3", "--pair", "1", "2"], "without --star"),
        (["--pair", "1", "x"], "two solution ids"),
        (["--matrix", "1-3", "--format", "gif"], "--format"),
    ],
)
def test_matrix_and_pair_usage_errors_are_one_line_exit_2_and_store_nothing(reg, three, cli, args, message):
    code, out, err = cli("barrier", *args)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""
    assert rows(reg) == []
