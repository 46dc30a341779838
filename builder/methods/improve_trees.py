"""Reinforced self-training of the composing parser: the Improve step on meaning trees.

The recipe of ``builder.methods.improve`` (explore, keep what the customer's labels reward,
fine-tune with replay, keep-best on validation queries, report on evaluation queries), applied
to the composing parser (``builder.planner.compose``), which reads every request into a tree:

1. **Explore** — for every training query, the parser's k best trees are compiled and run on the
   query's labelled examples; the best-ranked tree that answers *all* of them is kept (the
   customer's labels are the only reward).
2. **Improve** — the decoder is fine-tuned from its current weights on the kept (query, tree)
   pairs, oversampled, mixed with replayed generated requests and refusal sentences (so it keeps
   reading what the customer did not ask about, and keeps refusing what it cannot express). The
   query's words join the parser's vocabulary (they are no longer "unread").
3. **Keep best** — a round's parser is kept only if the planner that proposes (``ComposingPlanner``,
   with the workspace's 20-kind reader) solves at least as many validation examples top-1.

Scores are always those of the ``ComposingPlanner`` the workspace proposes with, so the report's
before/after is what the engineer sees in the next proposal.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np

from builder.core.seeding import derive_seed, numpy_rng
from builder.methods.improve import AdaptConfig, QueryTask, _say, check_disjoint, evaluate, run_rounds
from builder.planner.compose.parse import TreeParser
from builder.planner.compose.planner import ComposingPlanner
from builder.planner.compose.train import build_items, collate, loss_of, prepare
from builder.planner.tree import TreeError
from builder.planner.tree_compile import compile_tree


def explore_trees(parser: TreeParser, tasks: Sequence[QueryTask], scorer: Callable, k: int,
                  min_examples: int = 1) -> tuple[list[dict], dict]:
    """Rewarded trees {"request", "tree", "output"} (one per query at most) and exploration counts."""
    kept, stats = [], {"readings_tried": 0, "refused": 0, "too_few_examples": 0}
    for task in tasks:
        if len(task.examples) < min_examples:
            stats["too_few_examples"] += 1
            continue
        parse = parser.parse(task.query, task.output, k=k)
        if parse.refusal:
            stats["refused"] += 1
            continue
        for tree, _ in parse.candidates:
            try:
                src = compile_tree(tree, task.output, choices=task.choices)
            except TreeError:
                continue
            stats["readings_tried"] += 1
            if all(scorer(src, task, task.examples)):
                kept.append({"request": task.query, "tree": tree, "output": task.output})
                break
    stats["queries_rewarded"] = len(kept)
    return kept, stats


def finetune_parser(parser: TreeParser, examples: list[dict], replay: list[dict], steps: int, lr: float,
                    batch_size: int, seed: int, should_stop: Callable[[], bool] | None = None) -> tuple[TreeParser, dict]:
    """A copy of ``parser`` fine-tuned on ``examples`` (already oversampled) plus ``replay`` items."""
    from builder.core.training import TrainConfig, train_loop

    items = prepare(examples, numpy_rng(seed, "improve trees"), frozenset(), p_no_output=0.0) + replay
    model = copy.deepcopy(parser.model)

    def batches(_epoch, rng):
        for _ in range(steps):
            yield collate([items[i] for i in rng.choice(len(items), min(batch_size, len(items)), replace=False)])

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.01, schedule="cosine", warmup_steps=max(1, steps // 20),
                      grad_clip=1.0, seed=seed)
    res = train_loop(model, batches, loss_of, cfg, should_stop=should_stop)
    model.eval()
    words = {w.lower() for e in examples for w in e["request"].split() if w.isalpha()}
    losses = [h["loss"] for h in res.history["train"]]
    info = {**parser.info, "adapted_on_queries": len({e["request"] for e in examples})}
    return TreeParser(model, info, parser.vocabulary | words), {"loss_last": round(float(np.mean(losses[-10:])), 4)
                                                                if losses else None}


def self_train_trees(planner: ComposingPlanner, tasks: Sequence[QueryTask], eval_tasks: Sequence[QueryTask],
                     scorer: Callable, config: AdaptConfig | None = None,
                     progress: Callable[[str, float], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, val_tasks: Sequence[QueryTask] = (),
                     split_by: str = "query") -> tuple[ComposingPlanner, dict]:
    """Self-train ``planner``'s composing parser on ``tasks``; returns (planner with the adapted parser, report).

    The arguments mean what they mean for ``improve.self_train``; ``config.explore=False`` is the
    replay-only baseline. ``planner`` is not changed."""
    config = config or AdaptConfig()
    if split_by == "query":
        check_disjoint(training=tasks, validation=val_tasks, evaluation=eval_tasks)
    val_tasks = [t for t in val_tasks if t.examples]

    def with_parser(parser: TreeParser) -> ComposingPlanner:
        return ComposingPlanner(kinds=planner.kinds, parser=parser, closed_vocabulary=planner.closed_vocabulary,
                                engines=planner.engines)

    t0 = time.perf_counter()
    report: dict = {"reader": "composing parser", "config": config.__dict__, "rounds": [], "split_by": split_by}
    report["before"] = evaluate(with_parser(planner.parser), eval_tasks, scorer)
    replay = build_items(config.replay, derive_seed(config.seed, "tree replay")) if config.replay else []
    all_kept: dict[str, dict] = {}

    def one_round(current: ComposingPlanner, r: int) -> tuple[ComposingPlanner | None, dict, dict]:
        _say(progress, f"round {r + 1}: exploring trees", r, config.rounds)
        kept, stats = (explore_trees(current.parser, tasks, scorer, config.k, config.min_examples)
                       if config.explore else ([], {"explore": "off"}))
        all_kept.update({k["request"]: k for k in kept})
        mix = list(all_kept.values()) * config.oversample
        row = {**stats, "kept_total": len(all_kept)}
        if not (mix or replay):
            return None, row, {"loss_last": None}
        _say(progress, f"round {r + 1}: training the tree decoder on {len(all_kept)} trees", r + 0.5, config.rounds)
        parser, log = finetune_parser(current.parser, mix, replay, config.steps, config.lr, config.batch_size,
                                      derive_seed(config.seed, "tree round", r), should_stop)
        return with_parser(parser), row, log

    current_planner = run_rounds(with_parser(planner.parser), one_round, val_tasks, eval_tasks, scorer, config,
                                 report, t0, progress, should_stop)
    return current_planner, report
