"""Bundles between real SQLite registries, the Hugging Face / timm layout, and what `register` records
and warns about."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import torch
from sqlmodel import select

from starcli.registry import BarrierResult, Solution, open_registry
from starcli.errors import StarlightError
from starcli.solutions import barriers, bundles, records
from star_copies import reg, source  # noqa: F401  (fixtures: a copy of the session's star registry)


def solutions(reg) -> list[Solution]:
    with reg.session() as s:
        return list(s.exec(select(Solution).order_by(Solution.id)))


def barrier_rows(reg) -> list[BarrierResult]:
    with reg.session() as s:
        return list(s.exec(select(BarrierResult)))


@pytest.fixture
def other(tmp_path):
    r = open_registry(tmp_path / "other")
    yield r
    r.close()


@pytest.mark.slow
def test_a_star_travels_with_its_anchors_blobs_and_barriers_and_ids_are_remapped(reg, source, other, tmp_path):
    star, ids = source
    # occupy ids 1-2 in the receiving registry with unrelated rows, so that remapping is visible
    for sol in solutions(reg)[:2]:
        records.add(other, records.state_dict(reg, sol), **{**sol.model_dump(exclude={"id", "sha256"}), "key": "x" * 63 + str(sol.id)})
    out = bundles.export_bundle(reg, [star, ids[2]], tmp_path / "b.tar.gz")
    assert out["solutions"] == sorted([star, *ids]) and out["barriers"] == 3  # star-held-out + 2 regular
    result = bundles.import_bundle(other, tmp_path / "b.tar.gz")
    mapping = {int(k): v for k, v in result["ids"].items()}
    assert len(result["added"]) == 4 and mapping[ids[0]] != ids[0]
    new_star = records.get(other, mapping[star])
    assert new_star.anchors == [mapping[a] for a in records.get(reg, star).anchors]
    for old, new in mapping.items():
        a, b = records.get(reg, old), records.get(other, new)
        assert (a.key, a.sha256, a.metrics, a.kind) == (b.key, b.sha256, b.metrics, b.kind)
        assert all(torch.equal(records.state_dict(reg, a)[k], v) for k, v in records.state_dict(other, b).items())
    moved = {(r.a_id, r.b_id, r.settings_hash): r.result for r in barrier_rows(other)}
    for r in barrier_rows(reg):
        assert moved[(mapping[r.a_id], mapping[r.b_id], r.settings_hash)] == r.result
    # the receiving registry answers the same measurement from the imported rows
    again = barriers.measure(other, star=mapping[star], held_out=[mapping[ids[2]]], points=3, splits=("train",))
    assert again["pairs"][0]["train"]["loss_barrier"] == barriers.measure(
        reg, star=star, held_out=[ids[2]], points=3, splits=("train",))["pairs"][0]["train"]["loss_barrier"]
    # importing again adds nothing: same keys, same blobs, same barrier rows
    n_sol, n_bar = len(solutions(other)), len(barrier_rows(other))
    second = bundles.import_bundle(other, tmp_path / "b.tar.gz")
    assert second["added"] == [] and second["barriers"] == 0
    assert (len(solutions(other)), len(barrier_rows(other))) == (n_sol, n_bar)


def _tar(path, members: dict[str, bytes], link: str | None = None):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)


@pytest.mark.parametrize("bad, message", [
    ({"../evil": b"x"}, "unsafe member"),
    ({"/abs": b"x"}, "unsafe member"),
    ("link", "unsafe member"),
    ("damaged", "damaged"),
    ({"manifest.json": b"{"}, "not valid JSON"),
    ({"other.txt": b"x"}, "no manifest.json"),
    ("orphan", "which the bundle lacks"),
])
def test_unsafe_or_damaged_bundles_are_refused_and_import_nothing(reg, source, other, tmp_path, bad, message):
    star, _ = source
    good = tmp_path / "good.tar"
    bundles.export_bundle(reg, [star], good)
    with tarfile.open(good) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    path = tmp_path / "bad.tar"
    if bad == "link":
        _tar(path, members, link="blobs/evil")
    elif bad == "damaged":
        name = next(n for n in members if n.startswith("blobs/"))
        _tar(path, {**members, name: members[name][:-1] + b"\0"})
    elif bad == "orphan":  # the star without its anchors
        manifest = json.loads(members["manifest.json"])
        manifest["solutions"] = [r for r in manifest["solutions"] if r["id"] == star]
        _tar(path, {**members, "manifest.json": json.dumps(manifest).encode()})
    elif "manifest.json" in bad or "other.txt" in bad:
        _tar(path, bad)
    else:
        _tar(path, {**members, **bad})
    with pytest.raises(StarlightError, match=message):
        bundles.import_bundle(other, path)
    assert solutions(other) == [] and barrier_rows(other) == []


def test_the_hf_layout_round_trips_through_register_with_the_same_metrics(reg, source, other, tmp_path, mnist1d_cache):
    from starcli import models
    from starcli.solutions import imports

    star, ids = source
    folder = tmp_path / "hf"
    bundles.export_hf(reg, ids[0], folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "mlp" and cfg["num_classes"] == 10 and cfg["starlight"]["dataset"] == "mnist1d"
    (other.home / "datasets").mkdir(parents=True, exist_ok=True)
    (other.home / "datasets" / "mnist1d.npz").write_bytes(mnist1d_cache.read_bytes())
    sol, created = imports.register(other, folder, None, None, device="cpu")  # everything from config.json
    original = records.get(reg, ids[0])
    assert created and sol.kind == "external"
    # The same network: an import records every default of the architecture (depth, batch_norm, ...).
    assert models.complete_kwargs("mlp", sol.arch_kwargs) == models.complete_kwargs("mlp", original.arch_kwargs)
    records.require_same_task([original, sol])
    for k in ("train_acc", "test_acc", "train_loss", "test_loss"):
        assert sol.metrics[k] == pytest.approx(original.metrics[k], abs=1e-4)
    assert imports.plausibility(sol.metrics, "mnist1d") == []


def test_register_records_the_normalisation_it_was_told_and_warns_at_chance_accuracy(home, tiny_config, cli, tmp_path):
    from safetensors.torch import save_file

    from starcli import models

    untrained = models.create(tiny_config["arch"], **tiny_config["arch_kwargs"])
    for p in untrained.parameters():
        torch.nn.init.zeros_(p)  # predicts one class everywhere: chance accuracy
    path = tmp_path / "zero.safetensors"
    save_file(untrained.state_dict(), str(path))
    code, out, err = cli("register", str(path), "--arch", "mlp", "--dataset", "mnist1d", "--width", "32",
                         "--mean", "0.5", "--std", "0.25", "--json", "--device", "cpu")
    assert code == 0, err
    _, shown, _ = cli("show", str(json.loads(out)["id"]), "--json")
    assert json.loads(shown)["config"]["input_normalisation"] == {"mean": [0.5], "std": [0.25]}
    assert "near chance" in err
    code, _, err = cli("register", str(path), "--arch", "mlp", "--dataset", "mnist1d", "--mean", "0.5")
    assert code == 2 and "--mean and --std together" in err


def test_export_and_import_commands(reg, source, cli, tmp_path, monkeypatch):
    star, _ = source
    code, out, err = cli("export", "--bundle", str(tmp_path / "s.tar"), str(star))
    assert code == 0, err
    assert "3 solution(s) (1,2,4)" in out and "0 barrier row(s)" in out  # the star and its anchors; no held-out
    code, out, err = cli("--home", str(tmp_path / "h2"), "import", str(tmp_path / "s.tar"))
    assert code == 0, err
    assert out.startswith("imported 3 new solution(s), kept 0") and "4→3" in out
    code, _, err = cli("export", str(star))
    assert code == 2 and "--bundle" in err
    code, _, err = cli("export", "--hf", str(tmp_path / "hf"), "1-2")
    assert code == 2 and "one checkpoint" in err
