r"""Sensitivity analysis: gradients of a model's outputs instead of re-running it.

"What if R had been 10% higher in week 3?" To first order the answer is
:math:`\partial y / \partial R_3 \cdot 0.1 R_3` for every output ``y`` at once, from one
forward pass and one backward pass per output (:func:`sensitivity`); second order through
Hessian-vector products (:func:`hessian_vector_product`); and :func:`finite_difference`
checks both, with common random numbers in stochastic mode. :func:`contributions` turns
the gradients of one output into each input's first-order contribution
(:math:`\theta \, \partial y / \partial \theta`) and elasticity
(:math:`\partial \log y / \partial \log \theta`), element by element.

Names: a raw parameter goes by its ``model.named_parameters()`` name (e.g.
``"params.mortality.raw"``); a constrained value by the path of the module that makes it
(``"params.mortality"`` for a :class:`~lpm_graph.train.Bounded`,
``"params.reproduction_number"`` for the weekly values of a
:class:`~lpm_graph.train.Weekly`); a protocol attribute given in ``wrt`` by its attribute
name (``"edge_type_weights"``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .parameters import Bounded, Positive, Weekly

__all__ = [
    "Contributions",
    "FiniteDifference",
    "contributions",
    "finite_difference",
    "hessian_vector_product",
    "sensitivity",
]

Output = Callable[[Mapping[str, Tensor]], Tensor]
"""A scalar read from a model's output ``{name: [T]}``, e.g. ``lambda out: out["deaths"].sum()``."""


def sensitivity(
    model: nn.Module,
    outputs: Mapping[str, Output] | None = None,
    *,
    seed: int | None = None,
    wrt: Mapping[str, Tensor | float | Sequence[float]] | Sequence[str] | None = None,
) -> dict[str, dict[str, Tensor]]:
    r"""The gradient of every output with respect to every parameter and constrained value.

    For each output ``y`` (default: the total of every series the model returns, e.g. total
    deaths) this returns

    * ``dy / d raw`` for every parameter with ``requires_grad`` (the unconstrained values an
      optimiser moves), under its ``named_parameters()`` name;
    * ``dy / d value`` for the constrained value of every :class:`~lpm_graph.train.Bounded`
      and :class:`~lpm_graph.train.Positive` (for a :class:`~lpm_graph.train.Weekly`: of
      each weekly value), under the module's path: the number a modeller reasons with
      ("deaths per unit of R in week 3"), related to the raw one by the chain rule
      :math:`\partial y / \partial \theta_{raw} = \partial y / \partial \theta \cdot
      \theta'(\theta_{raw})`;
    * ``dy / d a`` for every protocol attribute ``a`` named in ``wrt``.

    How: forward hooks keep the tensor each constraint module returns during the one forward
    pass; it is an intermediate node of the graph, so ``torch.autograd.grad(y, value)`` is
    exactly the gradient with respect to the value, as if it had been a leaf (no division
    by :math:`\theta'`, which loses precision near the bounds). An attribute in ``wrt`` is
    set on the protocol (``model.protocol``, or the model itself) to a leaf tensor with
    ``requires_grad`` for the pass and restored afterwards; it must not be one the
    parameter modules overwrite at every call. Then one ``torch.autograd.grad`` per output
    over every input (``retain_graph`` between outputs).

    In stochastic mode the gradients are those of the model's estimator for one run (seed
    ``seed``) averaged over its replicates: with ``"straight_through"`` a biased surrogate,
    with ``"stochastic_derivative"`` an unbiased estimate of the gradient of the expected
    output (for outputs linear in the series, as the default totals are); see
    :class:`~lpm_graph.train.SimulatorModel`.

    Args:
        model: a model of :mod:`lpm_graph.train` (``model(seed=...)`` -> ``{name: [T]}``).
        outputs: ``{name: fn}`` with ``fn(model_output)`` a scalar tensor.
        seed: the run's seed (default: the model's own).
        wrt: protocol attributes to differentiate too: names (at their current values) or
            ``{name: value}`` (set for this pass), e.g. ``{"edge_type_weights": w}``.

    Returns:
        ``{output name: {input name: gradient shaped like the input}}``.
    """
    result, _, _ = _differentiate(model, outputs, seed, wrt)
    return result


def hessian_vector_product(
    model: nn.Module,
    output_fn: Output,
    vector: Mapping[str, Tensor] | Tensor,
    *,
    params: Sequence[str] | None = None,
    seed: int | None = None,
) -> dict[str, Tensor]:
    r"""``H v`` with ``H`` the Hessian of ``output_fn(model())`` in the raw parameters.

    .. math::
        H v = \nabla_\theta \left( \nabla_\theta y(\theta) \cdot v \right)

    by double backward (``create_graph=True``), at the cost of about two backward passes
    and without forming ``H``. Meant for expected mode (deterministic and twice
    differentiable); in stochastic mode it is the second derivative of the estimator's
    surrogate, not an estimate of the Hessian of the expectation.

    Args:
        model: a model of :mod:`lpm_graph.train`.
        output_fn: the scalar, e.g. ``lambda out: out["deaths"].sum()``.
        vector: ``{parameter name: direction}`` (missing names: zero) or one flat tensor
            over ``params`` in order.
        params: parameter names (default: every one with ``requires_grad``, in
            ``named_parameters()`` order).
        seed: the run's seed (default: the model's own).

    Returns:
        ``{parameter name: (H v) restricted to it}``.
    """
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if params is None else list(params)
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"{unknown} are not parameters of the model; choose from {list(named)}.")
    tensors = [named[n] for n in names]
    directions = _split_vector(vector, names, tensors)
    y = output_fn(_run(model, seed))
    if not torch.is_tensor(y) or y.numel() != 1:
        raise ValueError(f"output_fn must return a scalar tensor, got {_describe(y)}.")
    grads = torch.autograd.grad(y.reshape(()), tensors, create_graph=True, allow_unused=True)
    dot = sum((g * v).sum() for g, v in zip(grads, directions) if g is not None)
    if not torch.is_tensor(dot) or not dot.requires_grad:
        return {n: torch.zeros_like(t) for n, t in zip(names, tensors)}
    hv = torch.autograd.grad(dot, tensors, allow_unused=True)
    return {n: torch.zeros_like(t) if h is None else h for n, t, h in zip(names, tensors, hv)}


@dataclass
class FiniteDifference:
    """A central finite difference, per element of the input, averaged over seeds.

    Attributes:
        gradient: the mean over seeds, shaped like the input (only ``index`` set when one
            element was asked for; the others are NaN).
        standard_error: the standard error of that mean over seeds (0 for one seed).
        samples: the difference quotient of every seed, ``[seeds, *shape]``.
    """

    gradient: Tensor
    standard_error: Tensor
    samples: Tensor


def finite_difference(
    model: nn.Module,
    output_fn: Output,
    param_name: str,
    *,
    eps: float,
    seeds: Sequence[int | None] = (None,),
    index: int | None = None,
) -> FiniteDifference:
    r"""Central finite difference of ``output_fn(model(seed))`` in one input.

    .. math::
        \frac{\partial y}{\partial \theta_k} \approx
        \frac{1}{|S|} \sum_{s \in S} \frac{y_s(\theta + \epsilon e_k) - y_s(\theta - \epsilon e_k)}
            {2 \epsilon}

    Both sides of a seed use the same seed (common random numbers), so in stochastic mode
    the two runs share their draws and differ only where the perturbation flips one; the
    mean over seeds then estimates the gradient of the expected output. ``2 |S|`` runs per
    element, under ``torch.no_grad()``.

    Args:
        model: a model of :mod:`lpm_graph.train`.
        output_fn: the scalar, e.g. ``lambda out: out["deaths"].sum()``.
        param_name: a raw parameter (``"params.mortality.raw"``), a constrained value
            (``"params.mortality"``, ``"params.reproduction_number"`` for weekly values) or
            a tensor attribute of the protocol (``"edge_type_weights"``), as named by
            :func:`sensitivity`.
        eps: the step, in the input's units.
        seeds: the seeds averaged (``None``: the model's own seed).
        index: one flat element to perturb (default: every element).
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number, got {eps!r}.")
    if not seeds:
        raise ValueError("seeds must name at least one seed.")
    perturb, shape = _perturbation(model, param_name)
    numel = math.prod(shape)
    if index is not None and not 0 <= index < numel:
        raise ValueError(f"index={index} is outside the {numel} elements of {param_name!r}.")
    samples = torch.full((len(seeds), numel), math.nan, dtype=torch.float64)
    for k in range(numel) if index is None else (index,):
        for i, seed in enumerate(seeds):
            side = []
            for sign in (1.0, -1.0):
                with perturb(k, sign * eps), torch.no_grad():
                    side.append(float(output_fn(_run(model, seed))))
            samples[i, k] = (side[0] - side[1]) / (2 * eps)
    mean = samples.mean(0)
    n = len(seeds)
    se = samples.std(0) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    return FiniteDifference(
        mean.reshape(shape), se.reshape(shape), samples.reshape(len(seeds), *shape)
    )


@dataclass
class Contributions:
    r"""First-order contributions of inputs to one output, from one forward and one backward
    pass (:func:`contributions`).

    For each input :math:`\theta` (a constrained value or a protocol attribute), element by
    element:

    .. math::
        c_k = \theta_k \frac{\partial y}{\partial \theta_k}
            = \frac{\partial y}{\partial \log \theta_k}, \qquad
        e_k = \frac{c_k}{y} = \frac{\partial \log y}{\partial \log \theta_k}

    ``c_k`` is the change in ``y`` per unit relative change of :math:`\theta_k` (``0.01 c_k``
    for +1 %), ``e_k`` the elasticity (% change of ``y`` per % change of
    :math:`\theta_k`). Both are local and first order: they describe small changes around
    the current values and do not split ``y`` into shares (no Shapley value). The sum of an
    input's elasticities is the elasticity of scaling all its elements together.

    Attributes:
        output: ``y``, the output's value at the current inputs.
        value: ``{input: value}`` (detached, the input's shape).
        gradient: ``{input: dy / d value}`` (the input's shape).
        labels: ``{input: one label per element}`` (flat order), e.g. the age groups.
    """

    output: float
    value: dict[str, Tensor]
    gradient: dict[str, Tensor]
    labels: dict[str, list[str]]

    @property
    def contribution(self) -> dict[str, Tensor]:
        """``{input: value x gradient}``: ``dy / d log value``, in the output's units."""
        return {n: self.value[n] * self.gradient[n] for n in self.value}

    @property
    def elasticity(self) -> dict[str, Tensor]:
        """``{input: value x gradient / output}``: ``d log y / d log value``."""
        if self.output == 0:
            raise ValueError(
                "the output is 0, so its elasticities are undefined; read `contribution` "
                "(dy / d log value) instead."
            )
        return {n: c / self.output for n, c in self.contribution.items()}

    def names(self) -> list[str]:
        """``"input[label]"`` for every element (``"input"`` for a scalar), in order."""
        return [
            name if self.value[name].dim() == 0 else f"{name}[{label}]"
            for name, labels in self.labels.items()
            for label in labels
        ]

    def table(self) -> str:
        """A Markdown table: one row per element, with value, gradient, contribution and
        elasticity, then one row per input with more than one element for its sum."""
        lines = [
            f"| input (output = {self.output:.6g}) | value | gradient | contribution "
            "| elasticity |",
            "|---|---:|---:|---:|---:|",
        ]
        contribution = self.contribution
        if self.output != 0:
            elasticity = self.elasticity
        else:
            elasticity = {n: torch.full_like(c, math.nan) for n, c in contribution.items()}
        columns = [
            [x for n in self.value for x in d[n].reshape(-1).tolist()]
            for d in (self.value, self.gradient, contribution, elasticity)
        ]
        for name, v, g, c, e in zip(self.names(), *columns):
            lines.append(f"| {name} | {v:.4g} | {g:.4g} | {c:.4g} | {e:.4f} |")
        for n, c in contribution.items():
            if c.numel() > 1:
                e = float(elasticity[n].sum())
                lines.append(f"| {n} (sum) | | | {float(c.sum()):.4g} | {e:.4f} |")
        return "\n".join(lines)


def contributions(
    model: nn.Module,
    output: str | Output | None = None,
    *,
    wrt: Mapping[str, Tensor | float | Sequence[float]] | Sequence[str] | None = None,
    labels: Mapping[str, Sequence[object]] | None = None,
    seed: int | None = None,
) -> Contributions:
    r"""How much each input moves one output, to first order, from one differentiable run.

    One forward pass and one backward pass give :math:`\partial y / \partial \theta_k` for
    every element of every input; multiplied by the element's value this is its
    contribution :math:`\partial y / \partial \log \theta_k` and, divided by ``y``, its
    elasticity (see :class:`Contributions`), e.g. % change in deaths per % change of the
    susceptibility of each age group or of the weight of each edge type. Checking them with
    :func:`finite_difference` costs two runs per element.

    The inputs are the model's constrained values (:class:`~lpm_graph.train.Bounded`,
    :class:`~lpm_graph.train.Positive`, :class:`~lpm_graph.train.Weekly`: the numbers a
    modeller reasons with; raw unconstrained parameters have no meaningful relative change
    and are left out) and the protocol attributes named in ``wrt``, as in
    :func:`sensitivity`.

    In expected mode the result is exact (to rounding). In stochastic mode it is one run's
    output and the model's gradient estimator for that run: average several seeds, and use
    ``estimator="stochastic_derivative"`` for an unbiased gradient of the expected output
    (see :class:`~lpm_graph.train.SimulatorModel`).

    Args:
        model: a model of :mod:`lpm_graph.train` (``model(seed=...)`` -> ``{name: [T]}``).
        output: a series name (its total, e.g. ``"deaths"``) or ``fn(model_output)``
            returning a scalar tensor; default: the total of the model's only series.
        wrt: protocol attributes to include: names (at their current values) or
            ``{name: value}`` (set for this pass), e.g. ``["susceptibility",
            "edge_type_weights"]``.
        labels: ``{input: one label per element}``, e.g. ``{"susceptibility": AGE_GROUPS}``
            (default: the flat index).
        seed: the run's seed (default: the model's own).

    Returns:
        The :class:`Contributions` of every input to the output.

    Example: ``contributions(model, "deaths", wrt=["susceptibility"], labels={"susceptibility":
    AGE_GROUPS}).elasticity["susceptibility"]``; a worked example with finite-difference
    checks is the tutorial *One run, every sensitivity* (``docs/tutorials/sensitivity.md``).
    """
    if output is None or isinstance(output, str):
        fn: Output = _named_total(output)
    elif callable(output):
        fn = output
    else:
        raise ValueError(
            f"output must be a series name (e.g. 'deaths') or fn(model_output) -> scalar, got "
            f"{type(output).__name__}."
        )
    attributes = [] if wrt is None else list(wrt)
    known = [*_value_modules(model), *attributes]
    if not known:
        raise ValueError(
            "nothing to attribute: the model has no constrained value (Bounded, Positive, "
            "Weekly) and wrt names no protocol attribute; name some, e.g. "
            "wrt=['edge_type_weights']."
        )
    given = dict(labels or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"labels names {unknown}, which are not inputs; choose from {known}.")
    grads, ys, values = _differentiate(model, {"output": fn}, seed, wrt)
    names: dict[str, list[str]] = {}
    for n, v in values.items():
        names[n] = [str(x) for x in given[n]] if n in given else [str(k) for k in range(v.numel())]
        if len(names[n]) != v.numel():
            raise ValueError(
                f"labels[{n!r}] has {len(names[n])} labels for the {v.numel()} elements of "
                f"{n!r}; give one per element."
            )
    gradient = {n: grads["output"][n] for n in values}
    return Contributions(float(ys["output"]), dict(values), gradient, names)


# ---------------------------------------------------------------------------- helpers


def _differentiate(
    model: nn.Module,
    outputs: Mapping[str, Output] | None,
    seed: int | None,
    wrt: Mapping[str, Tensor | float | Sequence[float]] | Sequence[str] | None,
) -> tuple[dict[str, dict[str, Tensor]], dict[str, Tensor], dict[str, Tensor]]:
    """One forward pass, one backward pass per output: the gradients as
    :func:`sensitivity` returns them, each output's value, and the value of every
    constrained value and ``wrt`` attribute (detached)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with _capture_values(model) as values, _attributes_as_leaves(model, wrt) as leaves:
        out = _run(model, seed)
        for name, leaf in leaves.items():
            if getattr(_attribute_owner(model), name) is not leaf:
                raise ValueError(
                    f"{name!r} is set by the model's parameter modules at every call; its "
                    "sensitivity is that of the parameter module's value (drop it from wrt)."
                )
    if outputs is None:
        outputs = {name: _total(name) for name in out}
    if not outputs:
        raise ValueError("no output to differentiate: give outputs={name: fn}.")
    captured = {name: tensors for name, tensors in values.items() if tensors[0].requires_grad}
    inputs: list[Tensor] = [*params.values(), *(t for ts in captured.values() for t in ts)]
    inputs += list(leaves.values())
    if not inputs:
        raise ValueError("the model has no parameter with requires_grad and wrt is empty.")
    result: dict[str, dict[str, Tensor]] = {}
    ys: dict[str, Tensor] = {}
    names = list(outputs)
    for k, name in enumerate(names):
        y = outputs[name](out)
        if not torch.is_tensor(y) or y.numel() != 1:
            raise ValueError(f"output {name!r} must be a scalar tensor, got {_describe(y)}.")
        ys[name] = y.detach().reshape(())
        if not y.requires_grad:
            grads: Sequence[Tensor | None] = [None] * len(inputs)
        else:
            grads = torch.autograd.grad(
                y.reshape(()), inputs, retain_graph=k < len(names) - 1, allow_unused=True
            )
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        it = iter(grads)
        row = {n: next(it) for n in params}
        for n, tensors in captured.items():
            row[n] = sum(next(it) for _ in tensors)  # a module called twice: both uses
        row.update({n: next(it) for n in leaves})
        result[name] = row
    at = {n: tensors[0].detach() for n, tensors in captured.items()}
    at.update({n: leaf.detach() for n, leaf in leaves.items()})
    return result, ys, at


def _run(model: nn.Module, seed: int | None) -> Mapping[str, Tensor]:
    return model() if seed is None else model(seed=seed)


def _total(name: str) -> Output:
    return lambda out: out[name].sum()


def _named_total(name: str | None) -> Output:
    """The total of series ``name`` (``None``: of the model's only series)."""

    def total(out: Mapping[str, Tensor]) -> Tensor:
        if name is None and len(out) != 1:
            raise ValueError(
                f"the model returns several series {list(out)}: name one, e.g. "
                f"output={next(iter(out))!r}, or give output=fn."
            )
        key = next(iter(out)) if name is None else name
        if key not in out:
            raise ValueError(
                f"output {key!r} is not a series of the model; choose from {list(out)}."
            )
        return out[key].sum()

    return total


def _describe(y: object) -> str:
    return f"shape {list(y.shape)}" if torch.is_tensor(y) else type(y).__name__


def _value_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Path -> the module whose output is a constrained value (Weekly's inner Bounded goes
    by the Weekly's path: its output is the weekly values)."""
    out: dict[str, nn.Module] = {}
    weekly = {f"{path}.values" if path else "values": path for path, m in model.named_modules()
              if isinstance(m, Weekly)}  # fmt: skip
    for path, module in model.named_modules():
        if isinstance(module, (Bounded, Positive)):
            out[weekly.get(path, path)] = module
    return out


@contextlib.contextmanager
def _capture_values(model: nn.Module) -> Iterator[dict[str, list[Tensor]]]:
    values: dict[str, list[Tensor]] = {}
    handles = []
    for path, module in _value_modules(model).items():

        def hook(_m: nn.Module, _args: object, output: Tensor, path: str = path) -> None:
            values.setdefault(path, []).append(output)

        handles.append(module.register_forward_hook(hook))
    try:
        yield values
    finally:
        for handle in handles:
            handle.remove()


def _attribute_owner(model: nn.Module) -> nn.Module:
    return getattr(model, "protocol", model)


@contextlib.contextmanager
def _replace_attribute(owner: nn.Module, name: str, value: Tensor) -> Iterator[None]:
    if name in owner._parameters:
        raise ValueError(
            f"{type(owner).__name__}.{name} is a learnable nn.Parameter: it is differentiated "
            "with the model's parameters already; drop it from wrt."
        )
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _current(owner: nn.Module, name: str) -> Tensor:
    value = getattr(owner, name, None)
    if not torch.is_tensor(value):
        raise ValueError(
            f"{type(owner).__name__} has no tensor attribute {name!r} to differentiate."
        )
    return value


@contextlib.contextmanager
def _attributes_as_leaves(
    model: nn.Module, wrt: Mapping[str, object] | Sequence[str] | None
) -> Iterator[dict[str, Tensor]]:
    owner = _attribute_owner(model)
    items = {} if wrt is None else dict(wrt) if isinstance(wrt, Mapping) else dict.fromkeys(wrt)
    leaves = {}
    for name, value in items.items():
        current = _current(owner, name)
        given = current if value is None else torch.as_tensor(value)
        leaves[name] = (
            given.detach().to(device=current.device, dtype=current.dtype).clone().requires_grad_()
        )
    with contextlib.ExitStack() as stack:
        for name, leaf in leaves.items():
            stack.enter_context(_replace_attribute(owner, name, leaf))
        yield leaves


def _perturbation(
    model: nn.Module, name: str
) -> tuple[Callable[[int, float], contextlib.AbstractContextManager[None]], tuple[int, ...]]:
    """A context manager factory ``perturb(k, delta)`` adding ``delta`` to element ``k`` of
    input ``name`` (parameter, constrained value or protocol attribute), and its shape."""
    params = dict(model.named_parameters())
    values = _value_modules(model)
    if name in params:
        p = params[name]

        @contextlib.contextmanager
        def perturb_parameter(k: int, delta: float) -> Iterator[None]:
            old = p.detach().clone()
            with torch.no_grad():
                p.view(-1)[k] += delta
            try:
                yield
            finally:
                with torch.no_grad():
                    p.copy_(old)

        return perturb_parameter, tuple(p.shape)
    if name in values:
        module = values[name]
        with torch.no_grad():
            shape = tuple(module().shape)

        @contextlib.contextmanager
        def perturb_value(k: int, delta: float) -> Iterator[None]:
            def hook(_m: nn.Module, _args: object, output: Tensor) -> Tensor:
                step = torch.zeros_like(output).reshape(-1)
                step[k] = delta
                return output + step.reshape(output.shape)

            handle = module.register_forward_hook(hook)
            try:
                yield
            finally:
                handle.remove()

        return perturb_value, shape
    owner = _attribute_owner(model)
    if torch.is_tensor(getattr(owner, name, None)):
        current = _current(owner, name)

        @contextlib.contextmanager
        def perturb_attribute(k: int, delta: float) -> Iterator[None]:
            step = torch.zeros_like(current).reshape(-1)
            step[k] = delta
            with _replace_attribute(owner, name, current + step.reshape(current.shape)):
                yield

        return perturb_attribute, tuple(current.shape)
    raise ValueError(
        f"{name!r} is not a parameter ({list(params)}), a constrained value ({list(values)}) "
        f"or a tensor attribute of {type(owner).__name__}."
    )


def _split_vector(
    vector: Mapping[str, Tensor] | Tensor, names: list[str], tensors: list[Tensor]
) -> list[Tensor]:
    if isinstance(vector, Mapping):
        unknown = sorted(set(vector) - set(names))
        if unknown:
            raise ValueError(f"vector names {unknown} are not among the parameters {names}.")
        out = []
        for n, t in zip(names, tensors):
            v = vector.get(n)
            v = (
                torch.zeros_like(t)
                if v is None
                else torch.as_tensor(v).to(device=t.device, dtype=t.dtype)
            )
            if v.shape != t.shape:
                raise ValueError(
                    f"vector[{n!r}] has shape {list(v.shape)}; expected {list(t.shape)}."
                )
            out.append(v)
        return out
    total = sum(t.numel() for t in tensors)
    flat = torch.as_tensor(vector).reshape(-1)
    if flat.numel() != total:
        raise ValueError(f"vector has {flat.numel()} values; the parameters {names} have {total}.")
    chunks = flat.split([t.numel() for t in tensors])
    return [c.reshape(t.shape).to(device=t.device, dtype=t.dtype) for c, t in zip(chunks, tensors)]
