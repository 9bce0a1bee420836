"""The one figure style: formats and resolution as asked, error bars that stop at the floor of 0, log
axes where values span decades, and titles without registry ids (read back from the written files)."""

from __future__ import annotations

import re

import pytest

from starcli.errors import UsageError
from starcli.reports import figures, style


def _result(star=7, held=(31, 32)):
    t = [0.0, 0.5, 1.0]
    pair = lambda a, b, kind, bump: {  # noqa: E731
        "a": a, "b": b, "kind": kind, "t": t,
        "train": {"loss": [0.1, 0.1 + bump, 0.2], "acc": [99.0, 99.0 - 10 * bump, 98.0]},
        "test": {"loss": [0.3, 0.3 + bump, 0.4], "acc": [90.0, 90.0 - 10 * bump, 89.0]},
    }
    pairs = [pair(star, h, "star-held-out", 0.05) for h in held] + [pair(1, h, "regular-held-out", 0.6) for h in held]
    return {"star": star, "settings": {"align": "weight"}, "pairs": pairs}


def test_floored_error_bars_stop_at_zero_and_keep_the_upper_bar():
    assert style.floored_yerr([0.1, 0.5, 0.0], [0.3, 0.2, None]) == [[0.1, 0.2, 0.0], [0.3, 0.2, 0.0]]


def test_a_log_axis_only_where_values_span_decades():
    assert style.spans_decades([4, 8, 512]) and not style.spans_decades([0.2, 0.9]) and not style.spans_decades([0, 5])


def test_the_series_colour_follows_the_center_everywhere():
    assert style.colour("star-held-out") == style.colour("star") == style.PALETTE["star"]
    assert style.colour("regular-held-out") == style.colour("regular-held-out") == style.PALETTE["regular"]
    assert style.colour("soup-held-out") == style.PALETTE["soup"] and style.colour("pair") == style.PALETTE["pair"]


def test_format_and_dpi_choose_the_file_written(tmp_path):
    with style.output("svg"):
        svg = figures.barrier_plot(_result(), tmp_path / "curves.png")
    assert svg.suffix == ".svg" and svg.read_text().lstrip().startswith("<?xml")
    text = " ".join(re.findall(r">([^<>]+)<", svg.read_text()))
    assert "regular-held-out (n=2)" in text and "chord" in text
    assert not re.search(r"\bstar 7\b|\b31\b|\b32\b", text)  # no registry ids in titles or legends
    assert figures.barrier_plot(_result(), tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"  # the suffix decides
    with style.output(dpi=60):
        small = figures.barrier_plot(_result(), tmp_path / "small.png")
    big = figures.barrier_plot(_result(), tmp_path / "big.png")
    from PIL import Image

    assert Image.open(small).size[0] * 150 == pytest.approx(Image.open(big).size[0] * 60, rel=0.03)


@pytest.mark.parametrize("fmt, dpi, message", [("gif", None, "--format"), (None, 5, "--dpi")])
def test_bad_format_or_dpi_is_a_usage_error(fmt, dpi, message):
    with pytest.raises(UsageError, match=message):
        with style.output(fmt, dpi):
            pass


def test_a_rounding_residue_does_not_stretch_the_axis_over_twenty_decades(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert style.significant([5.8e-19, 0.02, 0.5, None, 0.0]) == [0.02, 0.5]
    fig, ax = plt.subplots()
    style.decades_y(ax, [5.8e-19, 0.3, 0.5, 0.45])
    assert ax.get_yscale() == "linear"  # the residue counts as 0; the real values span less than 1.5 decades
    fig2, ax2 = plt.subplots()
    style.decades_y(ax2, [5.8e-19, 0.001, 0.5])
    assert ax2.get_yscale() == "symlog" and ax2.yaxis.get_transform().linthresh == pytest.approx(1e-3)
    plt.close("all")


def test_the_barrier_matrix_masks_its_zero_diagonal(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    original = plt.Figure.colorbar

    def spy(self, mappable, *args, **kwargs):
        seen["clim"] = mappable.get_clim()
        seen["mask"] = mappable.get_array().mask.copy()
        return original(self, mappable, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "colorbar", spy)
    values = [[0.0, 0.8, 1.2], [0.8, 0.0, 0.5], [1.2, 0.5, 0.0]]
    figures.matrix_plot(tmp_path / "m.png", [1, 2, 3], values, "train loss barrier")
    assert (tmp_path / "m.png").stat().st_size > 0
    assert seen["clim"] == (0.5, 1.2)  # the scale spans the pairs, not the zeros of the diagonal
    assert seen["mask"].tolist() == [[True, False, False], [False, True, False], [False, False, True]]
