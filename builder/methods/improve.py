"""Reinforced self-training of the default planner on a customer's queries (the Improve step).

The default planner (``builder.planner.semantic``) reads a query into ranked meanings, each
compiled into a program. Self-training adapts its parser head to the customer's phrasing:

1. **Explore** — for every distinct query with labelled examples, take the k best readings (more
   for queries no reading solved in the previous round: structure first, then values, since
   readings differ in kind first and slot values second), run each program on the query's
   labelled examples in the sandbox, and reward a reading that answers *all* of them.
2. **Filter** — keep the best-ranked rewarded reading per query. A yes/no query with one example
   rewards a wrong program half the time, so where reference programs exist (benchmarks) the kept
   program is also checked on probe scenes against the reference and the filter's precision and
   recall are reported; without them, a query must have at least ``min_examples`` labelled
   examples before anything is kept, and engineer corrections (accepted programs whose meaning
   is known) are trusted as they are.
3. **Improve** — fine-tune the head, starting from the current one, on the kept readings
   (oversampled) mixed with replayed generated phrasings (capped share, so the planner does not
   forget the kinds the customer did not ask about); keep the new head only if it solves at
   least as many of the labelled examples top-1 as the one before (``keep_best``).
4. **Report** — per round: accuracy on the evaluation queries per family, kept/filtered counts.

Unlabelled queries can be listed too: they are explored only through their labelled siblings
(nothing is trained on a query without a reward).

For a workspace, ``split_examples`` groups the task card's examples by query into training and
evaluation parts and ``example_scorer`` runs programs on them in the sandbox with the card's
metric; ``builder.api.steps.improve_planner`` puts them together and saves the adapted planner.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from builder.core.metrics import score as score_output
from builder.core.progress import report as _report
from builder.core.seeding import derive_seed
from builder.core.taskcard import OutputKind, TaskCard
from builder.domains import vocabulary
from builder.planner.meaning import MeaningError, compile_program
from builder.planner.phrasings import generate
from builder.planner.prompt import PlanRequest
from builder.planner.semantic import SemanticParser, SemanticPlanner, request_output, train_parser
from builder.run import examples_from_card, run_program

FAMILY_OF_OUTPUT = {"text": "vqa", "bool": "vqa", "count": "vqa", "boxes": "grounding", "choice": "itm"}


@dataclass
class QueryTask:
    """One customer query and its labelled examples (opaque to this module; the scorer reads them)."""

    query: str
    output: str
    examples: list[Any]
    choices: bool = False
    multi_image: bool = False
    family: str = ""
    reference: str | None = None  # a reference program (benchmarks only): the filter's audit
    probes: list[Any] = field(default_factory=list)  # examples for the audit (expected answers unused)

    def request(self) -> PlanRequest:
        """The planner request for this query: its tool family (from the output kind unless set),
        choices and whether it has several images.
        """
        return PlanRequest(self.query, self.family or FAMILY_OF_OUTPUT[self.output],
                           ["choice"] if self.choices else None, self.multi_image, self.output)


@dataclass
class AdaptConfig:
    """Self-training knobs (defaults measured on the shapes world, see bench/selftrain_bench.py)."""

    rounds: int = 3
    k: int = 8
    k_explore: int = 24  # readings tried for a query no reading solved in the previous round
    steps: int = 200
    lr: float = 3e-4
    batch_size: int = 64
    oversample: int = 8  # copies of each kept reading in the training mix
    replay: int = 1500  # generated phrasings mixed in (the seed share)
    min_examples: int = 1
    # Keep a round's head only if it solves at least as many labelled examples of the training
    # queries (top-1) as the head before it: self-training never makes the planner worse on
    # what the customer labelled (the fine-tuning recipe keeps its start the same way).
    keep_best: bool = True
    seed: int = 0


def _copy_planner(planner: SemanticPlanner) -> SemanticPlanner:
    return SemanticPlanner(SemanticParser(copy.deepcopy(planner.parser.head), dict(planner.parser.info)))


def evaluate(planner: SemanticPlanner, tasks: Sequence[QueryTask], scorer: Callable) -> dict:
    """Top-1 accuracy over the examples of ``tasks``, overall and per family."""
    by_family: dict[str, list[float]] = defaultdict(list)
    for task, cands in zip(tasks, planner.propose([t.request() for t in tasks], k=1), strict=True):
        hits = scorer(cands[0], task, task.examples) if cands else [False] * len(task.examples)
        by_family[task.family or FAMILY_OF_OUTPUT[task.output]] += [float(h) for h in hits]
    every = [h for v in by_family.values() for h in v]
    return {"accuracy": round(float(np.mean(every)), 4) if every else 0.0,
            "per_family": {f: round(float(np.mean(v)), 4) for f, v in sorted(by_family.items())}}


def explore(planner: SemanticPlanner, tasks: Sequence[QueryTask], scorer: Callable, config: AdaptConfig,
            unsolved: set[str]) -> tuple[list[dict], dict]:
    """Rewarded readings (as training examples) and exploration statistics for one round."""
    kept, stats = [], defaultdict(int)
    requests = [t.request() for t in tasks]
    for task, req in zip(tasks, requests, strict=True):
        if len(task.examples) < config.min_examples:
            stats["too_few_examples"] += 1
            continue
        k = config.k_explore if task.query in unsolved else config.k
        parses = planner.parses([req], k=k)[0]
        stats["readings_tried"] += len(parses)
        for p in parses:
            try:
                src = compile_program(p.meaning, request_output(req), req.multi_image, req.choices is not None)
            except MeaningError:
                continue
            if all(scorer(src, task, task.examples)):
                kept.append({"query": task.query, "words": vocabulary("shapes").split_words(task.query), "roles": p.roles,
                             "meaning": p.meaning.to_dict(), "program": src, "task": task})
                break
    stats["queries_rewarded"] = len(kept)
    return kept, dict(stats)


def audit(kept: list[dict], scorer: Callable) -> dict:
    """Where reference programs exist: is each kept program the reference's behaviour on probes?"""
    checked = wrong = 0
    for item in kept:
        task = item["task"]
        if not task.reference or not task.probes:
            continue
        checked += 1
        ref = scorer.outputs(task.reference, task, task.probes)
        got = scorer.outputs(item["program"], task, task.probes)
        wrong += any(not scorer.same(task.output, g, r) for g, r in zip(got, ref, strict=True) if r is not None)
    return {"checked": checked, "right_answer_wrong_program": wrong,
            "rawp_rate": round(wrong / checked, 4) if checked else None}


def self_train(planner: SemanticPlanner, tasks: Sequence[QueryTask], eval_tasks: Sequence[QueryTask],
               scorer: Callable, config: AdaptConfig | None = None, progress: Callable[[str, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None, corrections: Sequence[dict] = ()) -> tuple[SemanticPlanner, dict]:
    """Self-train a copy of ``planner`` on ``tasks``; returns (adapted planner, report).

    ``scorer(program, task, examples) -> list[bool]`` runs a program on examples (the caller owns
    engines and images). ``corrections`` are engineer-made training examples
    {"query", "words", "roles", "meaning"} used every round.
    """
    config = config or AdaptConfig()
    planner = _copy_planner(planner)
    report = {"config": config.__dict__, "rounds": []}
    t0 = time.perf_counter()
    report["before"] = evaluate(planner, eval_tasks, scorer)
    # The keep-best check runs programs on the labelled examples only (no probe scenes).
    check = getattr(scorer, "unguarded", scorer)
    labelled = [t for t in tasks if len(t.examples) >= config.min_examples]
    current = evaluate(planner, labelled, check) if config.keep_best else None
    scores = report["before"]  # the kept planner's evaluation (a round not kept leaves it as it is)
    replay = generate(config.replay, seed=derive_seed(config.seed, "replay")) if config.replay else []
    unsolved: set[str] = set()
    all_kept: dict[str, dict] = {}
    for r in range(config.rounds):
        if should_stop is not None and should_stop():
            report["cancelled"] = True
            break
        _say(progress, f"round {r + 1}: exploring", r, config.rounds)
        kept, stats = explore(planner, tasks, scorer, config, unsolved)
        solved = {k["query"] for k in kept}
        unsolved = {t.query for t in tasks} - solved
        audit_stats = audit(kept, scorer) if hasattr(scorer, "outputs") else {}
        for k in kept:
            all_kept[k["query"]] = k  # the latest reading of a query wins
        mix = [{kk: v for kk, v in k.items() if kk in ("words", "roles", "meaning")} for k in all_kept.values()]
        mix = mix * config.oversample + list(corrections) * config.oversample + replay
        _say(progress, f"round {r + 1}: training on {len(all_kept)} readings", r + 0.5, config.rounds)
        head, log = train_parser(mix, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                 seed=derive_seed(config.seed, "round", r), progress=False, head=planner.parser.head, warmup=0.05,
                                 should_stop=should_stop)
        candidate = SemanticPlanner(SemanticParser(head, planner.parser.info))
        accepted, train_top1 = True, None
        if config.keep_best:
            train_top1 = evaluate(candidate, labelled, check)
            accepted = train_top1["accuracy"] >= current["accuracy"]
        if accepted:
            planner, current = candidate, train_top1
            scores = evaluate(planner, eval_tasks, scorer)
        row = {"round": r + 1, **stats, "kept_total": len(all_kept), "unsolved": len(unsolved),
               "audit": audit_stats, "loss_last": log["loss_last"], "accepted": accepted,
               "train_top1": train_top1["accuracy"] if train_top1 else None,
               "eval": scores, "seconds": round(time.perf_counter() - t0, 1)}
        report["rounds"].append(row)
        _say(progress, f"round {r + 1}: eval accuracy {row['eval']['accuracy']:.2f}", r + 1, config.rounds)
    report["after"] = report["rounds"][-1]["eval"] if report["rounds"] else report["before"]
    return planner, report


def _say(progress: Callable[[str, float], None] | None, message: str, rounds_done: float, rounds: int) -> None:
    """Progress of self-training: to the ``progress`` callable and, in rounds, to the job running it."""
    if progress:
        progress(message, rounds_done / rounds)
    _report(message, rounds_done / rounds, done=int(rounds_done), total=rounds, unit="rounds")


# ---- a workspace's examples as self-training data ---------------------------------------------
def split_examples(card: TaskCard, base, eval_fraction: float = 0.5) -> tuple[list[QueryTask], list[QueryTask], int]:
    """The card's examples grouped by query: (training tasks, evaluation tasks, distinct queries).

    Per query, the first part of its examples trains (the planner's readings are run on them and
    a reading that answers all of them is kept) and the last ``eval_fraction`` evaluates; a
    query with one example only trains. ``base`` is the folder image paths are relative to.
    """
    output = OutputKind(card.output).value
    by_query: dict[tuple, list] = {}
    for ex in examples_from_card(card, base):
        by_query.setdefault((ex.query, ex.choices is not None, ex.multi_image), []).append(ex)
    train, held = [], []
    for (query, has_choices, multi), exs in by_query.items():
        if not query:
            continue
        n_eval = int(round(len(exs) * eval_fraction)) if len(exs) > 1 else 0
        cut = len(exs) - n_eval
        train.append(QueryTask(query, output, exs[:cut], has_choices, multi))
        if n_eval:
            held.append(QueryTask(query, output, exs[cut:], has_choices, multi))
    return train, held, len(by_query)


def example_scorer(card: TaskCard, engines, sandbox, cache=None) -> Callable:
    """``scorer(program, task, examples) -> list[bool]``: each example run in ``sandbox`` and
    scored with the card's output kind and metric (an error scores False)."""
    output = OutputKind(card.output).value

    def scorer(source, task, examples):
        return [res.error is None and score_output(output, res.value, res.expected, card.metric)
                for res in (run_program(source, ex, engines, sandbox, cache)[0] for ex in examples)]

    return scorer
