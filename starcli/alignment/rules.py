"""How each operation ties tensor axes: one rule per family of torch.fx operations.

A rule receives the derivation `d` and the node, and returns the output's axes. For every axis of its
inputs and outputs it must either tie it (`d.link`, or pass the same atoms through) or fix it
(`d.fix`, `d.fresh`): an axis a rule forgets could be permuted although the operation is not
equivariant along it. Fixing is always safe (it only leaves a permutation unused); the self-check in
`selfcheck.py` catches a rule that ties too much.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .tracing import Axes, Axis, Derivation, Many

Rule = Callable[[Derivation, fx.Node], Any]


def apply(d: Derivation, node: fx.Node) -> Any:
    """The axes of `node`'s value: Axes for a tensor, Many for several tensors, None otherwise."""
    value = node.meta.get("example")
    if node.op == "placeholder":
        return _fixed_like(d, value, "network input")
    if node.op == "output":
        for arg in node.all_input_nodes:
            for axes in _all_axes(d.values.get(arg)):
                for axis in axes:
                    d.fix(axis, "network output")
        return None
    if node.op == "get_attr":
        if isinstance(value, torch.Tensor) and node.target in d.canonical:
            return d.param(node.target)
        return _fixed_like(d, value, f"constant tensor {node.target}")
    inputs = [n for n in node.all_input_nodes if d.values.get(n) is not None]
    if not _has_tensor(value):
        if inputs and not _is_metadata_query(node):
            raise d.unsupported("it turns tensors into Python values")
        return None
    if not inputs:
        return _fixed_like(d, value)  # built from constants (torch.zeros, arange...): nothing to permute
    rule = _lookup(d, node)
    if rule is None:
        raise d.unsupported()
    out = rule(d, node)
    _check_shapes(d, out, value)
    return out


def _lookup(d: Derivation, node: fx.Node) -> Rule | None:
    if node.op == "call_module":
        for cls in type(d.module(node)).__mro__:
            if cls in MODULE_RULES:
                return MODULE_RULES[cls]
        return None
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    return FUNCTION_RULES.get(node.target)


# --- helpers ------------------------------------------------------------------------------------


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value)


def _fixed_like(d: Derivation, value: Any, reason: str | None = None) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(d.fresh(n, reason) for n in value.shape)
    if _has_tensor(value):
        return Many(_fixed_like(d, v, reason) for v in value)
    return None


def _all_axes(axes: Any) -> list[Axes]:
    if axes is None:
        return []
    return [a for item in axes for a in _all_axes(item)] if isinstance(axes, Many) else [axes]


def _is_metadata_query(node: fx.Node) -> bool:
    """Shape, dtype and device queries read no values, so they are invariant under permutations."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "ndimension", "numel", "get_device")
    if node.target is getattr:
        return node.args[1] in ("shape", "dtype", "device", "ndim", "is_cuda", "requires_grad")
    return False


def _check_shapes(d: Derivation, out: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        sizes = [sum(d.atoms.size[a] for a in d.atoms.resolve(ax)) for ax in out]
        if not isinstance(out, tuple) or sizes != list(value.shape):
            raise d.unsupported(f"internal error: rule gave axes {sizes} for a tensor of shape {list(value.shape)}")
    else:
        for o, v in zip(out, value):
            _check_shapes(d, o, v)


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _example(x: Any) -> Any:
    return fx.node.map_arg(x, lambda n: n.meta["example"])


def _tensor_args(d: Derivation, node: fx.Node) -> list[fx.Node]:
    return [n for n in node.all_input_nodes if isinstance(d.values.get(n), tuple)]


def _broadcast(d: Derivation, out_shape: tuple[int, ...], operands: list[tuple[Axes, tuple[int, ...]]]) -> Axes:
    """Tie each output axis to the operand axes of the same size (right-aligned); a size-1 operand
    axis is broadcast, i.e. constant along the output axis, so it needs no tie."""
    out: list[Axis | None] = [None] * len(out_shape)
    for axes, shape in operands:
        lead = len(out_shape) - len(shape)
        for i, n in enumerate(shape):
            j = lead + i
            if n == out_shape[j]:
                out[j] = axes[i] if out[j] is None else d.link(out[j], axes[i])
    return tuple(o if o is not None else d.fresh(out_shape[j]) for j, o in enumerate(out))


def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


# --- elementwise, reductions, shapes -------------------------------------------------------------


def elementwise(d: Derivation, node: fx.Node) -> Axes:
    """Activations, arithmetic, dropout, softmax (equivariant along its own dim too)."""
    return _broadcast(d, d.shape(node), [(d.axes(n), d.shape(n)) for n in _tensor_args(d, node)])


def reduction(d: Derivation, node: fx.Node) -> Axes:
    """mean/sum/amax...: a sum over an axis is invariant under its permutations; kept axes pass."""
    x = node.args[0]
    xa, nd = d.axes(x), len(d.shape(x))
    dim = arg(node, 1, "dim", None)
    dims = set(range(nd)) if dim is None or dim == () or dim == [] else {
        _norm_dim(k, nd) for k in (dim if isinstance(dim, (tuple, list)) else (dim,))
    }
    keepdim = len(d.shape(node)) == nd
    return tuple(d.fresh(1) if i in dims else xa[i] for i in range(nd) if keepdim or i not in dims)


def reshape(d: Derivation, node: fx.Node) -> Axes:
    """view/reshape/flatten/squeeze: an axis that survives whole is tied; axes that are merged or
    split are fixed (a permutation of merged channels would be a block permutation)."""
    x = node.args[0]
    xa, in_shape, out_shape = d.axes(x), d.shape(x), d.shape(node)
    ins = [(i, n) for i, n in enumerate(in_shape) if n != 1]
    outs = [(j, n) for j, n in enumerate(out_shape) if n != 1]
    out: list[Axis | None] = [None] * len(out_shape)
    a = b = 0
    while a < len(ins) and b < len(outs):
        block_in, block_out = [ins[a]], [outs[b]]
        p_in, p_out = ins[a][1], outs[b][1]
        a, b = a + 1, b + 1
        while p_in != p_out:
            if p_in < p_out:
                block_in.append(ins[a])
                p_in *= ins[a][1]
                a += 1
            else:
                block_out.append(outs[b])
                p_out *= outs[b][1]
                b += 1
        if len(block_in) == 1 and len(block_out) == 1:
            out[block_out[0][0]] = xa[block_in[0][0]]
        else:
            for i, _ in block_in:
                d.fix(xa[i], f"{d.op_name} splits or merges it in {d.where}")
            for j, n in block_out:
                out[j] = d.fresh(n, f"{d.op_name} splits or merges it in {d.where}")
    return tuple(o if o is not None else d.fresh(out_shape[j]) for j, o in enumerate(out))


def reorder(d: Derivation, node: fx.Node) -> Axes:
    """permute/transpose/movedim/.T: run the same call on a tensor with distinct sizes to read off
    which input axis lands where."""
    x = node.args[0]
    xa, nd = d.axes(x), len(d.shape(x))
    probe = torch.empty(tuple(range(2, nd + 2)))
    rest = _example(tuple(node.args[1:])), _example(dict(node.kwargs))
    if node.op == "call_method":
        moved = getattr(probe, node.target)(*rest[0], **rest[1])
    elif node.target is getattr:
        if node.args[1] not in ("T", "mT"):
            raise d.unsupported(f"tensor attribute .{node.args[1]}")
        moved = getattr(probe, node.args[1])
    else:
        moved = node.target(probe, *rest[0], **rest[1])
    return tuple(xa[n - 2] for n in moved.shape)


def getitem(d: Derivation, node: fx.Node) -> Any:
    x, index = node.args
    xa = d.axes(x)
    if isinstance(xa, Many):
        return xa[index]
    shape, index = d.shape(x), _example(index)
    items = index if isinstance(index, tuple) else (index,)
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    out, i = [], 0
    for it in items:
        if it is Ellipsis:
            out.extend(xa[i : i + len(shape) - consuming])
            i += len(shape) - consuming
        elif it is None:
            out.append(d.fresh(1))
        elif isinstance(it, bool) or not isinstance(it, (int, slice)):
            raise d.unsupported("indexing with a tensor, list or bool")
        elif isinstance(it, int):
            d.fix(xa[i], f"indexing in {d.where}")
            i += 1
        else:
            kept = range(*it.indices(shape[i]))
            if kept == range(shape[i]):
                out.append(xa[i])
            else:
                d.fix(xa[i], f"slicing in {d.where}")
                out.append(d.fresh(len(kept), f"slicing in {d.where}"))
            i += 1
    return tuple(out) + tuple(xa[i:])


def cat(d: Derivation, node: fx.Node) -> Axes:
    """Concatenation (DenseNet): the joined axis is the sequence of its parts' atoms."""
    parts = [t for t in arg(node, 0, "tensors") if isinstance(d.values.get(t), tuple)]
    nd = len(d.shape(node))
    dim = _norm_dim(arg(node, 1, "dim", 0), nd)
    parts = [t for t in parts if d.shape(t)[dim] > 0]
    out = list(d.axes(parts[0]))
    for t in parts[1:]:
        ta = d.axes(t)
        for k in range(nd):
            if k != dim:
                out[k] = d.link(out[k], ta[k])
    out[dim] = tuple(a for t in parts for a in d.axes(t)[dim])
    return tuple(out)


def stack(d: Derivation, node: fx.Node) -> Axes:
    parts = arg(node, 0, "tensors")
    nd = len(d.shape(node))
    dim = _norm_dim(arg(node, 1, "dim", 0), nd)
    axes = list(d.axes(parts[0]))
    for t in parts[1:]:
        axes = [d.link(a, b) for a, b in zip(axes, d.axes(t))]
    return tuple(axes[:dim]) + (d.fresh(len(parts)),) + tuple(axes[dim:])


def split(d: Derivation, node: fx.Node) -> Many:
    """unbind/chunk/split: pieces that fall on segment boundaries keep their segments' atoms."""
    x = node.args[0]
    xa, shape = d.axes(x), d.shape(x)
    pieces = node.meta["example"]
    if node.target in ("unbind", torch.unbind):
        dim = _norm_dim(arg(node, 1, "dim", 0), len(shape))
        d.fix(xa[dim], f"unbind in {d.where}")
        return Many(tuple(xa[:dim]) + tuple(xa[dim + 1 :]) for _ in pieces)
    dim = _norm_dim(arg(node, 2, "dim", 0), len(shape))
    atoms = d.atoms.resolve(xa[dim])
    if len(atoms) == 1 and len(pieces) > 1:  # a fresh layer output may be cut where the pieces are
        atoms = d.atoms.split(xa[dim], [p.shape[dim] for p in pieces]) or atoms
    bounds, pos = {0: 0}, 0
    for k, a in enumerate(atoms):
        pos += d.atoms.size[a]
        bounds[pos] = k + 1
    out, start = Many(), 0
    for piece in pieces:
        stop = start + piece.shape[dim]
        if start in bounds and stop in bounds:
            axis = tuple(atoms[bounds[start] : bounds[stop]])
        else:
            d.fix(xa[dim], f"split in {d.where}")
            axis = d.fresh(piece.shape[dim])
        out.append(tuple(xa[:dim]) + (axis,) + tuple(xa[dim + 1 :]))
        start = stop
    return out


def broadcast_to(d: Derivation, node: fx.Node) -> Axes:
    """expand/repeat: axes that keep their size pass; a repeated axis is fixed, a new one is fresh."""
    x = node.args[0]
    xa, xs, out_shape = d.axes(x), d.shape(x), d.shape(node)
    lead = len(out_shape) - len(xs)
    out = [d.fresh(n) for n in out_shape[:lead]]
    for i, n in enumerate(xs):
        if n == out_shape[lead + i]:
            out.append(xa[i])
        else:
            d.fix(xa[i])
            out.append(d.fresh(out_shape[lead + i]))
    return tuple(out)


def matmul(d: Derivation, node: fx.Node) -> Axes:
    """a @ b: permuting a's columns and b's rows together leaves the product unchanged."""
    a, b = node.args[0], node.args[1]
    aa, ba, as_, bs = d.axes(a), d.axes(b), d.shape(a), d.shape(b)
    if len(as_) < 2 or len(bs) < 2:
        raise d.unsupported("matmul with a vector")
    d.link(aa[-1], ba[-2])
    batch = _broadcast(d, d.shape(node)[:-2], [(aa[:-2], as_[:-2]), (ba[:-2], bs[:-2])])
    return batch + (aa[-2], ba[-1])


def attention(d: Derivation, node: fx.Node) -> Axes:
    """F.scaled_dot_product_attention: queries and keys share their feature axis, keys and values
    their position axis."""
    q, k, v = (arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
    qa, ka, va = d.axes(q), d.axes(k), d.axes(v)
    if arg(node, 7, "enable_gqa", False):
        raise d.unsupported("grouped-query attention")
    mask, causal = arg(node, 3, "attn_mask"), arg(node, 5, "is_causal", False)
    if mask is not None or causal:  # a mask singles out positions
        d.fix(qa[-2], f"attention mask in {d.where}")
        d.fix(ka[-2], f"attention mask in {d.where}")
        for axis in d.axes(mask) or ():
            d.fix(axis, f"attention mask in {d.where}")
    d.link(qa[-1], ka[-1])
    d.link(ka[-2], va[-2])
    shapes = [(qa[:-2], d.shape(q)[:-2]), (ka[:-2], d.shape(k)[:-2]), (va[:-2], d.shape(v)[:-2])]
    return _broadcast(d, d.shape(node)[:-2], shapes) + (qa[-2], va[-1])


def spatial(n_spatial: int | None) -> Rule:
    """Pooling, upsampling, padding: equivariant in the leading (batch, channel) axes; the last
    `n_spatial` axes are fixed."""

    def rule(d: Derivation, node: fx.Node) -> Axes:
        x = node.args[0]
        xa = d.axes(x)
        k = n_spatial if n_spatial is not None else len(xa) - 2
        if node.target in (F.pad, "pad"):
            k = len(arg(node, 1, "pad")) // 2
        lead = len(xa) - k
        for axis in xa[lead:]:
            d.fix(axis)
        return tuple(xa[:lead]) + tuple(d.fresh(n) for n in d.shape(node)[lead:])

    return rule


# --- layers with parameters ----------------------------------------------------------------------


def _linear(d: Derivation, x: fx.Node, w: Axes, b: Axes | None) -> Axes:
    xa = d.axes(x)
    d.link(xa[-1], w[1])
    if b is not None:
        d.link(b[0], w[0])
    return tuple(xa[:-1]) + (w[0],)


def linear_module(d, node):
    return _linear(d, node.args[0], d.param(f"{node.target}.weight"), d.param(f"{node.target}.bias"))


def linear_function(d, node):
    return _linear(d, node.args[0], d.axes(arg(node, 1, "weight")), d.axes(arg(node, 2, "bias")))


def _conv(d: Derivation, node: fx.Node, x: fx.Node, w: Axes, b: Axes | None, groups: int) -> Axes:
    xa, xs = d.axes(x), d.shape(x)
    lead = len(xs) - (len(w) - 1)  # 1 for a batch, 0 for an unbatched input
    cin = xs[lead]
    cout = sum(d.atoms.size[a] for a in d.atoms.resolve(w[0]))
    if groups == 1:
        d.link(xa[lead], w[1])
    elif groups == cin == cout:  # depthwise: channel c only ever sees channel c
        d.link(xa[lead], w[0])
        d.fix(w[1])
    else:  # grouped: only permutations within groups are symmetries, not one per axis
        reason = f"grouped convolution {d.where}"
        d.fix(xa[lead], reason)
        d.fix(w[0], reason)
        d.fix(w[1], reason)
    for tap in w[2:]:
        d.fix(tap)
    for axis in xa[lead + 1 :]:
        d.fix(axis)
    if b is not None:
        d.link(b[0], w[0])
    return tuple(xa[:lead]) + (w[0],) + tuple(d.fresh(n) for n in d.shape(node)[lead + 1 :])


def conv_module(d, node):
    mod = d.module(node)
    return _conv(d, node, node.args[0], d.param(f"{node.target}.weight"), d.param(f"{node.target}.bias"), mod.groups)


def conv_function(d, node):
    w, b = d.axes(arg(node, 1, "weight")), d.axes(arg(node, 2, "bias"))
    return _conv(d, node, node.args[0], w, b, arg(node, 6, "groups", 1))


def _per_channel(d: Derivation, x: fx.Node, params: list[Axes | None]) -> Axes:
    xa = d.axes(x)
    for p in params:
        if p is not None:
            d.link(p[0], xa[1])
    return xa


def batch_norm_module(d, node):
    t = node.target
    return _per_channel(d, node.args[0], [d.param(f"{t}.{n}") for n in ("weight", "bias", "running_mean", "running_var")])


def batch_norm_function(d, node):
    names = [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")]
    return _per_channel(d, node.args[0], [d.axes(arg(node, i, n)) for i, n in names])


def _last_axes(d: Derivation, x: fx.Node, params: list[Axes | None]) -> Axes:
    """LayerNorm/RMSNorm: statistics over the last axes are invariant, parameters follow them."""
    xa = d.axes(x)
    for p in params:
        if p is not None:
            for pa, axis in zip(p, xa[len(xa) - len(p) :]):
                d.link(pa, axis)
    return xa


def layer_norm_module(d, node):
    return _last_axes(d, node.args[0], [d.param(f"{node.target}.weight"), d.param(f"{node.target}.bias")])


def layer_norm_function(d, node):
    return _last_axes(d, node.args[0], [d.axes(arg(node, 2, "weight")), d.axes(arg(node, 3, "bias"))])


def rms_norm_function(d, node):
    return _last_axes(d, node.args[0], [d.axes(arg(node, 2, "weight"))])


def _group_norm(d: Derivation, x: fx.Node, groups: int, params: list[Axes | None]) -> Axes:
    xa, channels = d.axes(x), d.shape(x)[1]
    if groups in (1, channels):  # one group, or one per channel: statistics ignore channel order
        return _per_channel(d, x, params)
    reason = f"GroupNorm with {groups} groups in {d.where}"
    d.fix(xa[1], reason)
    for p in params:
        if p is not None:
            d.fix(p[0], reason)
    return xa


def group_norm_module(d, node):
    mod = d.module(node)
    return _group_norm(d, node.args[0], mod.num_groups, [d.param(f"{node.target}.weight"), d.param(f"{node.target}.bias")])


def group_norm_function(d, node):
    return _group_norm(d, node.args[0], arg(node, 1, "num_groups"), [d.axes(arg(node, 2, "weight")), d.axes(arg(node, 3, "bias"))])


def prelu_module(d, node):
    w = d.param(f"{node.target}.weight")
    xa = d.axes(node.args[0])
    if d.shape(node.args[0])[1:2] == (d.state_shapes[d.canonical[f"{node.target}.weight"]][0],):
        d.link(w[0], xa[1])
    else:
        d.fix(w[0])
    return xa


def embedding_module(d, node):
    w = d.param(f"{node.target}.weight")
    d.fix(w[0], f"network input (the vocabulary of {d.where})")
    return tuple(d.axes(node.args[0])) + (w[1],)


# --- the tables ----------------------------------------------------------------------------------

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Softmax,
    nn.LogSoftmax, nn.Softmin,
)  # fmt: skip

MODULE_RULES: dict[type, Rule] = {
    **{cls: elementwise for cls in _ACTIVATIONS},
    nn.Linear: linear_module,
    nn.Conv1d: conv_module,
    nn.Conv2d: conv_module,
    nn.Conv3d: conv_module,
    nn.modules.batchnorm._NormBase: batch_norm_module,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm: layer_norm_module,
    nn.RMSNorm: layer_norm_module,
    nn.GroupNorm: group_norm_module,
    nn.PReLU: prelu_module,
    nn.Embedding: embedding_module,
    nn.Flatten: reshape,
    nn.Unflatten: reshape,
    **{cls: spatial(1) for cls in (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)},
    **{cls: spatial(2) for cls in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)},
    **{cls: spatial(3) for cls in (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)},
    nn.Upsample: spatial(None),
}

_ELEMENTWISE_FUNCTIONS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pos, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.pow, torch.exp, torch.log, torch.sqrt,
    torch.rsqrt, torch.abs, torch.clamp, torch.where, torch.maximum, torch.minimum, torch.erf, torch.sigmoid,
    torch.tanh, torch.relu, torch.softmax, torch.log_softmax, torch.square, torch.reciprocal,
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.sigmoid, F.tanh,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.softsign, F.logsigmoid, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, F.alpha_dropout, F.softmax, F.log_softmax, F.normalize,
)  # fmt: skip

FUNCTION_RULES: dict[Any, Rule] = {
    **{fn: elementwise for fn in _ELEMENTWISE_FUNCTIONS},
    F.linear: linear_function,
    F.conv1d: conv_function,
    F.conv2d: conv_function,
    F.conv3d: conv_function,
    F.batch_norm: batch_norm_function,
    F.instance_norm: batch_norm_function,
    F.layer_norm: layer_norm_function,
    F.rms_norm: rms_norm_function,
    F.group_norm: group_norm_function,
    **{fn: reduction for fn in (torch.mean, torch.sum, torch.amax, torch.amin, torch.logsumexp)},
    **{fn: reshape for fn in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)},
    **{fn: reorder for fn in (torch.permute, torch.transpose, torch.movedim, torch.swapaxes, torch.t)},
    getattr: reorder,  # x.T / x.mT; other tensor attributes are refused by reorder's getattr
    operator.getitem: getitem,
    torch.cat: cat,
    torch.concat: cat,
    torch.stack: stack,
    torch.unbind: split,
    torch.chunk: split,
    torch.split: split,
    operator.matmul: matmul,
    torch.matmul: matmul,
    torch.bmm: matmul,
    F.scaled_dot_product_attention: attention,
    **{fn: spatial(1) for fn in (F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d)},
    **{fn: spatial(2) for fn in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)},
    **{fn: spatial(3) for fn in (F.max_pool3d, F.avg_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d)},
    F.interpolate: spatial(None),
    F.pad: spatial(None),
}

_ELEMENTWISE_METHODS = (
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "pow", "exp", "log", "sqrt", "rsqrt",
    "abs", "clamp", "clamp_", "clamp_min", "clamp_max", "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
    "softmax", "log_softmax", "square", "reciprocal", "masked_fill", "masked_fill_", "where", "erf",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type", "type_as",
    "requires_grad_",
)  # fmt: skip

METHOD_RULES: dict[str, Rule] = {
    **{m: elementwise for m in _ELEMENTWISE_METHODS},
    **{m: reduction for m in ("mean", "sum", "amax", "amin", "logsumexp")},
    **{m: reshape for m in ("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as")},
    **{m: reorder for m in ("permute", "transpose", "movedim", "swapaxes", "swapdims", "t")},
    **{m: broadcast_to for m in ("expand", "expand_as", "repeat")},
    "unbind": split,
    "chunk": split,
    "split": split,
    "matmul": matmul,
    "bmm": matmul,
}
