"""The video planner: reads which video task kind a query asks for and the objects it names,
and proposes programs with those objects compiled in.

A card whose examples are videos is planned here (``propose_for_task`` routes it).

* **Kind.** The query is embedded with the frozen pretrained MiniLM the default planner uses
  (``builder.planner.semantic.encode``: the same loaded model and cache; mean-pooled, unit
  length), and a logistic-regression head over that embedding gives a probability per kind
  (a collision's frame, a collision summary, line crossings, leaving the frame). The head is
  trained on hand-written phrasings (``builder.planner.video_phrasings``) and committed as
  ``video_head/`` (an artifact folder: 4 x 384 weights in its config.json); ``python -m builder.planner.video`` rebuilds it. The
  card's output kind (frame, summary, count, bool) restricts the kinds. Without the ML stack the
  old keyword rule (``keyword_video_kind``) decides.
* **Objects.** The objects a collision query names (colour, optional shape and size) are read
  with the domain vocabulary (synonyms, inflections, typos of words MiniLM does not know) and
  compiled into the program as constants ``A`` and ``B``; the program never reads the query. A
  query naming none gets the any-pair program (the pair whose contact turns both round).
* **Candidates.** k programs: the best kind's first, then the other kinds that fit the card's
  output by probability, then alternative object readings (any pair), so selection by examples
  can correct a wrong first guess.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from builder.core.artifacts import Artifact
from builder.domains import vocabulary
from builder.domains.shapes.world.video_tasks import COLLISION_KINDS, VIDEO_KINDS, reference_program
from builder.planner.prompt import as_request
from builder.planner.video_phrasings import PHRASINGS

HEAD_DIR = Path(__file__).parent / "video_head"  # an artifact folder (builder.core.artifacts)
lookup, split_words = vocabulary("shapes").lookup, vocabulary("shapes").split_words
HEAD_C = 10.0  # inverse L2 strength of the logistic regression (unit-length 384-d inputs)
REBUILD_COMMAND = "python -m builder.planner.video"
_BY_OUTPUT = {v: k for k, v in VIDEO_KINDS.items()}  # frame -> collision_frame, ...

_FILLER = {"coloured", "colored", "colour", "color", "shaped", "sized"}  # "the red coloured circle"


# ---- the kind head --------------------------------------------------------------------------
def phrasings_digest() -> str:
    """Hash of the training phrasings and the head's settings (the committed head records it)."""
    blob = json.dumps({"phrasings": PHRASINGS, "C": HEAD_C}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sentence_embeddings(queries: list[str]) -> np.ndarray:
    """Unit-length mean-pooled MiniLM embeddings [n, 384] (the default planner's encoder and cache)."""
    from builder.planner.semantic import encode

    enc = encode([split_words(q) for q in queries])
    m = enc.mask.unsqueeze(-1).float()
    emb = ((enc.hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy().astype(np.float64)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


class VideoKindHead(Artifact):
    """The logistic-regression kind head: ``coef`` [kinds, 384] and ``intercept`` over unit-length
    MiniLM embeddings. A non-tensor artifact: its parameters live in ``config.json``."""

    architecture = "video-kind-head"

    def __init__(self, kinds: list[str], coef, intercept, C: float = HEAD_C, info: dict | None = None):
        self.kinds, self.C = list(kinds), float(C)
        self.coef, self.intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
        if self.coef.shape != (len(self.kinds), 384) or self.intercept.shape != (len(self.kinds),):
            raise ValueError(f"video kind head: coef {self.coef.shape} / intercept {self.intercept.shape} "
                             f"do not fit {len(self.kinds)} kinds x 384")
        self.info = info or {}

    def artifact_config(self) -> dict:
        """The whole head as JSON: kinds, ``C`` and the coefficients and intercepts (rounded to 6 places)."""
        return {"kinds": self.kinds, "C": self.C, "intercept": [round(float(v), 6) for v in self.intercept],
                "coef": [[round(float(v), 6) for v in row] for row in self.coef]}

    def artifact_info(self) -> dict:
        """The record of how the head was trained (a copy)."""
        return dict(self.info)

    def _save_files(self, folder: Path) -> None:
        pass  # everything is in config.json

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> VideoKindHead:
        return cls(config["kinds"], config["coef"], config["intercept"], config.get("C", HEAD_C), info)

    def probabilities(self, emb: np.ndarray) -> list[dict[str, float]]:
        """P(kind) per row of unit-length embeddings [n, 384]."""
        logits = emb @ self.coef.T + self.intercept
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return [{k: float(row[i]) for i, k in enumerate(self.kinds)} for row in p]


def train_head(out: str | Path | None = HEAD_DIR) -> VideoKindHead:
    """Fit the kind head on ``PHRASINGS`` (scikit-learn, deterministic) and save it to ``out``."""
    from sklearn.linear_model import LogisticRegression

    kinds = list(VIDEO_KINDS)
    texts = [q for k in kinds for q in PHRASINGS[k]]
    y = np.array([kinds.index(k) for k in kinds for _ in PHRASINGS[k]])
    x = sentence_embeddings(texts)
    clf = LogisticRegression(C=HEAD_C, max_iter=5000).fit(x, y)
    info = {"digest": phrasings_digest(), "phrasings": len(texts), "train_accuracy": round(float(clf.score(x, y)), 4),
            "command": REBUILD_COMMAND}
    head = VideoKindHead(kinds, clf.coef_, clf.intercept_, HEAD_C, info)
    if out is not None:
        head.save_pretrained(out)
        with _HEAD_LOCK:
            _HEAD.clear()
    return head


_HEAD: dict[str, VideoKindHead] = {}
_HEAD_LOCK = threading.Lock()


def _load_head() -> VideoKindHead:
    with _HEAD_LOCK:
        if "head" not in _HEAD:
            _HEAD["head"] = VideoKindHead.from_pretrained(HEAD_DIR)
        return _HEAD["head"]


def kind_probabilities(queries: list[str]) -> list[dict[str, float]]:
    """P(kind | query) per query from the MiniLM head; the keyword rule's one-hot without MiniLM."""
    if not queries:
        return []
    try:
        emb = sentence_embeddings(queries)
    except RuntimeError:  # no torch / transformers / MiniLM wheel: the keyword rule
        return [_one_hot(keyword_video_kind(q)) for q in queries]
    return _load_head().probabilities(emb)


def _one_hot(kind: str | None) -> dict[str, float]:
    return {k: (1.0 if k == kind else 0.0) for k in VIDEO_KINDS}


def fitting_kinds(output: str | None) -> list[str]:
    """The kinds a card's output kind allows (all when None; none for a non-video output)."""
    if output is None:
        return list(VIDEO_KINDS)
    return [k for k, out in VIDEO_KINDS.items() if out == output]


def rank_kinds(query: str, output: str | None = None, probs: dict[str, float] | None = None) -> list[tuple[str, float]]:
    """(kind, probability) best first, over the kinds the output kind allows."""
    probs = probs if probs is not None else kind_probabilities([query])[0]
    ok = fitting_kinds(output)
    return sorted(((k, probs[k]) for k in ok), key=lambda kp: (-kp[1], list(VIDEO_KINDS).index(kp[0])))


def video_kind(query: str, output: str | None = None) -> str | None:
    """The most likely video task kind of a query among those ``output`` allows (None if none fits)."""
    ranked = rank_kinds(query, output)
    return ranked[0][0] if ranked else None


# ---- the named objects ----------------------------------------------------------------------
@dataclass(frozen=True)
class NamedObject:
    """An object a query names: its colour, and shape and size when given."""

    color: str | None = None
    shape: str | None = None
    size: str | None = None

    def as_tuple(self) -> tuple:
        """The attributes as ``(color, shape, size)``, the form reference programs take."""
        return (self.color, self.shape, self.size)


def _known_words() -> frozenset[str]:
    try:
        from builder.planner.semantic import minilm

        return minilm()[2]
    except RuntimeError:
        return frozenset()


def _value(word: str, known: frozenset[str]) -> tuple[str, str] | None:
    v = lookup(word, known)
    return v if v is not None and v[0] in ("color", "shape", "size") else None


def named_objects(query: str) -> list[NamedObject]:
    """The objects a query names, in order: runs of adjacent colour / shape / size words ("the small
    red circle"), one object per colour. A run needs a colour or a shape ("a big crash" names
    nothing); "round" alone is not a circle ("turned round")."""
    known = _known_words()
    words: list[str] = []
    for w in split_words(query):
        parts = [p for p in re.split(r"-", w) if p]
        if len(parts) > 1 and _value(w, known) is None and sum(_value(p, known) is not None for p in parts) > 1:
            words.extend(parts)  # "red-blue crash"
        else:
            words.append(w)
    runs: list[dict] = []
    current: dict = {}
    for w in words:
        v = _value(w, known)
        if v is None:
            if w.lower() in _FILLER and current:
                continue
            if current:
                runs.append(current)
            current = {}
            continue
        field, value = v
        if field in current:
            runs.append(current)
            current = {}
        current[field] = value
        current.setdefault("_words", []).append(w.lower())
    if current:
        runs.append(current)
    objects: list[NamedObject] = []
    for r in runs:
        if "color" not in r and "shape" not in r:
            continue
        if "color" not in r and r["_words"] == ["round"]:
            continue
        obj = NamedObject(r.get("color"), r.get("shape"), r.get("size"))
        same = next((i for i, o in enumerate(objects) if obj.color and o.color == obj.color), None)
        if same is None:
            objects.append(obj)
        else:  # the same object named again: keep what either mention says
            o = objects[same]
            objects[same] = NamedObject(o.color, o.shape or obj.shape, o.size or obj.size)
    return objects


# ---- the planner ----------------------------------------------------------------------------
def readings(query: str, output: str | None = None, probs: dict[str, float] | None = None) -> list[tuple]:
    """(kind, a, b) readings best first: each fitting kind's main reading by probability, then
    alternative object readings (the first object with any other, any pair)."""
    objs = named_objects(query)
    a = objs[0] if objs else None
    b = objs[1] if len(objs) > 1 else None
    main, alternatives = [], []
    for kind, _ in rank_kinds(query, output, probs):
        if kind not in COLLISION_KINDS:
            main.append((kind, None, None))
            continue
        main.append((kind, a, b))
        if b is not None:
            alternatives.append((kind, a, None))  # the second name may not be an object
        if a is not None:
            alternatives.append((kind, None, None))
    out = []
    for r in main + alternatives:
        if r not in out:
            out.append(r)
    return out


def compile_reading(kind: str, a: NamedObject | None, b: NamedObject | None) -> str:
    """The program of a reading: the world's program of ``kind`` with the named objects compiled in."""
    if kind not in COLLISION_KINDS:
        return reference_program(kind)
    return reference_program(kind, a.as_tuple() if a else None, b.as_tuple() if b else None)


class VideoPlanner:
    """Proposes up to k programs per request: kinds ranked by the MiniLM head, objects compiled in."""

    def propose(self, requests, k: int = 1, temperature: float = 1.0, top_p: float = 1.0) -> list[list[str]]:
        """Up to k distinct candidate programs per request, best first (none when no kind fits)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        reqs = [as_request(r) for r in requests]
        probs = kind_probabilities([r.query for r in reqs])
        out = []
        for req, p in zip(reqs, probs, strict=True):
            programs: list[str] = []
            for kind, a, b in readings(req.query, req.output, p):
                src = compile_reading(kind, a, b)
                if src not in programs:
                    programs.append(src)
            out.append(programs[:k])
        return out


# ---- the old keyword rule (fallback without MiniLM, and the bench's baseline) ----------------
_WORDS = {
    "collision_summary": ("summar", "describe", "report", "what happened", "before and after"),
    "collision_frame": ("collide", "collision", "crash", "hit", "bump", "touch"),
    "crossing_count": ("cross", "line", "pass"),
    "leaves": ("leave", "exit", "out of", "disappear", "go off"),
}


def keyword_video_kind(query: str, output: str | None = None) -> str | None:
    """The keyword-counting rule the planner used before the MiniLM head (None if nothing fits)."""
    text = " ".join(re.findall(r"[a-z]+", query.lower()))
    scores = {kind: sum(w in text for w in words) for kind, words in _WORDS.items()}
    if scores["collision_summary"] and (scores["collision_frame"] or output == "summary"):
        scores["collision_summary"] += 2  # "summarise the collision" is a summary, not a frame
    ranked = sorted(scores, key=lambda k: -scores[k])
    fitting = [k for k in ranked if scores[k] and (output is None or VIDEO_KINDS[k] == output)]
    if fitting:
        return fitting[0]
    return _BY_OUTPUT.get(output or "")


if __name__ == "__main__":  # rebuild the committed head: python -m builder.planner.video
    print(json.dumps(train_head().info))
