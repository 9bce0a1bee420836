"""Deriving a permutation spec from the network itself: torch.fx graph + union-find over tensor axes.

Every axis of every tensor in the graph (activations, parameters, buffers) is a sequence of *atoms*
(one atom, or several when the axis is a concatenation). Each operation's rule in `rules.py` either
ties an input axis to an output or parameter axis (union: they must share one permutation) or fixes it
(the operation is not equivariant along it: conv kernel taps, a reshape that splits heads...). The
network's input and output axes are fixed. Afterwards every free class of atoms is one permutation
group. A rule may only tie or fix, so a missing rule can never make a wrong spec: an operation
without a rule raises, naming the operation and the module that called it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from starcli.errors import StarlightError

Axis = tuple[int, ...]  # the atoms an axis is made of, in order
Axes = tuple[Axis, ...]  # one tensor's axes


class Many(list):
    """The axes of a multi-output operation (split, chunk, unbind): one Axes per output."""


class Atoms:
    """Union-find over axis segments. A class of fresh parameter atoms that has only been tied to
    other fresh single atoms ("virgin": a weight's rows and its bias) may instead take on a
    concatenated structure: a BatchNorm after a DenseNet concat learns that its channels come in
    one segment per earlier layer."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: dict[int, list[int]] = {}  # root → atoms of its class
        self.reason: dict[int, str] = {}  # root → why the class may not be permuted
        self.alias: dict[int, Axis] = {}
        self.virgin: set[int] = set()  # roots

    def new(self, size: int, fixed: str | None = None, virgin: bool = False) -> int:
        atom = len(self.parent)
        self.parent.append(atom)
        self.size.append(size)
        self.members[atom] = [atom]
        if fixed:
            self.reason[atom] = fixed
        elif virgin:
            self.virgin.add(atom)
        return atom

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def resolve(self, axis: Axis) -> Axis:
        out: list[int] = []
        for a in axis:
            out.extend(self.resolve(self.alias[a]) if a in self.alias else (a,))
        return tuple(out)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            raise StarlightError(f"internal error deriving a permutation spec: tied axes of sizes {self.size[ra]} and {self.size[rb]}")
        virgin = ra in self.virgin and rb in self.virgin
        self.virgin.discard(ra), self.virgin.discard(rb)
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        if virgin:
            self.virgin.add(ra)
        reasons = [r for r in (self.reason.pop(ra, None), self.reason.pop(rb, None)) if r]
        if reasons:
            # "network output/input" explains a fixed class best; other reasons describe a workaround.
            self.reason[ra] = min(reasons, key=lambda r: not r.startswith("network"))

    def fix(self, axis: Axis, reason: str) -> None:
        for a in self.resolve(axis):
            root = self.find(a)
            self.virgin.discard(root)
            if root not in self.reason or reason.startswith("network"):
                self.reason[root] = reason

    def link(self, x: Axis, y: Axis, where: str) -> Axis:
        """Tie two axes of equal length; returns the tied axis."""
        x, y = self.resolve(x), self.resolve(y)
        sx, sy = [self.size[a] for a in x], [self.size[a] for a in y]
        if sum(sx) != sum(sy):
            raise StarlightError(f"internal error deriving a permutation spec: tied axes of sizes {sum(sx)} and {sum(sy)} at {where}")
        if sx == sy:
            for a, b in zip(x, y):
                self.union(a, b)
            return x
        for one, other in ((x, y), (y, x)):
            if len(one) == 1 and self.find(one[0]) in self.virgin and not set(map(self.find, other)) & {self.find(one[0])}:
                root = self.find(one[0])
                self.virgin.discard(root)
                for m in self.members[root]:
                    self.alias[m] = other
                return other
        # Two different concatenation structures meet: a permutation that respects both is not a
        # product of per-segment permutations, so keep the whole axis in place.
        self.fix(x, f"mismatched concatenations at {where}")
        self.fix(y, f"mismatched concatenations at {where}")
        return x

    def split(self, axis: Axis, sizes: list[int]) -> Axis | None:
        """Cut a virgin single-atom axis into pieces of `sizes` (a layer's output chunked into a gate
        and a value, say); None when the axis is not one virgin atom."""
        axis = self.resolve(axis)
        if len(axis) != 1 or self.find(axis[0]) not in self.virgin:
            return None
        root = self.find(axis[0])
        self.virgin.discard(root)
        pieces = tuple(self.new(n, virgin=True) for n in sizes)
        for m in self.members[root]:
            self.alias[m] = pieces
        return pieces

    def is_free(self, a: int) -> bool:
        return self.find(a) not in self.reason and self.size[a] > 1


class ExampleTracer(fx.Tracer):
    """A torch.fx tracer that also runs every operation on an example input, so Python control flow
    on shapes (timm's ConvMlp pads small feature maps) takes the branch the example takes, and every
    node carries its example value (node.meta["example"]) for the rules to read shapes from."""

    def __init__(self, example: torch.Tensor, defaults: dict[str, Any]):
        super().__init__()
        # forward's arguments in order: the example input, then the defaults of the others
        self.inputs = [example, *defaults.values()]
        self.evaluating = False

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind != "output":
            node.meta["example"] = self._evaluate(node)
        return node

    def _evaluate(self, node: fx.Node) -> Any:
        # While tracing, fx patches Module.__call__ and __getattr__ to record calls; the real
        # computation must bypass them (see call_module and getattr below).
        self.evaluating = True
        try:
            return self._run(node)
        finally:
            self.evaluating = False

    def _run(self, node: fx.Node) -> Any:
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), _example_of)
        if node.op == "placeholder":
            return self.inputs.pop(0) if self.inputs else None
        if node.op == "get_attr":
            return functools.reduce(getattr, node.target.split("."), self.root)
        if node.op == "call_module":
            return self.root.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def call_module(self, m, forward, args, kwargs):
        if self.evaluating:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self.evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(obj.node.meta["example"])

    def iter(self, obj: fx.Proxy):
        return iter([obj[i] for i in range(len(obj.node.meta["example"]))])


def _example_of(node: fx.Node) -> Any:
    if "example" not in node.meta:  # get_attr nodes for parameters are made without create_node's hook
        raise StarlightError(f"internal error: node {node.name} has no example value")
    return node.meta["example"]


def trace(model: nn.Module, example: torch.Tensor) -> fx.Graph:
    """The forward graph of `model` on `example`; other forward arguments keep their defaults."""
    params = list(inspect.signature(model.forward).parameters.values())  # bound: no self
    concrete = {p.name: p.default for p in params[1:] if p.default is not inspect.Parameter.empty}
    if not params or len(params) - len(concrete) > 1:
        raise StarlightError(f"{type(model).__name__}.forward takes more than one input; write a permutation spec by hand")
    tracer = ExampleTracer(example, concrete)
    try:
        with torch.no_grad():
            return tracer.trace(model, concrete_args=concrete or None)
    except StarlightError:
        raise
    except Exception as e:  # fx's TraceError and whatever a module's forward raises on a Proxy
        stack = getattr(tracer, "module_stack", None) or {}
        where = next(reversed(stack), None) or type(model).__name__
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StarlightError(
            f"cannot trace {type(model).__name__} with torch.fx (in {where}: {msg}); write a permutation spec by hand "
            "(starcli.alignment.register_spec)"
        ) from None


class Derivation:
    """The state of one derivation; `rules.py` functions receive it as `d`."""

    def __init__(self, model: nn.Module, graph: fx.Graph):
        self.model = model
        self.graph = graph
        self.atoms = Atoms()
        self.values: dict[fx.Node, Any] = {}
        state = model.state_dict(keep_vars=True)
        # Tied weights appear under several names; they are one tensor and get one set of axes.
        first: dict[int, str] = {}
        self.canonical = {k: first.setdefault(id(v), k) for k, v in state.items()}
        self.state_shapes = {k: tuple(v.shape) for k, v in state.items()}
        self.params: dict[str, Axes] = {}
        self.node: fx.Node | None = None

    # --- what rules use ----------------------------------------------------------------------
    @property
    def where(self) -> str:
        node = self.node
        if node is None:
            return type(self.model).__name__
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack") or {}
        return next(reversed(stack), None) or "the top-level forward"

    def axes(self, arg: Any) -> Any:
        """Axes of a tensor argument (None for non-tensors)."""
        if not isinstance(arg, fx.Node):
            return None
        return self.values.get(arg)

    def shape(self, arg: Any) -> tuple[int, ...]:
        value = arg.meta["example"] if isinstance(arg, fx.Node) else arg
        return tuple(value.shape)

    def module(self, node: fx.Node) -> nn.Module:
        return self.model.get_submodule(node.target)

    def param(self, name: str) -> Axes | None:
        """Axes of a state-dict entry (None when the module has no such entry, e.g. bias=False)."""
        if name not in self.canonical:
            return None
        name = self.canonical[name]
        if name not in self.params:
            self.params[name] = tuple((self.atoms.new(n, virgin=True),) for n in self.state_shapes[name])
        return self.params[name]

    def fresh(self, size: int, reason: str | None = None) -> Axis:
        return (self.atoms.new(size, fixed=reason or f"{self.op_name} in {self.where}"),)

    def fix(self, axis: Axis, reason: str | None = None) -> None:
        self.atoms.fix(axis, reason or f"{self.op_name} in {self.where}")

    def link(self, x: Axis, y: Axis) -> Axis:
        return self.atoms.link(x, y, self.where)

    @property
    def op_name(self) -> str:
        return op_name(self.model, self.node) if self.node is not None else "?"

    def unsupported(self, detail: str = "") -> StarlightError:
        extra = f" ({detail})" if detail else ""
        return StarlightError(
            f"cannot derive a permutation spec: no rule for {self.op_name}{extra} in module {self.where!r}; "
            "write one by hand (starcli.alignment.register_spec)"
        )


def op_name(model: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(model.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"{module}.{name}" if module and module not in ("_operator", "builtins") else name


