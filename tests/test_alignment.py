"""Permutation alignment: derived specs are proved by a self-check, weight matching keeps the function
and never moves B away from A, it lowers barriers, and anything the tracer cannot handle says so."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from starcli import alignment, models
from starcli.alignment import derive, selfcheck
from starcli.alignment.spec import PermutationSpec
from starcli.engine import data, training
from starcli.errors import StarlightError
from starcli.solutions import records

ARCHITECTURES = [
    ("mlp", {"width": 16}),
    ("mlp", {"width": 16, "depth": 2, "batch_norm": True}),
    ("linear2", {"width": 8, "input_size": 3}),
    ("cifar_resnet18", {"width": 8}),
    ("cifar_vgg11", {"width": 4}),
    ("cifar_vgg11", {"width": 4, "batch_norm": True}),
    ("cifar_vgg19", {"width": 2}),
    ("cifar_vgg19", {"width": 2, "batch_norm": True}),
    ("wrn", {"depth": 10, "width": 1}),
    ("resnet18", {"num_classes": 10}),
    ("resnet50", {"num_classes": 10}),
    ("vgg11_bn", {"num_classes": 10, "mlp_ratio": 0.125}),
    ("densenet121", {"num_classes": 10}),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run many small ops; on a shared 2-core machine, two OpenMP threads waiting for each
    other make them ten times slower, one thread does not."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _params(arch, kwargs):
    return [n for n, _ in models.create(arch, **kwargs).named_parameters()]


def _distance(a, b, names):
    return sum(((a[n] - b[n]) ** 2).sum() for n in names).item() ** 0.5


@pytest.mark.parametrize("arch,kwargs", ARCHITECTURES, ids=lambda v: v if isinstance(v, str) else json.dumps(v))
def test_the_derived_spec_of_every_supported_architecture_passes_its_self_check(arch, kwargs):
    check = alignment.self_check(arch, kwargs)
    assert check.ok, check.summary()
    assert check.spec.sizes and alignment.has_spec(arch, kwargs)
    assert not check.spec.unpermuted  # every hidden layer of these is permuted
    state = models.create(arch, **kwargs).state_dict()
    assert check.spec.coverage(state) > 0.98


def test_specs_tie_residual_streams_and_cover_batchnorm_statistics_but_not_batch_counters():
    spec = alignment.spec_for("cifar_resnet18", {"width": 8})
    axes = spec.axes
    # The stem, every first-stage block output and its BatchNorm share the residual stream's permutation.
    assert axes["conv1.weight"][0] == axes["layer1.0.bn2.weight"][0] == axes["layer1.1.bn2.running_mean"][0]
    assert axes["layer1.0.conv1.weight"] == (("layer1.0.conv1",), ("conv1",), None, None)
    assert axes["fc.weight"] == (None, axes["layer4.0.bn2.weight"][0])
    assert "fc.bias" not in axes and "bn1.num_batches_tracked" not in axes
    assert "layer1.0.bn1.running_var" in spec.buffers


def test_densenet_concatenations_become_one_segment_per_layer():
    spec = alignment.spec_for("densenet121", {"num_classes": 10})
    segments = spec.axes["features.denseblock1.denselayer3.norm1.weight"][0]
    assert segments == (
        "features.conv0",
        "features.denseblock1.denselayer1.conv2",
        "features.denseblock1.denselayer2.conv2",
    )


def test_a_vision_transformer_permutes_mlp_units_and_warns_that_attention_stays(recwarn):
    kwargs = {"num_classes": 10, "img_size": 32, "depth": 2}
    check = alignment.self_check("vit_tiny_patch16_224", kwargs)
    assert check.ok, check.summary()
    assert "blocks.0.mlp.fc1" in check.spec.sizes
    assert set(check.spec.unpermuted) == {"blocks.0.attn.qkv", "blocks.1.attn.qkv"}
    assert any("keep their unit order" in str(w.message) for w in recwarn.list)


def test_weight_matching_undoes_a_known_permutation_exactly():
    spec = alignment.spec_for("cifar_resnet18", {"width": 8})
    torch.manual_seed(0)
    a = models.create("cifar_resnet18", width=8).state_dict()
    g = torch.Generator().manual_seed(1)
    b = alignment.apply_permutation(spec, {k: torch.randperm(n, generator=g) for k, n in spec.sizes.items()}, a)
    back = alignment.weight_matching(spec, a, b, seed=3)
    aligned = alignment.apply_permutation(spec, back, b)
    assert all(torch.equal(aligned[k], a[k]) for k in a)


@pytest.mark.parametrize("arch,kwargs", [("cifar_resnet18", {"width": 8}), ("cifar_vgg11", {"width": 4, "batch_norm": True})])
def test_aligning_b_keeps_its_function_and_does_not_move_it_away_from_a(arch, kwargs):
    torch.manual_seed(1)
    net_a = models.create(arch, **kwargs)
    torch.manual_seed(2)
    net_b = models.create(arch, **kwargs)
    # Trained networks have non-trivial BatchNorm statistics; give these some so they are tested.
    state_b = selfcheck._break_symmetries(net_b.state_dict(), torch.Generator().manual_seed(5))
    state_b = {k: v.clone() for k, v in state_b.items()}  # loading `aligned` below must not change these
    net_b.load_state_dict(state_b)
    state_a = net_a.state_dict()
    aligned = alignment.align_state(arch, kwargs, state_a, state_b, seed=0)

    x = torch.randn(4, 3, 32, 32)
    net_b.eval()
    with torch.no_grad():
        before = net_b(x)
        net_b.load_state_dict(aligned)
        after = net_b(x)
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    names = _params(arch, kwargs)
    assert _distance(state_a, aligned, names) < _distance(state_a, state_b, names)
    counters = [k for k in state_b if k.endswith("num_batches_tracked")]
    assert counters and all(torch.equal(aligned[k], state_b[k]) for k in counters)


def test_weight_matching_is_reproducible_for_a_seed():
    spec = alignment.spec_for("mlp", {"width": 16, "depth": 2, "batch_norm": True})
    torch.manual_seed(1)
    a = models.create("mlp", width=16, depth=2, batch_norm=True).state_dict()
    torch.manual_seed(2)
    b = models.create("mlp", width=16, depth=2, batch_norm=True).state_dict()
    first, second = (alignment.weight_matching(spec, a, b, seed=7) for _ in range(2))
    assert all(torch.equal(first[g], second[g]) for g in spec.sizes)


def _loss_barrier(net, state_a, state_b, x, y, points=11):
    """Train-loss barrier (paper Eq. 1) on a BN-free network: the largest rise above the straight line."""
    losses = []
    for t in torch.linspace(0, 1, points):
        net.load_state_dict({k: torch.lerp(state_a[k], state_b[k], t) for k in state_a})
        with torch.no_grad():
            losses.append(F.cross_entropy(net.eval()(x), y).item())
    line = torch.linspace(losses[0], losses[-1], points)
    return max(0.0, max(l - float(v) for l, v in zip(losses, line)))


def test_on_mnist1d_mlps_the_aligned_barrier_is_lower_than_the_unaligned_one(tiny_config):
    from starcli.engine import recipes

    config = recipes.resolve("mnist1d-mlp", width=128, epochs=6)
    train = data.load_split("mnist1d", "train", torch.device("cpu"), cache_dir=None)
    a = training.fit(config, 1, torch.device("cpu"), train).state_dict()
    b = training.fit(config, 2, torch.device("cpu"), train).state_dict()
    aligned = alignment.align_state("mlp", config["arch_kwargs"], a, b)
    net = models.create("mlp", **config["arch_kwargs"])
    raw = _loss_barrier(net, a, b, train.x, train.y)
    matched = _loss_barrier(net, a, aligned, train.x, train.y)
    assert matched < raw, (matched, raw)


class _Cumulative(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.mix = _CumsumBlock()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.mix(self.body(x)))


class _CumsumBlock(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1)


def test_an_operation_without_a_rule_is_refused_naming_it_and_its_module():
    with pytest.raises(StarlightError, match=r"cumsum.*'mix'"):
        derive.derive_spec(_Cumulative(), torch.randn(2, 4))


class _Mixed(nn.Module):
    """Depthwise and grouped convs, GroupNorm, LayerNorm, a concat, a squeeze-excite gate."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gn = nn.GroupNorm(1, 8)
        self.pre = nn.Conv2d(3, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 1, groups=2)
        self.branch = nn.Conv2d(8, 4, 1)
        self.gate = nn.Linear(12, 12)
        self.ln = nn.LayerNorm(12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = F.gelu(self.gn(self.depthwise(self.stem(x))))
        x = torch.cat([self.grouped(self.pre(x)), self.branch(h)], dim=1)
        x = x * torch.sigmoid(self.gate(x.mean((2, 3))))[:, :, None, None]
        return self.head(self.ln(F.adaptive_avg_pool2d(x, 1).flatten(1)))


def test_depthwise_convs_share_their_channels_and_grouped_convs_stay_in_place():
    net, x = _Mixed().eval(), torch.randn(2, 3, 8, 8)
    spec = derive.derive_spec(net, x)
    assert spec.axes["depthwise.weight"][0] == spec.axes["stem.weight"][0] == ("stem",)
    assert "grouped.weight" not in spec.axes and "pre.weight" not in spec.axes
    assert spec.axes["ln.weight"][0] == (8, "branch")  # the grouped half stays, the other half permutes
    assert spec.axes["gate.weight"] == ((8, "branch"), (8, "branch"))
    assert {"pre", "grouped"} <= set(spec.unpermuted)
    assert selfcheck.check(spec, net, x).ok


def test_a_hand_written_spec_is_used_and_self_checked(monkeypatch):
    monkeypatch.setattr(alignment, "_HAND_WRITTEN", {})
    monkeypatch.setattr(alignment, "_CACHE", {})
    good = lambda model: PermutationSpec.from_axes(  # noqa: E731
        {"1.weight": ("P", None), "2.weight": (None, "P")}, model.state_dict()
    )
    alignment.register_spec("linear2", good)
    assert alignment.self_check("linear2", {"width": 5}).ok
    bad = lambda model: PermutationSpec.from_axes({"1.weight": ("P", None)}, model.state_dict())  # noqa: E731
    alignment.register_spec("linear2", bad)
    with pytest.raises(StarlightError, match="failed its self-check"):
        alignment.spec_for("linear2", {"width": 5})
    assert not alignment.has_spec("linear2", {"width": 5})
    assert not alignment.has_spec("no_such_architecture", {})


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def reg(home, request, anchor_home):
    """The test's registry: when the test uses `two_anchors`, a copy of conftest's `anchor_home((1, 2), 'cpu')`
    (trained once per session instead of once per test), else empty."""
    from starcli.registry import open_registry

    if "two_anchors" in request.fixturenames:
        shutil.copytree(anchor_home((1, 2), "cpu"), home, dirs_exist_ok=True)  # database, blobs, dataset cache
    r = open_registry(home)
    yield r
    r.close()


@pytest.fixture
def two_anchors(reg):
    anchors = sorted(records.query(reg), key=lambda sol: sol.seed)
    assert [sol.seed for sol in anchors] == [1, 2]
    return anchors


def test_align_registers_an_aligned_copy_computing_b_s_function_once(cli, reg, two_anchors):
    a, b = two_anchors
    code, out, err = cli("align", str(b.id), "--to", str(a.id), "--json")
    assert code == 0, err
    rec = json.loads(out)
    full = records.record(reg, records.get(reg, rec["id"]), full=True)
    assert rec["kind"] == "aligned" and full["source_id"] == b.id and full["target_id"] == a.id
    assert full["config"]["method"] == "weight_matching" and full["config"]["seed"] == 0
    assert rec["metrics"]["l2_to_target"] <= rec["metrics"]["l2_to_target_unaligned"]
    x = torch.randn(16, 40)
    with torch.no_grad():
        expected = records.network(reg, b)(x)
        got = records.network(reg, records.get(reg, rec["id"]))(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    code, out, _ = cli("align", str(b.id), "--to", str(a.id))
    assert code == 0 and "already aligned" in out and len(records.query(reg)) == 3


@pytest.mark.parametrize(
    "args,code,message",
    [(("1", "--to", "1"), 2, "itself"), (("1", "--to", "99"), 1, "no solution with id 99"), (("x", "--to", "1"), 2, "integer")],
)
def test_align_errors_are_one_line_and_register_nothing(cli, reg, two_anchors, args, code, message):
    got, out, err = cli("align", *args)
    assert got == code and message in err and len(err.strip().splitlines()) == 1 and out == ""
    assert len(records.query(reg)) == 2


def test_spec_prints_groups_coverage_and_the_self_check(cli, home):
    code, out, err = cli("spec", "--arch", "mlp", "--arch-kwargs", '{"width": 16, "depth": 2}', "--json")
    assert code == 0, err
    info = json.loads(out)
    assert [g["group"] for g in info["groups"]] == ["layers.1", "layers.3"]
    assert info["self_check"]["ok"] and 0.9 < info["coverage"] < 1
    code, out, _ = cli("spec", "--arch", "cifar_vgg11", "--arch-kwargs", '{"width": 2}')
    assert code == 0 and "self-check passed" in out and "permutation groups cover" in out


def test_spec_refuses_an_unknown_arch_and_exits_1_when_the_self_check_fails(cli, home, monkeypatch):
    code, out, err = cli("spec", "--arch", "no_such_architecture")
    assert code == 2 and "unknown architecture" in err and len(err.strip().splitlines()) == 1  # a usage error, like every bad config value
    monkeypatch.setattr(alignment, "_HAND_WRITTEN", {})
    monkeypatch.setattr(alignment, "_CACHE", {})
    alignment.register_spec("linear2", lambda m: PermutationSpec.from_axes({"1.weight": ("P", None)}, m.state_dict()))
    code, out, err = cli("spec", "--arch", "linear2", "--arch-kwargs", '{"width": 4}')
    assert code == 1 and "self-check FAILED" in out and "failed its self-check" in err


class _GatedMLP(nn.Module):
    """A SwiGLU-style block: one layer's output chunked into a gate and a value."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


def test_a_chunked_layer_output_permutes_its_pieces_together():
    net, x = _GatedMLP().eval(), torch.randn(4, 6)
    spec = derive.derive_spec(net, x)
    assert spec.axes["fc1.weight"][0] == ("fc1", "fc1") and spec.axes["fc2.weight"][1] == ("fc1",)
    assert selfcheck.check(spec, net, x).ok
