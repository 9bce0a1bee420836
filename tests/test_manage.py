"""rm (dependents, --cascade, blob collection), doctor --fix, tag/untag/note, list filters and attribute
selectors, on a real SQLite registry and real blob files."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest
import torch

from starcli.registry import open_registry
from starcli.errors import StarlightError, UsageError
from starcli.selectors import parse_attributes
from starcli.solutions import barriers, manage, records


def _sol(reg, value: float, kind: str = "anchor", seed: int | None = None, **extra):
    """A solution whose weights are a constant: equal values share one blob."""
    fields = dict(
        key=f"{kind}-{value}-{seed}-{extra.get('recipe', '')}-{extra.get('anchors', '')}", kind=kind, arch="mlp",
        arch_kwargs={"width": 4}, width=4, seed=seed, dataset="mnist1d", recipe="mnist1d-mlp", config={"lr": 0.1},
        epochs=1, metrics={"test_acc": value}, device="cpu", wall_seconds=0.0, versions={},
    )  # fmt: skip
    fields.update(extra)
    sol, _ = records.add(reg, {"w": torch.full((3,), float(value))}, **fields)
    return sol


def _barrier(reg, a: int, b: int) -> None:
    settings = barriers.settings_for(3, ("test",), "full", 256, "none")
    result = {"t": [0.0, 0.5, 1.0], "test": {"loss": [1.0, 2.0, 1.0], "acc": [50.0, 40.0, 50.0]}}
    barriers.store_results(reg, {(a, b): result}, settings, "h" * 64)


def _state(reg) -> tuple:
    """Everything rm could change: solution rows, barrier rows, blob files."""
    con = sqlite3.connect(reg.home / "registry.db")
    sols = con.execute("select id, sha256, tags, note from solutions order by id").fetchall()
    rows = con.execute("select id, a_id, b_id from barriers order by id").fetchall()
    con.close()
    return sols, rows, sorted(reg.store.shas())


@pytest.fixture
def star_world(reg):
    """Anchors 1-3, held-out 4, star 5 from 1-3, barrier rows star-4 and 1-4, and an unrelated solution 6."""
    a = [_sol(reg, v, seed=i + 1) for i, v in enumerate((1.0, 2.0, 3.0, 4.0))]
    star = _sol(reg, 5.0, kind="star", seed=0, anchors=[a[0].id, a[1].id, a[2].id])
    other = _sol(reg, 6.0, seed=9)
    _barrier(reg, star.id, a[3].id)
    _barrier(reg, a[0].id, a[3].id)
    return a, star, other


def test_removing_a_stars_anchor_without_cascade_is_refused_and_changes_nothing(reg, star_world, cli):
    before = _state(reg)
    with pytest.raises(StarlightError, match="star 5 has 1 as an anchor.*barrier row 1 .*barrier row 2 .*--cascade"):
        manage.remove(reg, [1])
    code, out, err = cli("rm", "1")
    assert code == 1 and out == "" and err.count("\n") == 1 and "refusing to remove 1" in err
    assert _state(reg) == before


def test_cascade_removes_the_star_its_barrier_rows_and_now_unreferenced_blobs_and_nothing_else(reg, star_world, cli):
    (a1, a2, a3, held), star, other = star_world
    code, out, _ = cli("rm", "1", "--cascade", "--json")
    assert code == 0
    import json

    removal = json.loads(out)
    assert removal["solutions"] == [a1.id, star.id]
    assert len(removal["barriers"]) == 2  # star–4 and 1–4
    assert sorted(removal["blobs"]) == sorted([a1.sha256, star.sha256])
    sols, rows, shas = _state(reg)
    assert [s[0] for s in sols] == [a2.id, a3.id, held.id, other.id]
    assert rows == []
    assert shas == sorted(s.sha256 for s in (a2, a3, held, other))
    assert records.state_dict(reg, a2)["w"].tolist() == [2.0, 2.0, 2.0]  # the others still load


def test_a_blob_another_row_still_references_is_kept(reg):
    first = _sol(reg, 7.0, seed=1)
    twin = _sol(reg, 7.0, kind="external", seed=2)  # the same weights under another key: one blob
    assert first.sha256 == twin.sha256
    removal = manage.remove(reg, [first.id])
    assert removal.solutions == [first.id] and removal.blobs == []
    assert reg.store.holds(twin.sha256)
    assert manage.remove(reg, [twin.id]).blobs == [twin.sha256]
    assert not reg.store.holds(twin.sha256) and reg.store.shas() == []


def test_removing_a_star_with_its_anchors_needs_no_cascade_but_a_measured_pair_does(reg):
    a, b = _sol(reg, 1.0, seed=1), _sol(reg, 2.0, seed=2)
    star = _sol(reg, 3.0, kind="star", seed=0, anchors=[a.id, b.id])
    held = _sol(reg, 4.0, seed=3)
    # Everything built from 1 and 2 is among those removed: nothing else is taken, so no --cascade is needed.
    assert manage.remove(reg, records.select_ids(reg, "id=1-3")).solutions == [a.id, b.id, star.id]
    _barrier(reg, held.id, _sol(reg, 5.0, seed=4).id)
    with pytest.raises(StarlightError, match=r"barrier row 1 \(pair 4-5\)"):  # a stored pair is a dependent
        manage.remove(reg, [held.id])


def test_an_aligned_copy_depends_on_its_source_and_target(reg):
    a, b = _sol(reg, 1.0, seed=1), _sol(reg, 2.0, seed=2)
    copy = _sol(reg, 3.0, kind="aligned", seed=2, source_id=b.id, target_id=a.id)
    with pytest.raises(StarlightError, match=f"aligned {copy.id} was aligned to {a.id}"):
        manage.remove(reg, [a.id])
    with pytest.raises(StarlightError, match=f"aligned {copy.id} was aligned from {b.id}"):
        manage.remove(reg, [b.id])
    assert manage.remove(reg, [a.id], cascade=True).solutions == [a.id, copy.id]


def test_a_reregister_racing_the_collector_keeps_its_blob(reg):
    """The collector deletes a blob nothing references; a writer that put those same bytes just before
    must still end with its checkpoint: records.add puts it back once its row is in."""
    sol = _sol(reg, 8.0, seed=1)
    manage.remove(reg, [sol.id])
    assert not reg.store.holds(sol.sha256)

    other = open_registry(reg.home)  # a second process's connection to the same registry
    put = reg.store.put_bytes
    collected = []

    def put_then_collect(data: bytes) -> str:
        sha = put(data)
        if not collected:  # the collector runs between this put and the row's insert
            collected.append(manage.collect_blobs(other, [sha]))
        return sha

    reg.store.put_bytes = put_then_collect
    try:
        again = _sol(reg, 8.0, seed=1)
    finally:
        reg.store.put_bytes = put
        other.close()
    assert collected == [[sol.sha256]]  # it did delete the blob in the window
    assert again.sha256 == sol.sha256 and records.state_dict(reg, again)["w"].tolist() == [8.0] * 3


def test_doctor_fix_removes_orphan_blobs_and_stale_unlocked_runs_only(reg, cli):
    kept = _sol(reg, 1.0, seed=1)
    orphan = reg.store.put({"w": torch.zeros(2)})
    runs = manage.runs_dir(reg)
    old = time.time() - 2 * manage.STALE_RUN_SECONDS
    for name in ("stale", "live", "fresh"):
        (runs / name).mkdir(parents=True)
        (runs / name / "last.safetensors").write_bytes(b"x")
    for name in ("stale", "live"):
        os.utime(runs / name / "last.safetensors", (old, old))
        os.utime(runs / name, (old, old))
    young = reg.store.put({"w": torch.ones(2)})  # an orphan just put: perhaps an import's, about to get its row
    os.utime(reg.store.path(orphan), (old, old))

    code, out, _ = cli("doctor")
    assert code == 0 and f"orphan_checkpoints_found: {orphan}" in out
    assert reg.store.holds(orphan)  # reporting deletes nothing
    with manage.run_lock(runs / "live"):  # a training holds this one, however old its files look
        code, out, _ = cli("doctor", "--fix")
    assert code == 0
    assert f"orphan_checkpoints_removed: {orphan}" in out and f"stale_runs_removed: {runs / 'stale'}" in out
    assert not reg.store.holds(orphan) and reg.store.holds(kept.sha256)
    assert reg.store.holds(young) and young not in out  # younger than the grace period: never collected
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["fresh", "live"]


def test_tag_untag_note_and_list_by_tag(reg, star_world, cli):
    assert cli("tag", "1-2", "paper")[0] == 0
    assert cli("tag", "seed=2-3", "paper")[1] == "tagged 1 solutions: 3\n"  # 2 had it already
    code, out, _ = cli("list", "--tag", "paper", "--json")
    import json

    assert [r["id"] for r in json.loads(out)] == [1, 2, 3] and json.loads(out)[0]["tags"] == ["paper"]
    assert cli("untag", "2", "paper")[0] == 0
    assert [s.id for s in records.query(reg, tag="paper")] == [1, 3]
    assert cli("note", "3", "lr too high")[0] == 0
    assert records.get(reg, 3).note == "lr too high"
    code, out, _ = cli("show", "3")
    assert "note: lr too high" in out
    code, _, err = cli("tag", "1", "a,b")
    assert code == 2 and "a tag is a non-empty word" in err


def test_list_filters_by_recipe_seed_and_kind_and_shows_a_stars_settings(reg, cli):
    import json

    _sol(reg, 1.0, seed=1)
    _sol(reg, 2.0, seed=2)
    _sol(reg, 3.0, seed=2, recipe="cifar10-resnet18")
    star_config = {"lr": 0.1, "star": {"t_sampling": "beta:2,2", "mu_star": 0.5, "align_anchors": True}}
    _sol(reg, 4.0, kind="star", seed=0, anchors=[1, 2], config=star_config)
    rows = json.loads(cli("list", "--seed", "2", "--recipe", "mnist1d-mlp", "--json")[1])
    assert [r["id"] for r in rows] == [2]
    [star] = json.loads(cli("list", "--kind", "star", "--json")[1])
    assert (star["anchors_n"], star["t_sampling"], star["mu_star"], star["realign"]) == (2, "beta:2,2", 0.5, True)
    code, out, _ = cli("list")
    assert "anchors_n" in out.splitlines()[0] and "beta:2,2" in out
    before = _state(reg)
    code, out, err = cli("list", "--kind", "stra")
    assert code == 2 and out == "" and err == "error: unknown kind 'stra'; the kinds are anchor, star, soup, aligned, external, bend\n"
    assert _state(reg) == before
    code, out, err = cli("list", "--seed", "7")
    assert code == 0 and out == "" and "no solutions match these filters" in err


def test_attribute_selectors_parse_and_select():
    assert parse_attributes("seed=1-3,7,recipe=mnist1d-mlp") == {"seed": [1, 2, 3, 7], "recipe": ["mnist1d-mlp"]}
    assert parse_attributes("kind=anchor,star") == {"kind": ["anchor", "star"]}
    with pytest.raises(UsageError, match="unknown attribute 'colour'"):
        parse_attributes("colour=red")
    with pytest.raises(UsageError, match="names seed twice"):
        parse_attributes("seed=1,seed=2")
    with pytest.raises(UsageError, match="malformed"):
        parse_attributes("3,seed=1")


def test_selectors_by_attribute_find_solutions_and_plain_ids_stay_as_given(reg):
    for seed in (1, 2, 3):
        _sol(reg, float(seed), seed=seed)
    _sol(reg, 9.0, seed=2, recipe="cifar10-resnet18")
    assert records.select_ids(reg, "3,1") == [3, 1]
    assert records.select_ids(reg, "seed=2-3,recipe=mnist1d-mlp") == [2, 3]
    assert records.select_ids(reg, "seed=2") == [2, 4]
    with pytest.raises(StarlightError, match="no solution matches"):
        records.select_ids(reg, "seed=5")
    with pytest.raises(UsageError, match="unknown kind"):
        records.select_ids(reg, "kind=stars")


def test_rm_by_attribute_and_unknown_ids(reg, cli):
    _sol(reg, 1.0, seed=1)
    _sol(reg, 2.0, seed=2)
    code, out, _ = cli("rm", "seed=2")
    assert code == 0 and out == "removed solutions 2; 0 barrier rows; 1 checkpoints\n"
    code, _, err = cli("rm", "7")
    assert code == 1 and "no solution with id 7" in err
    assert [s.id for s in records.query(reg)] == [1]


def test_an_older_registry_gains_tags_note_and_history_and_its_rows_read_back(home, monkeypatch):
    import starcli.registry.migrations as m
    from starcli.registry.database import make_engine
    from starcli.registry.migrations import MIGRATIONS

    home.mkdir(parents=True)
    monkeypatch.setattr(m, "MIGRATIONS", MIGRATIONS[:3])  # a registry before m004
    engine = make_engine(f"sqlite:///{home / 'registry.db'}")
    m.apply(engine)
    engine.dispose()
    monkeypatch.undo()
    con = sqlite3.connect(home / "registry.db")
    con.execute(
        "insert into solutions (key, kind, arch, arch_kwargs, dataset, config, metrics, sha256, device, wall_seconds,"
        " created_at, versions, status, anchors) values ('k', 'anchor', 'mlp', '{}', 'mnist1d', '{}', '{}', 'ab',"
        " 'cpu', 0, '2026-01-01 00:00:00', '{}', 'complete', '[]')"
    )
    con.commit()
    con.close()
    reg = open_registry(home)
    sol = records.get(reg, 1)
    assert sol.tags is None and sol.note is None and sol.history is None
    assert manage.tag(reg, [1], "old") == [1] and records.get(reg, 1).tags == ["old"]
    with pytest.raises(StarlightError, match="trained before history was kept"):
        records.history(reg, 1)
    reg.close()


_RACE = """
import sys, torch
from starcli.registry import open_registry
from starcli.solutions import manage, records
role, home, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reg = open_registry(home)
fields = dict(kind="anchor", arch="mlp", arch_kwargs={}, width=4, seed=1, dataset="mnist1d", recipe="r", config={},
              epochs=1, metrics={}, device="cpu", wall_seconds=0.0, versions={})
weights = {"w": torch.full((64,), 3.0)}  # both processes register the same bytes: one blob
for i in range(n):
    # Register, load, remove: the other process's rm collects the shared blob whenever no row holds it,
    # often between this process's put and its insert.
    sol, _ = records.add(reg, weights, key=f"{role}-{i}", **fields)
    assert records.state_dict(reg, sol)["w"].tolist() == [3.0] * 64, i  # a registered row always loads
    if i < n - 1:
        manage.remove(reg, [sol.id])
print("ok")
"""


@pytest.mark.slow
def test_a_collector_and_a_writer_in_two_processes_never_leave_a_row_without_its_blob(home, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "race.py"
    script.write_text(_RACE)
    open_registry(home).close()  # migrate once, before the two start
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, str(script), role, str(home), "60"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for role in ("one", "two")
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    reg = open_registry(home)
    kept = records.query(reg)
    assert sorted(s.key for s in kept) == ["one-59", "two-59"]  # each kept its last
    assert all(records.state_dict(reg, s)["w"].tolist() == [3.0] * 64 for s in kept)
    assert reg.store.shas() == [kept[0].sha256]
    reg.close()


def test_the_store_lists_blobs_only_never_a_writers_temporary_file(reg):
    sol = _sol(reg, 1.0, seed=1)
    tmp = reg.store.path(sol.sha256).parent / ".tmp-abc123.safetensors"
    tmp.write_bytes(b"half a file")
    assert reg.store.shas() == [sol.sha256]
    assert manage.gc(reg, fix=True)["orphan_blobs"] == [] and tmp.exists()


def test_a_history_stored_before_accuracy_was_kept_still_displays_with_blank_accuracy(reg, cli, tmp_path):
    pytest.importorskip("pandas")  # starcli.api's extra
    import math

    from starcli import api

    old = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}]  # the rows of an older starlight
    sol = _sol(reg, 1.0, seed=1, history=old)
    assert records.history(reg, sol.id) == [dict(r, train_acc=None) for r in old]
    code, out, err = cli("history", str(sol.id), "--csv", "--plot", str(tmp_path / "h.png"))
    assert code == 0, err
    assert out == "epoch,train_loss,train_acc\n1,2.0,\n2,1.5,\n"
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = cli("history", str(sol.id))
    assert code == 0 and "1.5" in out
    assert json.loads(cli("history", str(sol.id), "--json")[1])[0] == {"epoch": 1, "train_loss": 2.0, "train_acc": None}
    hist = api.history(sol.id, home=reg.home)
    assert hist["train_loss"].tolist() == [2.0, 1.5] and all(math.isnan(v) for v in hist["train_acc"])
