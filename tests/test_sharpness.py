"""Sharpness (issue 22 item 5): the Lanczos eigenvalues and Hutchinson trace against a dense Hessian, and the
instrument on the registry: stored with its protocol, answered from the registry, listed, removed with its
solution, refused in one line with nothing stored."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from starcli.engine import sharpness
from starcli.solutions import anchors as anchor_training


def _tiny(bn: bool = False):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 9)] + ([nn.BatchNorm1d(9)] if bn else []) + [nn.Tanh(), nn.Linear(9, 4)]
    net = nn.Sequential(*layers)
    if bn:  # stored statistics that are not the defaults, as a trained network has
        net.train()
        with torch.no_grad():
            net(torch.randn(256, 6) * 2 + 1)
    x, y = torch.randn(80, 6), torch.randint(0, 4, (80,))
    return net.eval(), x, y


def _dense(net, x, y):
    """The plain reference: the whole Hessian of the mean loss by autograd, its spectrum and trace."""
    op = sharpness.HessianOperator(net, x, y)
    h = torch.autograd.functional.hessian(lambda p: op.loss(p, x, y), op.theta).double()
    return torch.linalg.eigvalsh(h).flip(0), h.trace().item(), h


@pytest.mark.parametrize("bn", [False, True])
def test_top_eigenvalues_equal_the_dense_hessians(bn):
    net, x, y = _tiny(bn)
    spectrum, _, _ = _dense(net, x, y)
    op = sharpness.HessianOperator(net, x, y, batch_size=32)  # three chunks, summed
    eig = sharpness.lanczos_top(op, op.dim, 3, max_iter=200, tol=1e-6)
    for got, want in zip(eig.values, spectrum[:3].tolist()):
        assert abs(got - want) <= 1e-4 * abs(want)
    assert eig.iterations < op.dim  # Krylov, not the whole space


def test_hessian_vector_products_equal_the_dense_hessians():
    net, x, y = _tiny(bn=True)
    _, _, h = _dense(net, x, y)
    op = sharpness.HessianOperator(net, x, y, batch_size=25)
    v = torch.randn(3, op.dim)
    assert torch.allclose(op(v).double(), v.double() @ h, atol=1e-5, rtol=1e-4)  # a vmapped block
    assert torch.allclose(op(v[0]).double(), h @ v[0].double(), atol=1e-5, rtol=1e-4)


def test_hutchinson_is_within_its_stated_error_of_the_trace():
    net, x, y = _tiny()
    _, trace, h = _dense(net, x, y)
    op = sharpness.HessianOperator(net, x, y)
    est = sharpness.hutchinson(op, op.dim, probes=300, seed=0)
    assert est.se > 0 and est.ci95[0] < est.mean < est.ci95[1]
    assert abs(est.mean - trace) <= 2 * est.se  # the stated 95% error
    assert est.ci95[0] <= trace <= est.ci95[1]
    # the estimator itself: the same probes' quadratic forms computed from the dense matrix
    g = torch.Generator().manual_seed(0)
    forms = []
    for start in range(0, 300, sharpness.PROBE_BLOCK):
        n = min(sharpness.PROBE_BLOCK, 300 - start)
        v = (torch.randint(0, 2, (n, op.dim), generator=g) * 2 - 1).double()
        forms.append(((v @ h) * v).sum(1))
    assert est.mean == pytest.approx(torch.cat(forms).mean().item(), rel=1e-5)
    assert sharpness.hutchinson(op, op.dim, probes=300, seed=0) == est  # a fixed seed, the same numbers


def test_lanczos_that_does_not_converge_says_so():
    net, x, y = _tiny()
    op = sharpness.HessianOperator(net, x, y)
    with pytest.raises(sharpness.NotConverged, match="did not converge in 2 Hessian-vector products"):
        sharpness.lanczos_top(op, op.dim, 2, max_iter=2, tol=1e-8)


def test_the_subset_is_fixed_by_its_seed():
    x, y = torch.arange(100.0).view(100, 1), torch.arange(100)
    a, b, c = (sharpness.fixed_subset(x, y, 10, seed=s) for s in (0, 0, 1))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert torch.equal(a[0].view(-1).long(), a[1])  # rows and labels stay paired
    assert sharpness.fixed_subset(x, y, 500)[0] is x


def _count(reg):
    from sqlmodel import select

    from starcli.registry import LandscapeResult

    with reg.session() as s:
        return len(list(s.exec(select(LandscapeResult))))


def test_sharpness_is_stored_answered_from_the_registry_and_listed(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1], device="cpu")
    args = ("sharpness", "1", "--top-k", "2", "--probes", "20", "--subset", "300", "--json")
    code, out, err = cli(*args)
    assert code == 0, err
    [row] = json.loads(out)
    res = row["result"]
    assert row["subject"] == "1" and res["samples"] == 300 and len(res["eigenvalues"]) == 2
    assert res["eigenvalues"][0] >= res["eigenvalues"][1] > 0 and res["trace"]["probes"] == 20
    assert row["settings"] == {"top_k": 2, "probes": 20, "subset": 300, "seed": 0, "max_iter": 100, "tol": 1e-4,
                               "batch_size": 4096, "split": "train", "mode": "eval"}
    # the same numbers from the engine on the same solution and subset
    from starcli.engine.data import load_split
    from starcli.solutions import records

    sol = records.get(reg, 1)
    split = load_split(sol.dataset, "train", torch.device("cpu"), cache_dir=records.dataset_cache(reg))
    x, y = sharpness.fixed_subset(split.x, split.y, 300, 0)
    direct = sharpness.measure(records.network(reg, sol), x, y, 2, 20, 100, 1e-4)
    assert direct["eigenvalues"] == res["eigenvalues"] and direct["trace"] == res["trace"]

    code, again, err = cli(*args, "--plot", str(home / "sharpness.png"))
    assert code == 0 and "answered from the registry" in err
    assert json.loads(again) == [row]
    assert (home / "sharpness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, listed, _ = cli("landscapes", "--kind", "sharpness", "--json")
    [item] = json.loads(listed)
    assert item["lambda_max"] == res["eigenvalues"][0] and item["trace"] == res["trace"]["mean"]
    # removing the solution refuses while its row exists, and --cascade takes the row with it
    code, _, err = cli("rm", "1")
    assert code == 1 and "sharpness row" in err and _count(reg) == 1
    code, out, err = cli("rm", "1", "--cascade")
    assert code == 0 and "1 instrument rows" in out and _count(reg) == 0


@pytest.mark.parametrize("args, message", [
    (("--probes", "1"), "--probes must be 0"),
    (("--top-k", "5", "--max-iter", "3"), "--max-iter (3) must be at least --top-k (5)"),
    (("--tol", "0"), "--tol must be"),
    (("--max-iter", "3", "--top-k", "2", "--tol", "1e-9"), "did not converge in 3 Hessian-vector products"),
])
def test_bad_requests_are_one_line_and_store_nothing(reg, home, tiny_config, cli, args, message):
    anchor_training.train(reg, tiny_config, [1], device="cpu")
    code, out, err = cli("sharpness", "1", "--subset", "200", "--probes", "4", *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # progress lines aside
    assert code != 0 and len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert _count(reg) == 0


def test_an_unknown_solution_is_one_line(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1], device="cpu")
    code, _, err = cli("sharpness", "7")
    assert code == 1 and "no solution with id 7" in err and _count(reg) == 0


def test_the_local_pool_stores_the_same_numbers(reg, home, tiny_config, cli):
    """Jobs on two spawned workers (a real pool) equal the same jobs run here."""
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    base = ("sharpness", "1-2", "--probes", "8", "--subset", "200", "--json")
    code, pooled, err = cli(*base, "--jobs", "2")
    assert code == 0, err
    code, here, err = cli(*base, "--recompute")
    assert code == 0, err
    assert [r["result"]["eigenvalues"] for r in json.loads(pooled)] == [r["result"]["eigenvalues"] for r in json.loads(here)]
    assert [r["result"]["trace"] for r in json.loads(pooled)] == [r["result"]["trace"] for r in json.loads(here)]


def test_listing_and_a_sharpness_answered_from_the_registry_import_no_torch(reg, home, tiny_config, cli):
    import os
    import subprocess
    import sys
    from pathlib import Path

    anchor_training.train(reg, tiny_config, [1], device="cpu")
    args = ["sharpness", "1", "--probes", "4", "--subset", "100", "--json"]
    code, first, err = cli(*args)
    assert code == 0, err
    script = ("import json, sys; from starcli.cli import main; code = main(sys.argv[1:]);"
              "sys.stderr.write('TORCH' + json.dumps('torch' in sys.modules) + '\\n'); sys.exit(code)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    outputs = {}
    for command in (args, ["landscapes", "--json"], ["sharpness", "--help"]):
        out = subprocess.run([sys.executable, "-c", script, "--home", str(home), *command], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert [ln for ln in out.stderr.splitlines() if ln.startswith("TORCH")] == ["TORCHfalse"], command
        outputs[" ".join(command)] = out.stdout
    assert json.loads(outputs[" ".join(args)]) == json.loads(first)


def test_sharpness_along_a_segment_equals_sharpness_at_its_points(reg, home, tiny_config, cli):
    anchor_training.train(reg, tiny_config, [1, 2], device="cpu")
    code, out, err = cli("sharpness", "1", "--along", "2", "--points", "3", "--probes", "6", "--subset", "200", "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert row["subject"] == "1-2" and row["settings"]["align"] == "weight" and row["result"]["t"] == [0.0, 0.5, 1.0]
    from starcli.alignment import align_state
    from starcli.engine.data import load_split
    from starcli.engine.interpolation import interpolate_state
    from starcli.solutions import records

    a, b = records.get_many(reg, [1, 2])
    sa = records.state_dict(reg, a)
    sb = align_state(a.arch, a.arch_kwargs, sa, records.state_dict(reg, b), seed=0)
    split = load_split(a.dataset, "train", torch.device("cpu"), cache_dir=records.dataset_cache(reg))
    x, y = sharpness.fixed_subset(split.x, split.y, 200, 0)
    net = records.network(reg, a)
    for t, point in zip((0.0, 0.5), row["result"]["points"]):
        net.load_state_dict(interpolate_state(sa, sb, t))
        direct = sharpness.measure(net, x, y, 1, 6, 100, 1e-4)
        assert point["eigenvalues"] == pytest.approx(direct["eigenvalues"], rel=1e-6) and point["loss"] == pytest.approx(direct["loss"])
    # the far end is held-out 2 permuted: the same function, so the same spectrum as 2 measured alone
    code, alone, err = cli("sharpness", "2", "--probes", "6", "--subset", "200", "--json")
    assert row["result"]["points"][2]["eigenvalues"][0] == pytest.approx(json.loads(alone)[0]["result"]["eigenvalues"][0], rel=1e-4)
    code, _, err = cli("sharpness", "1", "--along", "1")
    assert code == 2 and "--along names solution 1 itself" in err


def test_the_notebook_api_lists_the_stored_rows(reg, home, tiny_config, cli):
    pytest.importorskip("pandas")
    from starcli import api

    anchor_training.train(reg, tiny_config, [1], device="cpu")
    code, out, err = cli("sharpness", "1", "--probes", "4", "--subset", "100", "--json")
    assert code == 0, err
    frame = api.landscapes(kind="sharpness")
    assert list(frame["subject"]) == ["1"] and frame["lambda_max"][0] == json.loads(out)[0]["result"]["eigenvalues"][0]
    assert api.landscapes(solution=2).empty
