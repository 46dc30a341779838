"""Automatic parameter tuning of an accepted program's numeric constants with Optuna.

``lift_constants`` finds the numeric literals of the entry function that sit in comparisons
or call arguments (thresholds, margins, top-k) and rewrites the source so the entry takes them
as parameters with defaults: ``def execute(image, score_min=0.5):``. The sandbox fills only
``image``/``query``/``choices``, so the defaults are the values used; the rewritten program
still passes ``builder.executor.validate`` (programs may hold only function definitions at the
top level, which rules out a module-level constant dict). Only the text of each literal and the
signature change: comments and layout survive.

``tune_program`` splits the examples into a tuning part and a held-out part (seeded), searches
the parameters with Optuna's TPE sampler (seeded) on the tuning part, and reports untuned vs
tuned scores on both. ``tune_workspace`` does this for a workspace's accepted program and saves
the result as a new version: ``Workspace.add_program(source, origin="tuned", params=...)``.
"""

from __future__ import annotations

import ast
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from builder.core.errors import UserError
from builder.core.seeding import numpy_rng
from builder.executor import validate
from builder.executor.validate import parse as parse_source


@dataclass
class Param:
    """One lifted constant: its name, original value, kind, search range and where it was."""

    name: str
    value: float | int
    kind: str  # "int" | "float"
    low: float
    high: float
    line: int
    context: str


@dataclass
class Lifted:
    """A program whose constants are entry parameters (defaults = original values)."""

    source: str
    params: list[Param]
    entry: str = "execute"

    def with_values(self, values: dict[str, Any]) -> str:
        """The lifted source with other default values (unknown names raise KeyError)."""
        return apply_params(self, values)


class TuneError(UserError, ValueError):
    """Nothing to tune, or the program or examples cannot be tuned."""


def _ident(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return (s or "param")[:30]


def _context_name(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[str, str]:
    """A readable parameter name and context text for a literal, from where it sits."""
    parent = parents.get(node)
    if isinstance(parent, ast.UnaryOp):
        node, parent = parent, parents.get(parent)
    if isinstance(parent, ast.Compare):
        other = parent.left if parent.left is not node else parent.comparators[0]
        base = other.attr if isinstance(other, ast.Attribute) else (
            other.id if isinstance(other, ast.Name) else (
                other.func.id if isinstance(other, ast.Call) and isinstance(other.func, ast.Name) else
                other.func.attr if isinstance(other, ast.Call) and isinstance(other.func, ast.Attribute) else "value"))
        return f"{_ident(base)}_threshold", ast.unparse(parent)
    if isinstance(parent, ast.keyword):
        return _ident(parent.arg or "arg"), ast.unparse(parents.get(parent, parent))
    if isinstance(parent, ast.Call):
        f = parent.func
        fname = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else "call")
        return f"{_ident(fname)}_arg{parent.args.index(node) if node in parent.args else 0}", ast.unparse(parent)
    return "param", ast.unparse(node)


def default_range(value: float | int, kind: str) -> tuple[float, float]:
    """A search range around a constant: [0, 1] for fractions, else a factor of 4 either way."""
    if kind == "float" and 0 <= value <= 1:
        return 0.0, 1.0
    if kind == "int":
        v = int(value)
        if v >= 10:  # pixel areas, sizes: a factor of 4 either way (searched on a log scale)
            return v // 4, v * 4
        return (0, max(2 * v, v + 5)) if v >= 0 else (min(2 * v, v - 5), 0)
    v = float(value)
    return (v / 4, v * 4) if v > 0 else (v * 4, v / 4) if v < 0 else (-1.0, 1.0)


def lift_constants(source: str, entry: str = "execute", space: dict[str, tuple[float, float]] | None = None,
                   exclude: Sequence[str] = ()) -> Lifted:
    """Lift the entry function's numeric literals in comparisons and call arguments into
    parameters (see the module docstring). Literals in subscripts (``[0]``), in ``range``/
    ``str``/``int`` calls and booleans stay. ``space`` overrides ranges by parameter name;
    ``exclude`` names parameters to leave as literals."""
    tree = validate(source, entry)
    fn = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == entry][-1]
    parents = {child: node for node in ast.walk(fn) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
            continue
        lit = parents[node] if isinstance(parents.get(node), ast.UnaryOp) else node
        parent = parents.get(lit)
        holder = parents.get(parent) if isinstance(parent, ast.keyword) else parent
        if isinstance(holder, ast.Call):
            f = holder.func
            if isinstance(f, ast.Name) and f.id in ("range", "str", "int", "float", "round", "print"):
                continue
        elif not isinstance(holder, ast.Compare):
            continue
        if any(isinstance(a, (ast.Subscript, ast.Slice)) for a in _ancestors(lit, parents, fn)):
            continue
        found.append(lit)
    found.sort(key=lambda n: (n.lineno, n.col_offset))
    names: dict[str, int] = {}
    params, spans = [], []
    space = space or {}
    for lit in found:
        name, ctx = _context_name(lit, parents)
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}_{names[name]}"
        if name in exclude:
            continue
        value = ast.literal_eval(lit)
        kind = "int" if isinstance(value, int) else "float"
        low, high = space.get(name, default_range(value, kind))
        params.append(Param(name, value, kind, float(low), float(high), lit.lineno, ctx))
        spans.append((lit.lineno, lit.col_offset, lit.end_lineno, lit.end_col_offset, name))
    if not params:
        raise TuneError("the entry function has no numeric constants in comparisons or calls to tune")
    taken = {a.arg for a in fn.args.args} | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
    clash = [p.name for p in params if p.name in taken]
    if clash:
        raise TuneError(f"parameter names {clash} clash with names in the program; rename them via exclude/space")
    lines = source.splitlines(keepends=True)
    # Edit from the end so earlier offsets stay valid; col offsets are UTF-8 byte offsets.
    edits = [(s[0], s[1], s[2], s[3], s[4]) for s in spans]
    last = fn.args.defaults[-1] if fn.args.defaults else fn.args.args[-1]
    sig = ", " + ", ".join(f"{p.name}={p.value!r}" for p in params)
    edits.append((last.end_lineno, last.end_col_offset, last.end_lineno, last.end_col_offset, sig))
    for l0, c0, l1, c1, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        a = lines[l0 - 1].encode()
        b = lines[l1 - 1].encode()
        if l0 == l1:
            lines[l0 - 1] = (a[:c0] + text.encode() + a[c1:]).decode()
        else:
            lines[l0 - 1] = (a[:c0] + text.encode() + b[c1:]).decode()
            del lines[l0:l1]
    out = "".join(lines)
    validate(out, entry)
    return Lifted(out, params, entry)


def _ancestors(node, parents, stop):
    while node in parents and node is not stop:
        node = parents[node]
        yield node


def apply_params(lifted: Lifted, values: dict[str, Any]) -> str:
    """Set the entry's parameter defaults to ``values`` (others keep theirs)."""
    unknown = set(values) - {p.name for p in lifted.params}
    if unknown:
        raise KeyError(f"unknown parameters {sorted(unknown)}")
    tree = parse_source(lifted.source)
    fn = [s for s in tree.body if isinstance(s, ast.FunctionDef) and s.name == lifted.entry][-1]
    lines = lifted.source.splitlines(keepends=True)
    args = fn.args.args[len(fn.args.args) - len(fn.args.defaults):]
    for arg, default in sorted(zip(args, fn.args.defaults, strict=True), key=lambda x: -x[1].col_offset):
        if arg.arg in values:
            v = values[arg.arg]
            kind = next(p.kind for p in lifted.params if p.name == arg.arg)
            v = int(round(v)) if kind == "int" else float(v)
            b = lines[default.lineno - 1].encode()
            lines[default.lineno - 1] = (b[:default.col_offset] + repr(v).encode() + b[default.end_col_offset:]).decode()
    return "".join(lines)


@dataclass
class TuneResult:
    """The tuned values and source, and untuned vs tuned accuracy on the tuning and held-out parts."""

    params: dict[str, Any]
    original: dict[str, Any]
    source: str
    lifted_source: str
    untuned: dict[str, float]
    tuned: dict[str, float]
    n_trials: int
    n_tune: int
    n_heldout: int
    trials: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain data for JSON reports."""
        return asdict(self)


def tune_program(source: str, examples: Sequence, output, metric=None, engines=None, profile: str | dict = "shapes",
                 n_trials: int = 30, heldout_fraction: float = 0.3, seed: int = 0, space=None, exclude=(),
                 entry: str = "execute", cache=None, workers: int = 1, progress: bool = True) -> TuneResult:
    """Tune ``source``'s constants on ``examples`` (``builder.run.local.ExampleInput``); see the module docstring.

    ``workers`` defaults to 1: CPython 3.11.7's ``ast.parse`` can fail with "AST constructor
    recursion depth mismatch" when threads parse concurrently (the sandbox validates every run),
    and thousands of tuning runs hit it."""
    import optuna

    from builder.executor import Sandbox
    from builder.run import run_batch
    from builder.tools.cache import ToolCache
    from builder.tools.profile import build_engines

    examples = list(examples)
    if len(examples) < 4:
        raise TuneError(f"need at least 4 examples to tune and hold some out, got {len(examples)}")
    lifted = lift_constants(source, entry, space, exclude)
    perm = numpy_rng(seed, 17).permutation(len(examples))
    n_held = max(1, round(len(examples) * heldout_fraction))
    held = [examples[i] for i in perm[:n_held]]
    tune = [examples[i] for i in perm[n_held:]]
    engines = engines if engines is not None else build_engines(profile)
    tmp = None
    if cache is None:  # trials re-ask the same tool calls: cache them for the run
        tmp = tempfile.TemporaryDirectory(prefix="vftune-")
        cache = ToolCache(tmp.name)

    with Sandbox(workers=workers) as sandbox:
        def acc(src: str, exs) -> float:
            return run_batch(src, exs, output, metric, engines=engines, cache=cache, workers=workers,
                             progress=False, sandbox=sandbox).accuracy

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        original = {p.name: p.value for p in lifted.params}
        study.enqueue_trial(original)  # the engineer's values are the first candidate

        def objective(trial: optuna.Trial) -> float:
            vals = {}
            for p in lifted.params:
                if p.kind == "int":
                    log = p.low > 0 and p.high / p.low >= 10
                    vals[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=log)
                else:
                    log = p.low > 0 and p.high / p.low >= 10
                    vals[p.name] = trial.suggest_float(p.name, p.low, p.high, log=log)
            return acc(lifted.with_values(vals), tune)

        study.optimize(objective, n_trials=n_trials, show_progress_bar=progress)
        # Ties go to the earliest trial (the original values first): no change without a gain.
        best = max(study.trials, key=lambda t: (t.value if t.value is not None else -math.inf, -t.number))
        values = {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in best.params.items()}
        tuned_src = lifted.with_values(values)
        untuned = {"tune": acc(lifted.source, tune), "heldout": acc(lifted.source, held)}
        tuned = {"tune": best.value, "heldout": acc(tuned_src, held)}
    if tmp is not None:
        cache.close()
        tmp.cleanup()
    return TuneResult(values, original, tuned_src, lifted.source, untuned, tuned, n_trials, len(tune), len(held),
                      [{"number": t.number, "value": t.value, "params": t.params} for t in study.trials])


def tune_workspace(ws, version: int | None = None, n_trials: int = 30, heldout_fraction: float = 0.3,
                   seed: int = 0, profile: str | dict = "shapes", engines=None, **kw):
    """Tune the accepted program (or ``version``) on the task card's examples and save the tuned
    program as a new version (origin "tuned", params = the tuned values and the scores)."""
    from builder.run import examples_from_card

    pv = ws.program(version) if version is not None else ws.accepted
    if pv is None:
        raise TuneError("the workspace has no accepted program; accept one or pass version=")
    card = ws.load_task()
    examples = examples_from_card(card, ws.root)
    res = tune_program(pv.source, examples, card.output, card.metric, engines=engines, profile=profile,
                       n_trials=n_trials, heldout_fraction=heldout_fraction, seed=seed, **kw)
    params = {"values": res.params, "original": res.original, "untuned": res.untuned, "tuned": res.tuned,
              "n_trials": n_trials, "seed": seed, "n_tune": res.n_tune, "n_heldout": res.n_heldout}
    new = ws.add_program(res.source, origin="tuned", parent=pv.version, params=params,
                         note=f"tuned {len(res.params)} constants: held-out {res.untuned['heldout']:.3f} -> "
                              f"{res.tuned['heldout']:.3f}")
    return res, new
