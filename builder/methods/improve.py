"""Reinforced self-training of the default planner on a customer's queries (the Improve step).

The default planner (``builder.planner.semantic``) reads a query into ranked meanings, each
compiled into a program. Self-training adapts its parser head to the customer's phrasing:

1. **Explore** — for every distinct training query, take the k best readings (more for queries
   no reading solved in the previous round: structure first, then values, since readings differ
   in kind first and slot values second), run each program on the query's labelled examples in
   the sandbox and score its outputs against the examples' expected answers with the card's
   metric. The reward is the customer's labels only: a reading is rewarded when it answers *all*
   of the query's examples (no reference program is consulted).
2. **Filter** — keep the best-ranked rewarded reading per query; a query needs at least
   ``min_examples`` labelled examples before anything is kept (a yes/no query with one example
   rewards a wrong program half the time). Engineer corrections (accepted programs whose meaning
   is known) are trusted as they are. Where a benchmark has reference programs, ``audit`` reports
   how many kept programs behave unlike the reference (a diagnostic; it never changes the reward).
3. **Improve** — fine-tune the head, starting from the current one, on the kept readings
   (oversampled) mixed with replayed generated phrasings (capped share, so the planner does not
   forget the kinds the customer did not ask about); keep the new head only if it solves at
   least as many examples of the *validation* queries top-1 as the one before (``keep_best``).
4. **Report** — per round: accuracy on the evaluation queries per family, kept/filtered counts,
   and whether the result is never worse than the start on the evaluation queries.

Training, validation and evaluation are split **by query string** (the planner's output depends
on the query only, so scoring it on other images of a query it trained on measures nothing
new): ``self_train`` refuses overlapping splits. ``AdaptConfig.explore=False`` is the
replay-only baseline (the same rounds and replay mix, nothing learnt from the customer's
examples) and ``replay=0`` the no-replay one; ``bench/selftrain_bench.py`` runs all arms.

For a workspace, ``split_examples`` groups the task card's examples by query into training,
validation and evaluation queries and ``example_scorer`` runs programs on them in the sandbox
with the card's metric; ``builder.api.steps.improve_planner`` puts them together and saves the
adapted planner.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from builder.core.errors import UserError
from builder.core.metrics import score as score_output
from builder.core.progress import report as _report
from builder.core.seeding import derive_seed, numpy_rng
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
    # Phrasing patterns per kind in the replay: None is every pattern, the shipped planner's own
    # training distribution (replay is rehearsal, not a source of new phrasings).
    replay_patterns: int | None = None
    explore: bool = True  # False: the replay-only baseline (no reading is rewarded or trained on)
    min_examples: int = 1
    # Keep a round's head only if it solves at least as many labelled examples of the
    # validation queries (top-1) as the head before it; the validation queries are labelled
    # but never trained on (the fine-tuning recipe keeps its start the same way).
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
    """Where reference programs exist (benchmarks): is each kept program the reference's behaviour
    on probe scenes? A diagnostic of the filter only; it never changes what is rewarded."""
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


def check_disjoint(**splits: Sequence[QueryTask]) -> None:
    """Raise ``ValueError`` if a query string is in two of the named splits (training,
    validation, evaluation must be disjoint by query: the planner's output depends on it alone)."""
    seen: dict[str, str] = {}
    for name, tasks in splits.items():
        for q in {t.query for t in tasks}:
            if q in seen:
                raise ValueError(f"query {q!r} is in both the {seen[q]} and the {name} split; "
                                 "split the examples by query string")
            seen[q] = name


def _training_mix(all_kept: dict[str, dict], corrections: Sequence[dict], replay: list[dict],
                  config: AdaptConfig) -> list[dict]:
    mix = [{kk: v for kk, v in k.items() if kk in ("words", "roles", "meaning")} for k in all_kept.values()]
    return mix * config.oversample + list(corrections) * config.oversample + replay


def self_train(planner: SemanticPlanner, tasks: Sequence[QueryTask], eval_tasks: Sequence[QueryTask],
               scorer: Callable, config: AdaptConfig | None = None, progress: Callable[[str, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None, corrections: Sequence[dict] = (),
               val_tasks: Sequence[QueryTask] = (), split_by: str = "query") -> tuple[SemanticPlanner, dict]:
    """Self-train a copy of ``planner`` on ``tasks``; returns (adapted planner, report).

    ``scorer(program, task, examples) -> list[bool]`` scores a program's outputs on labelled
    examples against their expected answers (the caller owns engines and images).
    ``val_tasks`` decide keep-best (labelled, never trained on); ``eval_tasks`` are only
    reported. With ``split_by="query"`` the three must not share a query string; "image" (a
    workspace with too few distinct queries) allows it and the report says so.
    ``corrections`` are engineer-made training examples {"query", "words", "roles", "meaning"}
    used every round.
    """
    config = config or AdaptConfig()
    if split_by == "query":
        check_disjoint(training=tasks, validation=val_tasks, evaluation=eval_tasks)
    elif split_by != "image":
        raise ValueError(f"split_by must be 'query' or 'image', got {split_by!r}")
    val_tasks = [t for t in val_tasks if t.examples]
    if config.keep_best and not val_tasks:
        raise UserError("keep-best needs labelled validation examples that are not trained on: "
                        "annotate more examples (or more distinct queries)")
    report = {"config": config.__dict__, "rounds": [], "split_by": split_by,
              "split_queries": {"training": len(tasks), "validation": len(val_tasks), "evaluation": len(eval_tasks)}}
    t0 = time.perf_counter()
    planner = _copy_planner(planner)
    report["before"] = evaluate(planner, eval_tasks, scorer)
    replay = (generate(config.replay, seed=derive_seed(config.seed, "replay"), patterns_per_kind=config.replay_patterns)
              if config.replay else [])
    unsolved: set[str] = set()
    all_kept: dict[str, dict] = {}

    def one_round(current: SemanticPlanner, r: int) -> tuple[SemanticPlanner | None, dict, dict]:
        nonlocal unsolved
        _say(progress, f"round {r + 1}: exploring", r, config.rounds)
        kept, stats = explore(current, tasks, scorer, config, unsolved) if config.explore else ([], {"explore": "off"})
        unsolved = {t.query for t in tasks} - {k["query"] for k in kept}
        audit_stats = audit(kept, scorer) if hasattr(scorer, "outputs") else {}
        for k in kept:
            all_kept[k["query"]] = k  # the latest reading of a query wins
        mix = _training_mix(all_kept, corrections, replay, config)
        row = {**stats, "kept_total": len(all_kept), "unsolved": len(unsolved), "audit": audit_stats,
               "trained_on": len(mix)}
        if not mix:
            return None, row, {"loss_last": None}
        _say(progress, f"round {r + 1}: training on {len(all_kept)} readings", r + 0.5, config.rounds)
        head, log = train_parser(mix, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                 seed=derive_seed(config.seed, "round", r), progress=False, head=current.parser.head,
                                 warmup=0.05, should_stop=should_stop)
        return SemanticPlanner(SemanticParser(head, current.parser.info)), row, log

    planner = run_rounds(planner, one_round, val_tasks, eval_tasks, scorer, config, report, t0, progress, should_stop)
    return planner, report


def run_rounds(planner, one_round: Callable, val_tasks, eval_tasks, scorer: Callable, config: AdaptConfig,
               report: dict, t0: float, progress: Callable[[str, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None):
    """The round loop both readers' self-training share; returns the kept planner.

    ``one_round(planner, r) -> (candidate or None, row, training log)`` explores and trains one round
    from the kept planner. Keep-best decides on ``val_tasks`` (``keep_or_drop``); every round's row
    gets the kept planner's evaluation scores. Fills ``report`` ("validation_before", "rounds",
    "after", "never_worse"; "cancelled" when ``should_stop`` said so); ``report["before"]`` must be set."""
    current = evaluate(planner, val_tasks, scorer) if config.keep_best and val_tasks else None
    report["validation_before"] = current
    scores = report["before"]  # the kept planner's evaluation (a round not kept leaves it as it is)
    for r in range(config.rounds):
        if should_stop is not None and should_stop():
            report["cancelled"] = True
            break
        candidate, row, log = one_round(planner, r)
        accepted, val_top1 = False, None
        if candidate is not None:
            accepted, val_top1, candidate_scores = keep_or_drop(candidate, current, val_tasks, eval_tasks, scorer)
            if accepted:
                planner, current, scores = candidate, val_top1, candidate_scores
        report["rounds"].append({"round": r + 1, **row, "loss_last": log["loss_last"], "accepted": accepted,
                                 "val_top1": val_top1["accuracy"] if val_top1 else None, "eval": scores,
                                 "seconds": round(time.perf_counter() - t0, 1)})
        _say(progress, f"round {r + 1}: eval accuracy {scores['accuracy']:.2f}", r + 1, config.rounds)
    report["after"] = scores
    # reported, never used to decide: the evaluation queries stay unseen by every choice above
    report["never_worse"] = report["after"]["accuracy"] >= report["before"]["accuracy"]
    return planner


def keep_or_drop(candidate, current: dict | None, val_tasks, eval_tasks, scorer: Callable) -> tuple[bool, dict | None,
                                                                                             dict | None]:
    """Keep-best for one round: (kept?, the candidate's validation scores, its evaluation scores when kept).

    With ``current`` (the kept planner's validation scores) the candidate is kept only if it solves at
    least as many validation examples; without (keep-best off) it is always kept."""
    val_top1 = evaluate(candidate, val_tasks, scorer) if current is not None else None
    accepted = val_top1 is None or val_top1["accuracy"] >= current["accuracy"]
    return accepted, val_top1, evaluate(candidate, eval_tasks, scorer) if accepted else None


def _say(progress: Callable[[str, float], None] | None, message: str, rounds_done: float, rounds: int) -> None:
    """Progress of self-training: to the ``progress`` callable and, in rounds, to the job running it."""
    if progress:
        progress(message, rounds_done / rounds)
    _report(message, rounds_done / rounds, done=int(rounds_done), total=rounds, unit="rounds")


# ---- a workspace's examples as self-training data ---------------------------------------------
MIN_QUERIES = 3  # one each for training, validation and evaluation


@dataclass
class Split:
    """Training, validation and evaluation tasks of a workspace and how they were cut: ``by`` is
    "query" (disjoint query strings) or "image" (fewer than ``MIN_QUERIES`` distinct queries: the
    same queries on other images, which says little about phrasings the planner never saw)."""

    training: list[QueryTask]
    validation: list[QueryTask]
    evaluation: list[QueryTask]
    queries: int
    by: str


def _cuts(n: int, eval_fraction: float, val_fraction: float) -> tuple[int, int]:
    """(evaluation, validation) counts out of ``n``: from three on, each split gets at least one."""
    if n < 2:
        return 0, 0
    n_eval = min(max(1, round(n * eval_fraction)), n - 2 if n >= 3 else 1)
    rest = n - n_eval
    return n_eval, min(max(1, round(rest * val_fraction)), rest - 1) if rest > 1 else 0


def split_examples(card: TaskCard, base, eval_fraction: float = 0.5, val_fraction: float = 0.25,
                   seed: int = 0) -> Split:
    """The card's examples grouped by query string into training, validation and evaluation tasks.

    Whole queries go to one split (the planner's output depends on the query alone, so a query
    trained on says nothing about new phrasings wherever its images go): ``eval_fraction`` of the
    distinct queries evaluate, ``val_fraction`` of the rest decide keep-best, the others train
    (queries shuffled with ``seed``). With fewer than ``MIN_QUERIES`` distinct queries, each
    query's examples are cut the same way by image instead, and ``Split.by`` says so. ``base``
    is the folder image paths are relative to.
    """
    if not 0 < eval_fraction < 1 or not 0 < val_fraction < 1:
        raise UserError(f"eval_fraction and val_fraction must lie strictly between 0 and 1 "
                        f"(got {eval_fraction} and {val_fraction})")
    output = OutputKind(card.output).value
    by_query: dict[tuple, list] = {}
    for ex in examples_from_card(card, base):
        if ex.query:
            by_query.setdefault((ex.query, ex.choices is not None, ex.multi_image), []).append(ex)
    if not by_query:
        raise UserError("self-training needs annotated examples with a query in the task card")
    queries = sorted({key[0] for key in by_query})
    split = Split([], [], [], len(queries), "query" if len(queries) >= MIN_QUERIES else "image")
    parts = (split.evaluation, split.validation, split.training)
    if split.by == "query":
        order = [queries[i] for i in numpy_rng(seed, "improve split").permutation(len(queries))]
        n_eval, n_val = _cuts(len(order), eval_fraction, val_fraction)
        part_of = {q: parts[0 if i < n_eval else 1 if i < n_eval + n_val else 2] for i, q in enumerate(order)}
        for (query, has_choices, multi), exs in by_query.items():
            part_of[query].append(QueryTask(query, output, exs, has_choices, multi))
        return split
    for (query, has_choices, multi), exs in by_query.items():
        n_eval, n_val = _cuts(len(exs), eval_fraction, val_fraction)
        for part, chunk in zip(parts, (exs[:n_eval], exs[n_eval:n_eval + n_val], exs[n_eval + n_val:]), strict=True):
            if chunk:
                part.append(QueryTask(query, output, chunk, has_choices, multi))
    return split


def example_scorer(card: TaskCard, engines, sandbox, cache=None) -> Callable:
    """``scorer(program, task, examples) -> list[bool]``: each example run in ``sandbox`` and
    scored with the card's output kind and metric (an error scores False)."""
    output = OutputKind(card.output).value

    def scorer(source, task, examples):
        return [res.error is None and score_output(output, res.value, res.expected, card.metric)
                for res in (run_program(source, ex, engines, sandbox, cache)[0] for ex in examples)]

    return scorer
