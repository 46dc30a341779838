"""Reinforced self-training of the planner (VisReP, CVPR 2024), with per-round reports and resume.

Each round:

1. **Grow** — sample k programs per annotated (images, query, expected) task at temperature ~1,
   run every distinct one in the sandboxed executor with the task's engines (tool results cached
   by content, so repeated calls are free), and reward it 1 if ``builder.core.metrics.score`` accepts
   its output (exact answer, boxes at IoU >= 0.5, right choice; any error scores 0).
2. **Filter** — keep rewarded (query, program) pairs, deduplicated, at most ``max_per_query``
   distinct programs per query, and check each on ``probes`` other scenes (below).
3. **Improve** — fine-tune the planner on seed pairs + every pair kept so far + engineer
   corrections, with the loss on program tokens only (full fine-tuning for small models, LoRA
   through ``peft`` for large ones), starting from the previous round's weights.
4. **Report** — held-out accuracy per family (greedy program per query), pass@k and coverage.

"Right answer, wrong program" (RAWP). A rewarded program P for a task (query q, reference program
R, annotated with the task) is RAWP when it *behaves* differently from R on the same query over
other scenes: P is run with q (and the task's choices) on ``probes`` other image sets of the same
shape, R likewise, both through the same engines; a probe counts when R runs without error there
(R's ``find(...)[0]`` fails on scenes without the object, where the query has no answer), and P
disagrees on it when P errors or ``score(output, P(s), R(s))`` is false. P is RAWP if it disagrees
on any counted probe; with no counted probe it is "unchecked" (kept, counted apart). Comparing
behaviours through the same engines isolates the program from engine mistakes. Reference programs
are annotations, like expected answers: they are used for this check and never shown to the
planner. With ``guard=True`` (default) RAWP programs are not trained on; the rate is reported
either way.

Checkpoints: ``<out>/round_<r>/`` holds the planner after round r (weights, tokenizer,
``planner.json``), its kept pairs and report; ``<out>/state.json`` names the last completed round.
Both are written atomically (a temp folder renamed into place), so a run killed at any moment
resumes from the last completed round (sampling is seeded per round, so a redone round is the same
round).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from builder.core.atomic import atomic_folder, atomic_write_json
from builder.core.metrics import score
from builder.core.seeding import derive_seed, seed_everything
from builder.core.training import clear_partial_checkpoints
from builder.planner.prompt import PlanRequest, check_program, compact_prompt

FAMILIES = ("vqa", "grounding", "itm")


@dataclass
class Task:
    """One annotated example: inputs, expected output, and its reference program (checks only)."""

    id: str
    family: str
    output: str
    query: str
    images: list[str]
    expected: Any
    choices: list[str] | None = None
    multi_image: bool = False
    qtype: str = ""
    program: str | None = None  # reference program: for the RAWP check and metrics, never for planners
    split: str = ""

    def request(self) -> PlanRequest:
        """What the planner sees: query, family and input shape; never the expected output."""
        return PlanRequest(self.query, self.family, self.choices, self.multi_image)


def load_tasks(data_dir: str | Path, split: str | None = None, families: Sequence[str] = FAMILIES) -> list[Task]:
    """Tasks from a ``builder.domains.shapes.world.generate_dataset`` folder (optionally one phrasing split)."""
    from builder.domains.shapes.world import read_jsonl

    root = Path(data_dir).resolve()
    out = []
    for ex in read_jsonl(root / "examples.jsonl"):
        if (split and ex["split"] != split) or ex["family"] not in families:
            continue
        out.append(Task(ex["id"], ex["family"], ex["output"], ex["query"], [str(root / p) for p in ex["images"]],
                        ex["expected"], ex.get("choices"), ex["qtype"].startswith("image_"), ex["qtype"],
                        ex.get("program"), ex["split"]))
    return out


def reward(task_output: str, value: Any, error: str | None, expected: Any) -> bool:
    """The binary reward: 0 on any error, else the task metric (never raises on odd values)."""
    if error is not None:
        return False
    try:
        return bool(score(task_output, value, expected))
    except (TypeError, ValueError, KeyError, IndexError):
        return False


# ---- execution --------------------------------------------------------------------------------
class ProgramRunner:
    """Runs programs on tasks in one shared sandbox with the profile's engines and a tool cache.

    ``run(jobs)`` takes (program, images, query, choices, multi_image) tuples and returns
    (value, error) pairs; identical jobs are run once. Programs that fail ``check_program`` are
    answered with their error without reaching the sandbox.
    """

    def __init__(self, profile: str | dict = "shapes", cache_dir: str | Path | None = None, workers: int = 2,
                 engines=None, sandbox=None):
        from builder.executor import Sandbox
        from builder.tools.cache import ToolCache
        from builder.tools.profile import build_engines

        self.engines = engines if engines is not None else build_engines(profile)
        self._own_sandbox = sandbox is None
        self.sandbox = sandbox if sandbox is not None else Sandbox(workers=workers)
        self.cache = ToolCache(cache_dir) if cache_dir is not None else None
        self.workers = workers
        # One long-lived pool: sandbox workers are spawned from these threads and (through the
        # parent-death signal) die with the thread that spawned them, so the threads must outlive
        # the runs; a pool per call killed the worker after every call.
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="selftrain-run")
        self._images: dict[str, Any] = {}

    def _load(self, paths: Sequence[str]):
        from builder.core.images import load_image

        for p in paths:
            if p not in self._images:
                self._images[p] = load_image(p)
        return [self._images[p] for p in paths]

    def run(self, jobs: Sequence[tuple], progress: bool = False, desc: str = "execute") -> list[tuple[Any, str | None]]:
        from builder.run import ExampleInput, run_program

        unique = list(dict.fromkeys(_job_key(j) for j in jobs))
        index = {key: i for i, key in enumerate(unique)}
        by_key = {_job_key(j): j for j in jobs}

        def one(key):
            source, images, query, choices, multi = by_key[key]
            problem = check_program(source)
            if problem:
                return None, f"invalid: {problem}"
            ex = ExampleInput(list(images), query, list(choices) if choices is not None else None, None, "", multi)
            res, _ = run_program(source, ex, self.engines, self.sandbox, self.cache, images=self._load(images))
            return res.value, res.error

        results = list(tqdm(self._pool.map(one, unique), total=len(unique), desc=desc, disable=not progress,
                            leave=False))
        return [results[index[_job_key(j)]] for j in jobs]

    def __enter__(self) -> ProgramRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own_sandbox:
            self.sandbox.close()
        self._pool.shutdown()
        if self.cache is not None:
            self.cache.close()


def _job_key(job: tuple) -> str:
    source, images, query, choices, multi = job
    return json.dumps([source, list(images), query, choices, bool(multi)])


def _job(source: str, task: Task, images: Sequence[str] | None = None) -> tuple:
    return (source, tuple(images or task.images), task.query, task.choices, task.multi_image)


# ---- configuration and reports -----------------------------------------------------------------
@dataclass
class SelfTrainConfig:
    """Knobs of a self-training run (defaults: the shapes-world default planner on 2 CPU cores)."""

    rounds: int = 3
    k: int = 8  # samples per task in Grow
    temperature: float = 1.0
    top_p: float = 1.0
    steps: int = 300  # optimiser steps per round
    batch_size: int = 32
    lr: float = 1e-3
    prompt_noise: float = 0.2
    lora: bool | None = None  # None: LoRA when the model has more than 50M parameters
    probes: int = 3  # other scenes each kept program is checked on (0: no RAWP check)
    guard: bool = True  # drop RAWP programs from the training data
    max_per_query: int = 2  # distinct kept programs per query
    include_seed: bool = True  # keep training on the seed pairs too (no forgetting of the seed set)
    eval_k: int = 8  # samples per held-out task for pass@k (0: greedy accuracy only)
    seed: int = 0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _by_family(rows: list[tuple[str, float]]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for fam, v in rows:
        acc[fam].append(v)
    out = {f: round(sum(v) / len(v), 4) for f, v in sorted(acc.items())}
    out["all"] = round(sum(v for _, v in rows) / len(rows), 4) if rows else 0.0
    return out


def sample_stats(tasks: Sequence[Task], rewards: list[list[bool]], k: int) -> dict:
    """pass@1, pass@k and coverage (share of tasks with at least one correct sample), per family."""
    return {
        "pass@1": _by_family([(t.family, sum(r) / len(r)) for t, r in zip(tasks, rewards, strict=True)]),
        f"pass@{k}": _by_family([(t.family, pass_at_k(len(r), sum(r), k)) for t, r in zip(tasks, rewards, strict=True)]),
        "coverage": _by_family([(t.family, float(any(r))) for t, r in zip(tasks, rewards, strict=True)]),
    }


def evaluate(planner, tasks: Sequence[Task], runner: ProgramRunner, k: int = 0, temperature: float = 1.0,
             top_p: float = 1.0, progress: bool = False) -> dict:
    """Execution accuracy of one greedy program per task, per family; with ``k`` also sampled
    pass@1 / pass@k / coverage."""
    reqs = [t.request() for t in tasks]
    greedy = [c[0] for c in planner.propose(reqs, k=1, temperature=0.0)]
    results = runner.run([_job(p, t) for p, t in zip(greedy, tasks, strict=True)], progress, "eval")
    ok = [reward(t.output, v, e, t.expected) for t, (v, e) in zip(tasks, results, strict=True)]
    report = {"n": len(tasks), "accuracy": _by_family([(t.family, float(o)) for t, o in zip(tasks, ok, strict=True)]),
              "errors": round(sum(e is not None for _, e in results) / max(1, len(tasks)), 4)}
    if k:
        samples = planner.propose(reqs, k=k, temperature=temperature, top_p=top_p)
        jobs = [_job(p, t) for t, cands in zip(tasks, samples, strict=True) for p in cands]
        res = runner.run(jobs, progress, "eval samples")
        flat = [reward(t.output, v, e, t.expected) for (t, _), (v, e) in
                zip(((t, p) for t, c in zip(tasks, samples, strict=True) for p in c), res, strict=True)]
        report.update(sample_stats(tasks, [flat[i * k:(i + 1) * k] for i in range(len(tasks))], k))
    return report


# ---- the RAWP check ----------------------------------------------------------------------------
def probe_image_sets(task: Task, pool: Sequence[Task], n: int, seed: int = 0) -> list[tuple[str, ...]]:
    """``n`` image sets from ``pool`` with the task's number of images, none sharing its images."""
    mine = set(task.images)
    sets = {tuple(t.images) for t in pool if len(t.images) == len(task.images) and not mine & set(t.images)}
    sets = sorted(sets)
    random.Random(f"{seed}:{task.id}").shuffle(sets)
    return sets[:n]


def rawp_check(kept: list[tuple[Task, str]], pool: Sequence[Task], runner: ProgramRunner, probes: int,
               seed: int = 0, progress: bool = False) -> list[str]:
    """Per kept (task, program): "ok", "rawp" or "unchecked" (see the module docstring)."""
    plans = [(t, p, probe_image_sets(t, pool, probes, seed)) for t, p in kept]
    ref_jobs = [_job(t.program, t, s) for t, _, sets in plans for s in sets if t.program]
    cand_jobs = [_job(p, t, s) for t, p, sets in plans for s in sets if t.program]
    results = runner.run(ref_jobs + cand_jobs, progress, "rawp check")
    refs, cands = results[:len(ref_jobs)], results[len(ref_jobs):]
    verdicts, i = [], 0
    for t, _, sets in plans:
        if not t.program or not sets:
            verdicts.append("unchecked")
            continue
        counted = disagree = 0
        for _ in sets:
            (rv, re_), (cv, ce) = refs[i], cands[i]
            i += 1
            if re_ is not None:
                continue  # the query has no answer on this scene
            counted += 1
            disagree += not reward(t.output, cv, ce, rv)
        verdicts.append("unchecked" if not counted else ("rawp" if disagree else "ok"))
    return verdicts


# ---- the loop ------------------------------------------------------------------------------------
def _pair(req: PlanRequest, program: str, prompt_of: Callable[[PlanRequest], str]) -> tuple[str, str]:
    return prompt_of(req), program.rstrip() + "\n"


def _as_correction(item) -> tuple[PlanRequest, str]:
    if isinstance(item, dict):
        return PlanRequest(item["query"], item.get("family"), item.get("choices"), bool(item.get("multi_image"))), \
            item["program"]
    req, program = item
    return (req if isinstance(req, PlanRequest) else PlanRequest(str(req))), program


def _save_round(planner, out: Path, r: int, report: dict, kept: list[dict]) -> None:
    """Write round r's checkpoint into a temp folder, then rename it into place (atomic)."""
    with atomic_folder(out / f"round_{r}") as tmp:
        planner.save(tmp, extra={"selftrain_round": r})
        (tmp / "kept.jsonl").write_text("".join(json.dumps(k) + "\n" for k in kept))
        (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def self_train(planner, train_tasks: Sequence[Task], eval_tasks: Sequence[Task], out_dir: str | Path,
               config: SelfTrainConfig | None = None, seed_pairs: Sequence[tuple[str, str]] = (),
               corrections: dict[int, list] | None = None, runner: ProgramRunner | None = None,
               progress: bool = True) -> dict:
    """Run (or resume) reinforced self-training; returns ``{"config", "rounds": [report, ...]}``.

    ``planner`` is a ``TransformersPlanner`` (trained in place). ``seed_pairs`` are the
    (prompt, program) pairs the planner was first trained on. ``corrections`` maps a round r to
    engineer-corrected programs — ``{"query", "family", "program", ...}`` dicts or
    (PlanRequest, program) pairs — added to the training data from round r on (checked, never
    executed against the reward). ``out_dir`` (e.g. ``ws.dir("checkpoints", "selftrain")``)
    receives checkpoints and reports; an interrupted run resumes from its last completed round.
    """
    from builder.planner.backends import TransformersPlanner
    from builder.planner.train import finetune

    cfg = config or SelfTrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_partial_checkpoints(out)  # a round killed while being saved
    own_runner = runner is None
    runner = runner or ProgramRunner(cache_dir=out / "tool_cache")
    prompt_of = planner.prompt
    corrections = corrections or {}
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"completed": -1}
    reports: list[dict] = []
    for r in range(state["completed"] + 1):  # reports of completed rounds
        reports.append(json.loads((out / f"round_{r}" / "report.json").read_text()))
    resumed_from = state["completed"] if state["completed"] >= 0 else None
    if state["completed"] >= 1:  # continue from the last completed round's weights
        loaded = TransformersPlanner.from_pretrained(out / f"round_{state['completed']}")
        planner.model, planner.tokenizer = loaded.model, loaded.tokenizer
    n_params = sum(p.numel() for p in planner.model.parameters())
    use_lora = cfg.lora if cfg.lora is not None else n_params > 50_000_000
    kept_all: list[dict] = [k for r in range(1, state["completed"] + 1)
                            for k in _read_jsonl(out / f"round_{r}" / "kept.jsonl") if k.get("train")]
    try:
        if state["completed"] < 0:  # round 0: the starting planner, evaluated
            t0 = time.perf_counter()
            rep = {"round": 0, "eval": evaluate(planner, eval_tasks, runner, cfg.eval_k, cfg.temperature, cfg.top_p,
                                                progress), "seconds": round(time.perf_counter() - t0, 2)}
            _save_round(planner, out, 0, rep, [])
            reports.append(rep)
            atomic_write_json(state_path, {"completed": 0, "config": asdict(cfg)})
        for r in range(len(reports), cfg.rounds + 1):
            t0 = time.perf_counter()
            seed_everything(cfg.seed, "round", r)  # the same round samples the same programs after a resume
            # Grow
            reqs = [t.request() for t in train_tasks]
            samples = planner.propose(reqs, k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p)
            t_sample = time.perf_counter() - t0
            jobs = [_job(p, t) for t, c in zip(train_tasks, samples, strict=True) for p in c]
            res = runner.run(jobs, progress, f"round {r} grow")
            flat = [reward(t.output, v, e, t.expected) for t, (v, e) in
                    zip((t for t in train_tasks for _ in range(cfg.k)), res, strict=True)]
            rewards = [flat[i * cfg.k:(i + 1) * cfg.k] for i in range(len(train_tasks))]
            t_exec = time.perf_counter() - t0 - t_sample
            # Filter: rewarded, deduplicated, capped per query
            seen, per_query, kept = set(), defaultdict(int), []
            for t, cands, rw in zip(train_tasks, samples, rewards, strict=True):
                for p, ok in zip(cands, rw, strict=True):
                    key = (prompt_of(t.request()), p.strip())
                    if not ok or key in seen or per_query[key[0]] >= cfg.max_per_query:
                        continue
                    seen.add(key)
                    per_query[key[0]] += 1
                    kept.append((t, p))
            verdicts = rawp_check(kept, train_tasks, runner, cfg.probes, cfg.seed, progress) if cfg.probes else \
                ["unchecked"] * len(kept)
            prior = {(k["prompt"], k["program"]) for k in kept_all}
            new_rows = []
            for (t, p), v in zip(kept, verdicts, strict=True):
                prompt, program = _pair(t.request(), p, prompt_of)
                row = {"task": t.id, "family": t.family, "qtype": t.qtype, "query": t.query, "prompt": prompt,
                       "program": program, "verdict": v, "train": not (cfg.guard and v == "rawp")}
                if (prompt, program) not in prior:
                    new_rows.append(row)
            kept_all += [row for row in new_rows if row["train"]]
            fixes = [_pair(*_as_correction(c), prompt_of) for rr in sorted(corrections) if rr <= r
                     for c in corrections[rr]]
            bad = [p for _, p in fixes if check_program(p)]
            if bad:
                raise ValueError(f"an engineer correction is not a valid program: {check_program(bad[0])}")
            # Improve
            pairs = (list(seed_pairs) if cfg.include_seed else []) + \
                [(k["prompt"], k["program"]) for k in kept_all] + fixes
            t1 = time.perf_counter()
            log = finetune(planner.model, planner.tokenizer, pairs, steps=cfg.steps, batch_size=cfg.batch_size,
                           lr=cfg.lr, seed=derive_seed(cfg.seed, "round", r, "train"), prompt_noise=cfg.prompt_noise,
                           lora=use_lora, progress=progress, desc=f"round {r} train")
            # A LoRA adapter is merged at once: every round starts from plain weights and saves them.
            planner.model = log.pop("model").merge_and_unload() if use_lora else log.pop("model")
            t_train = time.perf_counter() - t1
            # Report
            t2 = time.perf_counter()
            ev = evaluate(planner, eval_tasks, runner, cfg.eval_k, cfg.temperature, cfg.top_p, progress)
            counted = [v for v in verdicts if v != "unchecked"]
            rep = {
                "round": r,
                "grow": {"tasks": len(train_tasks), "k": cfg.k, **sample_stats(train_tasks, rewards, cfg.k),
                         "distinct_programs": len({_job_key(j) for j in jobs})},
                "kept": {"rewarded_distinct": len(kept), "new": len(new_rows),
                         "trained_total": len(kept_all), "corrections": len(fixes),
                         "rawp": sum(v == "rawp" for v in verdicts), "unchecked": verdicts.count("unchecked"),
                         "rawp_rate": round(sum(v == "rawp" for v in counted) / len(counted), 4) if counted else None,
                         "rawp_rate_by_family": _rawp_by_family(kept, verdicts)},
                "train": {"pairs": len(pairs), "steps": cfg.steps, "lora": bool(use_lora),
                          "loss_first": round(log["loss_first"], 4), "loss_last": round(log["loss_last"], 4)},
                "eval": ev,
                "seconds": {"sample": round(t_sample, 1), "execute": round(t_exec, 1), "train": round(t_train, 1),
                            "eval": round(time.perf_counter() - t2, 1), "total": round(time.perf_counter() - t0, 1)},
            }
            _save_round(planner, out, r, rep, new_rows)
            atomic_write_json(state_path, {"completed": r, "config": asdict(cfg)})
            reports.append(rep)
    finally:
        if own_runner:
            runner.close()
    return {"config": asdict(cfg), "resumed_from": resumed_from, "rounds": reports}


def _rawp_by_family(kept, verdicts) -> dict:
    rows = [(t.family, float(v == "rawp")) for (t, _), v in zip(kept, verdicts, strict=True) if v != "unchecked"]
    return _by_family(rows) if rows else {}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def default_prompt_pairs(shots) -> list[tuple[str, str]]:
    """(compact prompt, program) pairs for seed shots (``builder.planner.prompt.Shot``)."""
    return [(compact_prompt(PlanRequest(s.query, s.family, s.choices, s.multi_image)), s.program.rstrip() + "\n")
            for s in shots]


__all__ = ["FAMILIES", "ProgramRunner", "SelfTrainConfig", "Task", "default_prompt_pairs", "evaluate",
           "load_tasks", "pass_at_k", "probe_image_sets", "rawp_check", "reward", "sample_stats", "self_train"]


def tasks_from_workspace(ws) -> list[Task]:
    """The workspace task card's examples as self-training tasks (no reference programs)."""
    from builder.planner.plan import FAMILY_OF_OUTPUT
    from builder.run import examples_from_card

    card = ws.load_task()
    family = FAMILY_OF_OUTPUT[card.output]
    return [
        Task(id=ex.id, family=family, output=card.output.value, query=ex.query, images=ex.images,
             expected=ex.expected, choices=ex.choices, multi_image=ex.multi_image)
        for ex in examples_from_card(card, ws.root)
    ]


def self_train_workspace(ws, rounds: int = 1, k: int = 8, steps: int = 100, eval_fraction: float = 0.5,
                         planner_path: str | Path | None = None, run: str = "selftrain",
                         progress: bool = True) -> dict:
    """Self-train the planner on a workspace's annotated examples; checkpoints in ``checkpoints/<run>``.

    The examples are split into a training part (Grow/Improve) and an evaluation part reported per
    round. Without reference programs there is no "right answer, wrong program" probe, so yes/no
    tasks may keep lucky programs: check the per-round evaluation before trusting the planner.
    The trained planner is saved to ``checkpoints/<run>/planner`` for ``propose_for_task``.
    """
    from builder.planner.default import load_default_planner, pairs_of, seed_shots

    tasks = tasks_from_workspace(ws)
    if len(tasks) < 2:
        raise ValueError("self-training needs at least two annotated examples in the task card")
    n_eval = max(1, int(len(tasks) * eval_fraction))
    eval_tasks, train_tasks = tasks[:n_eval], tasks[n_eval:]
    planner = load_default_planner(planner_path)
    out = ws.dir("checkpoints", run)
    config = SelfTrainConfig(rounds=rounds, k=k, steps=steps, probes=0, guard=False, eval_k=0)
    report = self_train(planner, train_tasks, eval_tasks, out, config, seed_pairs=pairs_of(seed_shots()),
                        progress=progress)
    planner.save(out / "planner")
    report["planner"] = str(out / "planner")
    return report
