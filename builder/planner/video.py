"""The video planner: reads which video task kind a query asks for and the objects it names,
and proposes programs with those objects compiled in.

A card whose examples are videos is planned here (``propose_for_task`` routes it).

* **Kind.** The query is embedded with the frozen pretrained MiniLM the default planner uses
  (``builder.planner.semantic.encode``: the same loaded model and cache; mean-pooled, unit
  length), and a logistic-regression head over that embedding gives a probability per kind
  (a collision's frame, a collision summary, line crossings, leaving the frame, whether named
  objects collide, which object leaves first). The head is
  trained on hand-written phrasings (``builder.planner.video_phrasings``) and committed as
  ``video_head/`` (an artifact folder: kinds x 384 weights in its config.json); ``python -m builder.planner.video`` rebuilds it. The
  card's output kind (frame, summary, count, bool) restricts the kinds (bool: leaving or colliding). Without the ML stack the
  old keyword rule (``keyword_video_kind``) decides.
* **Objects.** The objects a collision query (frame, summary, collides) names (colour, optional shape and size) are read
  with the domain vocabulary (synonyms, inflections, typos of words MiniLM does not know) and
  compiled into the program as constants ``A`` and ``B``; the program never reads the query. A
  query naming none gets the any-pair program (the pair whose contact turns both round).
* **Filters.** Crossing, leaving and first-to-leave requests name the objects that count and a direction
  ("how many blue shapes cross from left to right", "did the red star leave through the top"),
  read by ``builder.planner.video_read`` and compiled in the same way.
* **Abstention.** A second logistic regression over the same embedding (the scope head, trained
  against written out-of-scope requests, near misses and image requests) and the request's
  unread words decide whether any kind expresses the request; if not, ``plan`` returns no
  program and a reason naming the unread words, never the nearest kind's program.
* **Candidates.** k programs: the best kind's first, then the other kinds that fit the card's
  output by probability, then alternative readings (any pair; no direction; no filter), so
  selection by examples can correct a wrong first guess.
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
from builder.planner.prompt import Proposal, as_request
from builder.planner.video_negatives import OUT_OF_SCOPE
from builder.planner.video_phrasings import PHRASINGS
from builder.planner.video_read import (
    FILLER,
    GENERIC_NOUNS,
    off_topic_words,
    read_answer,
    read_direction,
    read_frame,
    training_vocabulary,
    unread_words,
    unsupported_asks,
)

HEAD_DIR = Path(__file__).parent / "video_head"  # an artifact folder (builder.core.artifacts)
lookup, split_words = vocabulary("shapes").lookup, vocabulary("shapes").split_words
HEAD_C = 10.0  # inverse L2 strength of the logistic regression (unit-length 384-d inputs)
SCOPE_NEGATIVES = 300  # near misses and generated image requests each, as the scope head's negatives
VIDEO_NEGATIVE_WEIGHT = 3.0  # sample weight of the hand-written video negatives in the scope head
SCOPE_QUANTILE_READ = 0.01  # the scope threshold for a request whose every word is read
SCOPE_QUANTILE = 0.03  # the scope threshold: this share of cross-validated video phrasings score below it
UNSURE_SCOPE = 0.9  # below this, two or more unread words refuse (as the composing parser does)
OFF_TOPIC_SCOPE = 0.98  # below this, a word of what no kind expresses (video_read.OFF_TOPIC) refuses
REBUILD_COMMAND = "python -m builder.planner.video"
_BY_OUTPUT = {}  # frame -> collision_frame, ...: the first kind of each output
for _k, _out in VIDEO_KINDS.items():
    _BY_OUTPUT.setdefault(_out, _k)



# ---- the kind head --------------------------------------------------------------------------
def phrasings_digest() -> str:
    """Hash of the training phrasings and the head's settings (the committed head records it)."""
    blob = json.dumps({"phrasings": PHRASINGS, "C": HEAD_C, "out_of_scope": OUT_OF_SCOPE,
                       "scope": [SCOPE_NEGATIVES, SCOPE_QUANTILE, SCOPE_QUANTILE_READ, VIDEO_NEGATIVE_WEIGHT]}, sort_keys=True)
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

    def __init__(self, kinds: list[str], coef, intercept, C: float = HEAD_C, info: dict | None = None,
                 scope: dict | None = None):
        self.kinds, self.C = list(kinds), float(C)
        self.coef, self.intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
        if self.coef.shape != (len(self.kinds), 384) or self.intercept.shape != (len(self.kinds),):
            raise ValueError(f"video kind head: coef {self.coef.shape} / intercept {self.intercept.shape} "
                             f"do not fit {len(self.kinds)} kinds x 384")
        # the scope head: P(a video request of some kind) = sigmoid(emb @ coef + intercept)
        self.scope = dict(scope) if scope else None
        if self.scope is not None and np.asarray(self.scope["coef"]).shape != (384,):
            raise ValueError("video scope head: coef must be 384 weights")
        self.info = info or {}

    def artifact_config(self) -> dict:
        """The whole head as JSON: kinds, ``C``, the coefficients and intercepts (rounded to 6 places)
        and the scope head (coefficients, intercept, refusal threshold)."""
        config = {"kinds": self.kinds, "C": self.C, "intercept": [round(float(v), 6) for v in self.intercept],
                  "coef": [[round(float(v), 6) for v in row] for row in self.coef]}
        if self.scope is not None:
            config["scope"] = {"coef": [round(float(v), 6) for v in self.scope["coef"]],
                               "intercept": round(float(self.scope["intercept"]), 6),
                               "threshold": round(float(self.scope["threshold"]), 6),
                               "threshold_read": round(float(self.scope.get("threshold_read", self.scope["threshold"])), 6)}
        return config

    def artifact_info(self) -> dict:
        """The record of how the head was trained (a copy)."""
        return dict(self.info)

    def _save_files(self, folder: Path) -> None:
        pass  # everything is in config.json

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> VideoKindHead:
        return cls(config["kinds"], config["coef"], config["intercept"], config.get("C", HEAD_C), info,
                   config.get("scope"))

    def probabilities(self, emb: np.ndarray) -> list[dict[str, float]]:
        """P(kind) per row of unit-length embeddings [n, 384]."""
        logits = emb @ self.coef.T + self.intercept
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return [{k: float(row[i]) for i, k in enumerate(self.kinds)} for row in p]

    def in_scope(self, emb: np.ndarray) -> np.ndarray:
        """P(the request is a video request of some kind) per row (1.0 without a scope head)."""
        if self.scope is None:
            return np.ones(len(emb))
        logit = emb @ np.asarray(self.scope["coef"]) + float(self.scope["intercept"])
        return 1 / (1 + np.exp(-logit))


def scope_negatives() -> list[str]:
    """Requests that are not video requests of any kind: the hand-written video requests no kind
    expresses (``video_negatives.OUT_OF_SCOPE``: speed, turning, bounces, looks, single frames,
    entering, editing, other domains), the composing parser's written out-of-scope sentences and
    near misses (training split) and generated image requests (questions about one picture)."""
    from builder.planner.compose import scope as S
    from builder.planner.compose.phrasings import generate

    return (list(OUT_OF_SCOPE) + S.out_of_scope("train") + S.near_misses(SCOPE_NEGATIVES, 0, "train")
            + [e["request"] for e in generate(SCOPE_NEGATIVES, 0)])


def train_head(out: str | Path | None = HEAD_DIR) -> VideoKindHead:
    """Fit the kind head on ``PHRASINGS`` and the scope head on them against ``scope_negatives``
    (scikit-learn, deterministic) and save both to ``out``. The scope head's refusal threshold is
    the ``SCOPE_QUANTILE`` quantile of the phrasings' 5-fold cross-validated scores: about that
    share of unseen video requests would be doubted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    kinds = list(VIDEO_KINDS)
    texts = [q for k in kinds for q in PHRASINGS[k]]
    y = np.array([kinds.index(k) for k in kinds for _ in PHRASINGS[k]])
    x = sentence_embeddings(texts)
    clf = LogisticRegression(C=HEAD_C, max_iter=5000).fit(x, y)
    neg = sentence_embeddings(scope_negatives())
    xs, ys = np.vstack([x, neg]), np.r_[np.ones(len(x)), np.zeros(len(neg))]
    # the video near misses weigh more than the image requests: they are what a video request
    # is confused with
    weight = np.r_[np.ones(len(x)), np.full(len(OUT_OF_SCOPE), VIDEO_NEGATIVE_WEIGHT),
                   np.ones(len(neg) - len(OUT_OF_SCOPE))]
    scope_clf = LogisticRegression(C=HEAD_C, max_iter=5000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    cv = cross_val_predict(scope_clf, xs, ys, cv=folds, method="predict_proba",
                           params={"sample_weight": weight})[:, 1]
    threshold = float(np.quantile(cv[: len(x)], SCOPE_QUANTILE))
    threshold_read = float(np.quantile(cv[: len(x)], SCOPE_QUANTILE_READ))
    scope_clf.fit(xs, ys, sample_weight=weight)
    scope = {"coef": scope_clf.coef_[0], "intercept": float(scope_clf.intercept_[0]), "threshold": threshold,
             "threshold_read": threshold_read}
    info = {"digest": phrasings_digest(), "phrasings": len(texts), "train_accuracy": round(float(clf.score(x, y)), 4),
            "scope_negatives": len(neg), "scope_cv_negatives_refused": round(float(np.mean(cv[len(x):] < threshold)), 4),
            "scope_cv_video_negatives_refused": round(float(np.mean(cv[len(x):len(x) + len(OUT_OF_SCOPE)] < threshold)), 4),
            "command": REBUILD_COMMAND}
    head = VideoKindHead(kinds, clf.coef_, clf.intercept_, HEAD_C, info, scope)
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
    return score_requests(queries)[0]


def score_requests(queries: list[str]) -> tuple[list[dict[str, float]], list[float | None]]:
    """(P(kind | query), P(a video request at all)) per query, from one embedding. Without MiniLM
    the keyword rule's one-hot and no scope (None)."""
    if not queries:
        return [], []
    try:
        emb = sentence_embeddings(queries)
    except RuntimeError:  # no torch / transformers / MiniLM wheel: the keyword rule
        return [_one_hot(keyword_video_kind(q)) for q in queries], [None] * len(queries)
    head = _load_head()
    return head.probabilities(emb), [float(v) for v in head.in_scope(emb)]


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
            if w.lower() in FILLER and current:
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


def filter_objects(query: str) -> list[NamedObject]:
    """The objects a crossing or leaving request counts: its named objects, plus a size over a
    generic noun ("the large objects", "small shapes"), which names every object of that size."""
    objects = named_objects(query)
    known = _known_words()
    words = [w.lower() for w in split_words(query)]
    for i, w in enumerate(words[:-1]):
        v = _value(w, known)
        nxt = words[i + 1] if words[i + 1] not in FILLER or i + 2 >= len(words) else words[i + 2]
        if v and v[0] == "size" and nxt in GENERIC_NOUNS and NamedObject(size=v[1]) not in objects:
            prev = _value(words[i - 1], known) if i else None
            if prev is None or prev[0] == "size":  # "large red objects" is the red one, read above
                objects.append(NamedObject(size=v[1]))
    return objects


@dataclass(frozen=True)
class Reading:
    """One way to read a request: a kind and what it names (collision kinds: ``a`` and ``b``;
    crossings and leaving: the ``objects`` that count and a ``direction``)."""

    kind: str
    a: NamedObject | None = None
    b: NamedObject | None = None
    objects: tuple[NamedObject, ...] = ()
    direction: str | None = None
    answer: str | None = None  # which-object kinds: "name" or "color"; time in view: "frames" or "seconds"
    frame: str | int | None = None  # box_at_frame: "first", "last", "collision" or a frame number


def readings(query: str, output: str | None = None, probs: dict[str, float] | None = None) -> list[Reading]:
    """Readings best first: each fitting kind's main reading by probability, then alternatives
    (collisions: the first object with any other, any pair; crossings and leaving: without the
    direction, then without any filter)."""
    objs = named_objects(query)
    a = objs[0] if objs else None
    b = objs[1] if len(objs) > 1 else None
    words = split_words(query)
    main, alternatives = [], []
    for kind, _ in rank_kinds(query, output, probs):
        if kind not in COLLISION_KINDS:
            objects = tuple(filter_objects(query))
            direction, _ = read_direction(words, kind)
            answer = read_answer(words, kind)
            frame = read_frame(words)[0] if kind == "box_at_frame" else None
            main.append(Reading(kind, objects=objects, direction=direction, answer=answer, frame=frame))
            if direction is not None:
                alternatives.append(Reading(kind, objects=objects, answer=answer, frame=frame))
            if objects:
                alternatives.append(Reading(kind, answer=answer, frame=frame))
            continue
        main.append(Reading(kind, a, b))
        if b is not None:
            alternatives.append(Reading(kind, a, None))  # the second name may not be an object
        if a is not None:
            alternatives.append(Reading(kind))
    out = []
    for r in main + alternatives:
        if r not in out:
            out.append(r)
    return out


def compile_reading(reading: Reading) -> str:
    """The program of a reading: the world's program of its kind with what it names compiled in."""
    if reading.kind not in COLLISION_KINDS:
        return reference_program(reading.kind, objects=[o.as_tuple() for o in reading.objects],
                                 direction=reading.direction, answer=reading.answer, frame=reading.frame)
    a, b = reading.a, reading.b
    return reference_program(reading.kind, a.as_tuple() if a else None, b.as_tuple() if b else None)


def refusal(query: str, scope: float | None, output: str | None = None, kind: str | None = None) -> str | None:
    """Why the planner cannot express ``query`` as a video request, or None when it can: the scope
    head says it is no video request (below its calibrated threshold: the 3% quantile of its
    cross-validated scores on the phrasings, or the 1% quantile when every word of the request
    is read), or doubts it (below
    ``UNSURE_SCOPE``) while two or more content words are unread, or it uses a word of what no
    kind expresses (``video_read.OFF_TOPIC``: speed, spinning, bouncing off walls...) and the
    scope head is not sure of it (``OFF_TOPIC_SCOPE``), or it asks what no kind answers in video
    words (``video_read.unsupported_asks``: a later event, when something other than a collision
    happens, a count of what the clip shows). The reason names those words (or, when
    none, the content words)."""
    words = split_words(query)
    if not any(w.isalnum() for w in words):
        return "cannot read an empty request"
    if scope is None:  # no MiniLM: the keyword rule decides, nothing is refused
        return None
    known = _known_words()
    _, direction_words = read_direction(words, kind or "")
    direction_words |= read_frame(words)[1] if kind == "box_at_frame" else set()
    unread = unread_words(words, lambda w: _value(w, known) is not None, direction_words, _vocabulary())
    head_scope = _load_head().scope
    off_topic = off_topic_words(words, lambda w: _value(w, known) is not None)
    # every word read: the scope head alone refuses only below its lower threshold
    threshold = head_scope.get("threshold_read", head_scope["threshold"]) if not unread else head_scope["threshold"]
    asks = unsupported_asks(words)  # a pattern, not a single word: refused however sure the scope head is
    if asks:
        unread = asks
    elif off_topic and scope < OFF_TOPIC_SCOPE:
        unread = off_topic + [w for w in unread if w not in off_topic]
    elif scope >= threshold and (scope >= UNSURE_SCOPE or len(unread) < 2):
        return None
    named = unread or unread_words(words, lambda w: _value(w, known) is not None, direction_words, frozenset())
    kinds = ", ".join(k.replace("_", " ") for k in fitting_kinds(output))
    return (f"cannot express {', '.join(repr(w) for w in named[:6])} as a video request: the video planner "
            f"reads {kinds} (with named objects and directions)")


_VOCAB: dict[str, frozenset[str]] = {}


def _vocabulary() -> frozenset[str]:
    if "v" not in _VOCAB:
        _VOCAB["v"] = training_vocabulary()
    return _VOCAB["v"]


class VideoPlanner:
    """Proposes up to k programs per request: kinds ranked by the MiniLM head, what the request
    names compiled in; a request no kind can express is refused with the words it could not read."""

    def plan(self, request, k: int = 4, temperature: float = 1.0, top_p: float = 1.0) -> Proposal:
        """Up to ``k`` distinct programs for ``request``, best first, or none and the reason."""
        return self.plan_many([request], k)[0]

    def plan_many(self, requests, k: int = 1) -> list[Proposal]:
        """``plan`` for several requests (one embedding pass)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        reqs = [as_request(r) for r in requests]
        probs, scopes = score_requests([r.query for r in reqs])
        out = []
        for req, p, scope in zip(reqs, probs, scopes, strict=True):
            if not fitting_kinds(req.output):
                out.append(Proposal([], f"the video planner has no kind with output {req.output!r}"))
                continue
            best = rank_kinds(req.query, req.output, p)[0][0]
            reason = refusal(req.query, scope, req.output, best)
            if reason is not None:
                out.append(Proposal([], reason))
                continue
            programs: list[str] = []
            for reading in readings(req.query, req.output, p):
                src = compile_reading(reading)
                if src not in programs:
                    programs.append(src)
            out.append(Proposal(programs[:k]))
        return out

    def propose(self, requests, k: int = 1, temperature: float = 1.0, top_p: float = 1.0) -> list[list[str]]:
        """Up to k distinct candidate programs per request, best first (none when refused)."""
        return [p.programs for p in self.plan_many(requests, k)]


# ---- the old keyword rule (fallback without MiniLM, and the bench's baseline) ----------------
_WORDS = {
    "collision_summary": ("summar", "describe", "report", "what happened", "before and after"),
    "collision_frame": ("collide", "collision", "crash", "hit", "bump", "touch"),
    "crossing_count": ("cross", "line", "pass"),
    "leaves": ("leave", "exit", "out of", "disappear", "go off"),
    "collides": ("collide", "collision", "crash", "hit", "bump", "touch"),
    "first_to_leave": ("first to leave", "first to exit", "leaves first", "exits first", "which object leave"),
    "collision_count": ("how many collisions", "how many times", "count the collisions", "number of collisions"),
    "collided_objects": ("which objects collide", "what did", "involved in the collision", "which objects crash"),
    "first_to_collide": ("first to collide", "collides first", "first to crash", "crashes first", "first collision"),
    "time_in_view": ("how long", "visible", "in view", "on screen", "seconds", "how many frames"),
    "box_at_frame": ("box", "where is", "locate", "position"),
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
