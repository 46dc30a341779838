"""SelTDA: self-taught data augmentation for VQA (Khan et al., CVPR 2023), offline-sized.

The recipe (SelTDA, CVPR 2023): train a *teacher* that writes ``"Question: q Answer: a"`` from an
image alone on the small labelled set; nucleus-sample (top_p 0.9) 1-2 pseudo-labels per
unlabelled image; drop structurally bad outputs; train the student on real + synthetic data
at a chosen synthetic:real ratio, with image augmentation that never flips left/right
(spatial questions would change their answers).

Teachers (all only see pixels):

* ``DetectionTeacher`` (the default for the shapes world): writes questions about what the
  shapes detector (classical computer vision on the image) finds, after illumination
  normalisation, and answers them from those detections. The question-type mix is learnt from
  the labelled set; questions are phrased with the world's training templates. Answerability:
  a question is kept only if its references are unique and its relations clear in a second,
  independent detector view of the image; confidence: the two views must agree on the answer
  and every detection must be confident (``min_score``). Unanswerable and low-confidence
  labels are counted and dropped by ``filter_pseudo_labels``.

* ``ShapesTeacher`` for the shapes world: an image-conditioned GRU language model over a word
  vocabulary writes the question; the answer token is produced by a VQA network (a copy of
  the shapes VQA model, fine-tuned on the labelled set) conditioned on the image and the
  generated question. Together they factorise p(question, answer | image) exactly as an
  autoregressive decoder does, p(q | image) * p(a | q, image); both parts are nucleus-sampled.
* ``BlipTeacher`` for Hugging Face BLIP: ``BlipForConditionalGeneration`` trained to caption
  an image with the ``question: q answer: a`` string, sampled with ``generate(do_sample=True,
  top_p=...)``.

Pseudo-labelling runs in-process with a progress bar (``pseudo_label``) or over a large folder
with Ray Data (``pseudo_label_ray``, one teacher per actor, loaded from a saved folder).
``filter_pseudo_labels`` drops unparsable texts, answers outside the student's vocabulary,
duplicates and contradictory pairs (one image, one question, two answers) and counts each.
``world_answer`` reads shapes-world ground truth to *measure* pseudo-label precision; no
teacher or student ever calls it.
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from builder.core.errors import UserError
from builder.core.images import load_image
from builder.core.seeding import derive_seed, numpy_rng, torch_generator
from builder.core.training import TrainConfig, train_loop
from builder.domains.shapes.vocab import parse_phrase
from builder.domains.shapes.world.language import relation_holds
from builder.domains.shapes.world.scene import SIZES, Scene, SceneObject
from builder.domains.shapes.world.tasks import (
    ANSWER_VOCAB,
    QTYPES,
    make_example,
    question_patterns,
    spatial_margin,
)
from builder.methods.finetune import QA, as_qa, load_qa_dataset, save_qa_dataset
from builder.run.ray import ray_session

UNANSWERABLE = "unanswerable"  # the answer a teacher writes when it cannot answer its question
TEACHER_QTYPES = tuple(q for q in QTYPES["vqa"] if q != "read")

QA_PATTERN = re.compile(r"^\s*question\s*:\s*(?P<q>.+?)\s*answer\s*:\s*(?P<a>.+?)\s*$", re.IGNORECASE | re.DOTALL)


def format_qa(question: str, answer: str) -> str:
    """The teacher's target text."""
    return f"Question: {question.strip()} Answer: {answer.strip()}"


def parse_qa(text: str) -> tuple[str, str] | None:
    """(question, answer) from ``"Question: q Answer: a"``, or None if it does not parse.

    A parse needs a question of at least two words and a non-empty answer; both are trimmed,
    the answer lower-cased and stripped of a final period.
    """
    if not isinstance(text, str):
        return None
    m = QA_PATTERN.match(text)
    if not m:
        return None
    q = " ".join(m.group("q").split())
    a = " ".join(m.group("a").split()).lower().rstrip(".").strip()
    if len(q.split()) < 2 or not a or "question:" in a or "answer:" in q.lower():
        return None
    return q, a


def _norm_question(q: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", q.lower()))


@dataclass
class PseudoLabel:
    """One generated label for an unlabelled image (``image`` indexes the input list)."""

    image: int
    text: str
    question: str = ""
    answer: str = ""
    confidence: float = 1.0


@dataclass
class FilterReport:
    """Counts of what structural filtering kept and dropped (and why)."""

    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"unparsable": 0, "unanswerable": 0,
                                                             "low_confidence": 0, "answer_not_in_vocabulary": 0,
                                                             "duplicate": 0, "contradictory": 0})

    def to_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "dropped": dict(self.dropped)}


def filter_pseudo_labels(labels: Sequence[PseudoLabel], answer_vocab: Sequence[str] | None,
                         min_confidence: float = 0.0) -> tuple[list[PseudoLabel], FilterReport]:
    """Drop unparsable texts, questions the teacher marked unanswerable, labels whose teacher
    confidence is below ``min_confidence``, answers outside ``answer_vocab`` (None: any answer),
    exact duplicates, and contradictory pairs — every label of an image whose (normalised)
    question got two different answers is dropped, since at most one can be right."""
    rep = FilterReport(total=len(labels))
    vocab = {a.lower() for a in answer_vocab} if answer_vocab is not None else None
    parsed: list[PseudoLabel] = []
    for lab in labels:
        qa = parse_qa(lab.text)
        if qa is None:
            rep.dropped["unparsable"] += 1
            continue
        if qa[1] == UNANSWERABLE:
            rep.dropped["unanswerable"] += 1
            continue
        if lab.confidence < min_confidence:
            rep.dropped["low_confidence"] += 1
            continue
        if vocab is not None and qa[1] not in vocab:
            rep.dropped["answer_not_in_vocabulary"] += 1
            continue
        parsed.append(PseudoLabel(lab.image, lab.text, qa[0], qa[1], lab.confidence))
    answers: dict[tuple[int, str], set[str]] = defaultdict(set)
    for lab in parsed:
        answers[(lab.image, _norm_question(lab.question))].add(lab.answer)
    seen: set[tuple[int, str, str]] = set()
    kept = []
    for lab in parsed:
        key = (lab.image, _norm_question(lab.question))
        if len(answers[key]) > 1:
            rep.dropped["contradictory"] += 1
        elif key + (lab.answer,) in seen:
            rep.dropped["duplicate"] += 1
        else:
            seen.add(key + (lab.answer,))
            kept.append(lab)
    rep.kept = len(kept)
    return kept, rep


# ----------------------------------------------------------------------------------------------
# Nucleus sampling
# ----------------------------------------------------------------------------------------------


def nucleus_sample(logits, top_p: float = 0.9, temperature: float = 1.0, generator=None):
    """Sample one index per row from the smallest set of tokens whose probability reaches top_p."""
    import torch

    probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < top_p  # a token is kept if the mass before it is below top_p
    keep[..., 0] = True
    sorted_p = sorted_p * keep
    pick = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, pick).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# The shapes-world teacher
# ----------------------------------------------------------------------------------------------

BOS, EOS, PAD_T = "<bos>", "<eos>", "<pad>"


def qtokens(text: str) -> list[str]:
    """Question tokens: lower-case words plus '?' and '.' (kept so questions read naturally)."""
    return re.findall(r"[a-z0-9]+|[?.]", text.lower())


def detokenize(tokens: list[str]) -> str:
    """Join tokens; punctuation attaches to the previous word; the first letter is capitalised."""
    text = ""
    for t in tokens:
        text += t if t in "?." else (" " + t if text else t)
    return text[:1].upper() + text[1:]


def _shapes_teacher_module():
    import torch
    from torch import nn

    class QuestionGenerator(nn.Module):
        """Small CNN (with coordinate channels) whose pooled features start a GRU over words."""

        def __init__(self, vocab: list[str], image_size: int = 64, ch: int = 48, emb: int = 64, hidden: int = 192):
            super().__init__()
            self.config = {"vocab": list(vocab), "image_size": image_size, "ch": ch, "emb": emb, "hidden": hidden}
            self.index = {w: i for i, w in enumerate(vocab)}
            self.cnn = nn.Sequential(
                nn.Conv2d(5, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU(),
                nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU())
            self.init_h = nn.Linear(2 * ch, hidden)
            self.embed = nn.Embedding(len(vocab), emb, padding_idx=self.index[PAD_T])
            self.gru = nn.GRU(emb + 2 * ch, hidden, batch_first=True)
            self.out = nn.Linear(hidden, len(vocab))

        def image_features(self, x):
            b, _, h, w = x.shape  # coordinate channels: where things are matters to questions
            ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
            f = self.cnn(torch.cat([x, xs, ys], 1))
            return torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)

        def forward(self, x, tokens):
            """Next-token logits for teacher forcing (tokens start with <bos>)."""
            feat = self.image_features(x)
            h0 = torch.tanh(self.init_h(feat)).unsqueeze(0)
            inp = torch.cat([self.embed(tokens), feat.unsqueeze(1).expand(-1, tokens.shape[1], -1)], -1)
            out, _ = self.gru(inp, h0)
            return self.out(out)

    return QuestionGenerator


class ShapesTeacher:
    """Question generator + answerer (see the module docstring); both see pixels only."""

    def __init__(self, qgen, answerer):
        self.qgen = qgen
        self.answerer = answerer

    @classmethod
    def create(cls, answerer, questions: Sequence[str], **qgen_kw) -> ShapesTeacher:
        """A new teacher: a fresh question generator over the words of ``questions`` and a copy
        of the ``answerer`` (a ``ShapesVQANet``, typically the default or a fine-tuned model)."""
        words = sorted({t for q in questions for t in qtokens(q)})
        vocab = [PAD_T, BOS, EOS] + words
        qg = _shapes_teacher_module()(vocab, image_size=answerer.config["image_size"], **qgen_kw)
        return cls(qg, copy.deepcopy(answerer))

    @property
    def answers(self) -> list[str]:
        return list(self.answerer.answers)

    def _images(self, images) -> object:
        from builder.domains.shapes.nets import vqa as vqa_net

        size = self.qgen.config["image_size"]
        return vqa_net.to_tensor(np.stack([vqa_net.resize_square(np.asarray(im, np.uint8), size) for im in images]))

    def train(self, items: Sequence, qgen_steps: int = 400, answer_steps: int = 0, batch_size: int = 32,
              lr: float = 3e-3, answer_lr: float = 5e-4, seed: int = 0, progress: bool = True) -> dict:
        """Train the question generator on the labelled (image, question) pairs with teacher
        forcing; with ``answer_steps`` also fine-tune the answerer on the triples
        (``builder.domains.shapes.training.vqa.train``). Returns the loss history."""
        import torch
        from torch.nn import functional as F

        items = [as_qa(x) for x in items]
        if not items:
            raise ValueError("the teacher needs labelled items")
        idx = self.qgen.index
        seqs = [[idx[BOS]] + [idx[t] for t in qtokens(q.question) if t in idx] + [idx[EOS]] for q in items]
        width = max(map(len, seqs))
        tok = torch.full((len(seqs), width), idx[PAD_T], dtype=torch.long)
        for i, s in enumerate(seqs):
            tok[i, :len(s)] = torch.tensor(s)
        x_all = self._images([q.image for q in items])
        gen = torch_generator(seed, "qgen batches")

        def batches(_epoch, _rng):
            while True:
                b = torch.randint(len(items), (batch_size,), generator=gen)
                yield x_all[b], tok[b]

        def loss(model, batch):  # teacher forcing: predict each next question token
            x, t = batch
            logits = model(x, t[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t[:, 1:].reshape(-1),
                                   ignore_index=idx[PAD_T])

        hist = {"qgen_loss": []}
        if qgen_steps > 0:  # linear decay: stable late steps on a tiny set
            cfg = TrainConfig(steps=qgen_steps, lr=lr, weight_decay=1e-4, schedule="linear", seed=seed)
            out = train_loop(self.qgen, batches, loss, cfg, desc="teacher: questions" if progress else None)
            hist["qgen_loss"] = [round(h["loss"], 4) for h in out.history["train"]]
        self.qgen.eval()
        if answer_steps:
            from builder.domains.shapes.training import vqa as vqa_train

            hist["answerer"] = vqa_train.train(self.answerer, [(q.image, q.question, q.answer) for q in items],
                                        steps=answer_steps, lr=answer_lr, warmup=min(50, answer_steps // 5),
                                        seed=derive_seed(seed, "answerer"), log_every=max(1, answer_steps),
                                        log=lambda *_: None)
        self.answerer.eval()
        return hist

    def generate(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9, temperature: float = 1.0,
                 max_len: int = 20, seed: int = 0) -> list[list[str]]:
        """``n`` nucleus-sampled ``"Question: q Answer: a"`` texts per image."""
        import torch

        if not len(images):
            return []
        gen = torch.Generator().manual_seed(seed)
        idx, vocab = self.qgen.index, self.qgen.config["vocab"]
        x = self._images(images).repeat_interleave(n, 0)
        self.qgen.eval()
        with torch.no_grad():
            feat = self.qgen.image_features(x)
            h = torch.tanh(self.qgen.init_h(feat)).unsqueeze(0)
            cur = torch.full((len(x),), idx[BOS], dtype=torch.long)
            out = torch.full((len(x), max_len), idx[PAD_T], dtype=torch.long)
            done = torch.zeros(len(x), dtype=torch.bool)
            for t in range(max_len):
                inp = torch.cat([self.qgen.embed(cur), feat], -1).unsqueeze(1)
                o, h = self.qgen.gru(inp, h)
                logits = self.qgen.out(o[:, 0])
                logits[:, idx[PAD_T]] = -1e9
                logits[:, idx[BOS]] = -1e9
                cur = nucleus_sample(logits, top_p, temperature, gen)
                cur = torch.where(done, torch.full_like(cur, idx[PAD_T]), cur)
                out[:, t] = cur
                done |= cur == idx[EOS]
                if bool(done.all()):
                    break
            questions = []
            for row in out.tolist():
                words = []
                for k in row:
                    if k in (idx[EOS], idx[PAD_T]):
                        break
                    words.append(vocab[k])
                questions.append(detokenize(words))
            # The answer: nucleus-sampled from the answerer's distribution given image + question.
            size = self.answerer.config["image_size"]
            xa = x if size == self.qgen.config["image_size"] else self._images(images).repeat_interleave(n, 0)
            tokens, lengths = self.answerer.encode_questions([q or "?" for q in questions])
            logits = self.answerer(xa, tokens, lengths)
            ans = nucleus_sample(logits, top_p, temperature, gen).tolist()
        texts = [format_qa(q, self.answers[a]) if q else f"Question: Answer: {self.answers[a]}"
                 for q, a in zip(questions, ans, strict=True)]
        return [texts[i * n:(i + 1) * n] for i in range(len(images))]

    def save(self, path: str | Path) -> Path:
        """Teacher folder: ``qgen.safetensors`` + ``qgen.json`` and the answerer (``nets.vqa`` format)."""
        from safetensors.torch import save_file

        from builder.domains.shapes.nets import vqa as vqa_net

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.qgen.state_dict().items()},
                  str(path / "qgen.safetensors"))
        (path / "qgen.json").write_text(json.dumps(self.qgen.config))
        vqa_net.save_model(self.answerer, path / "answerer")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ShapesTeacher:
        """Load a folder written by ``save``."""
        from safetensors.torch import load_file

        from builder.domains.shapes.nets import vqa as vqa_net

        path = Path(path)
        cfg = json.loads((path / "qgen.json").read_text())
        qg = _shapes_teacher_module()(**cfg)
        qg.load_state_dict(load_file(str(path / "qgen.safetensors")))
        return cls(qg.eval(), vqa_net.load_model(path / "answerer"))


# ----------------------------------------------------------------------------------------------
# The detection-conditioned teacher (shapes world default)
# ----------------------------------------------------------------------------------------------


def illumination_normalise(image: np.ndarray, target: float = 215.0, kernel: int = 31) -> np.ndarray:
    """Flat-field correction: divide by a smooth estimate of the light (a wide median of the
    brightest channel, which follows the background, not the objects) so dim or unevenly lit
    images look like daylight ones. Hues are unchanged; uint8 in, uint8 out."""
    img = np.asarray(image, np.uint8)
    bright = cv2.medianBlur(np.ascontiguousarray(img.max(axis=2)), kernel).astype(np.float32)
    bright = cv2.GaussianBlur(bright, (0, 0), 8)
    out = img.astype(np.float32) * (target / np.maximum(bright, 1.0))[:, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _detected_scene(objects, width: int, height: int) -> Scene:
    """The detections as a scene graph (what the teacher saw, not ground truth)."""
    return Scene(width, height, tuple(SceneObject(o.shape, o.color, o.size, tuple(o.box)) for o in objects))


class DetectionTeacher:
    """Questions and answers from what the shapes detector sees (module docstring).

    ``train`` learns the question-type mix of the labelled set; ``generate_scored`` writes
    ``n`` labels per image with a confidence each.
    """

    kind = "detection"

    def __init__(self, qtype_prior: dict[str, float] | None = None, min_score: float = 0.7):
        from builder.tools.backends.shapes import ShapesDetector

        self.qtype_prior = dict(qtype_prior or {q: 1.0 for q in TEACHER_QTYPES})
        self.min_score = float(min_score)
        # two views: different light estimates and chroma thresholds; they must agree
        self.views = ((ShapesDetector(), 31), (ShapesDetector(chroma_threshold=45), 45))
        self.answers = list(ANSWER_VOCAB) + list(SIZES)

    def train(self, items: Sequence, seed: int = 0, progress: bool = False, **_) -> dict:
        """Estimate the question-type mix of the labelled items (add-half smoothing)."""
        counts = Counter()
        # "What color is the object left of the red star?" also fits the attribute pattern
        # (object name "object left of the red star"): relational patterns are tried first
        patterns = sorted(question_patterns(), key=lambda p: p[0] != "relate_attr")
        for q in (as_qa(x) for x in items):
            text = " ".join(q.question.lower().split()).rstrip("?.").strip()
            qtype = next((t for t, rx in patterns if rx.match(text)), None)
            if qtype in TEACHER_QTYPES:
                counts[qtype] += 1
        self.qtype_prior = {q: counts[q] + 0.5 for q in TEACHER_QTYPES}
        total = sum(self.qtype_prior.values())
        self.qtype_prior = {q: round(v / total, 4) for q, v in self.qtype_prior.items()}
        return {"qtype_prior": self.qtype_prior, "parsed": sum(counts.values())}

    def views_of(self, image: np.ndarray) -> tuple[list[Scene], float]:
        """The image's scene graph under each detector view, and the lowest detection score of
        the first view (0 when it finds nothing)."""
        h, w = image.shape[:2]
        found = [det.objects(illumination_normalise(image, kernel=k)) for det, k in self.views]
        return [_detected_scene(objs, w, h) for objs in found], min((o.score for o in found[0]), default=0.0)

    def generate_scored(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9,
                        temperature: float = 1.0, seed: int = 0, **_) -> list[list[tuple[str, float]]]:
        """``n`` (text, confidence) labels per image; unanswerable ones say so (confidence 0)."""
        qtypes = list(self.qtype_prior)
        p = np.array([self.qtype_prior[q] for q in qtypes], np.float64) ** (1 / max(temperature, 1e-6))
        p /= p.sum()
        order = np.argsort(-p)
        keep = np.zeros(len(p), bool)
        keep[order[(np.cumsum(p[order]) - p[order]) < top_p]] = True  # nucleus over question types
        p = np.where(keep, p, 0)
        p /= p.sum()
        out = []
        for image in images:
            image = np.asarray(image, np.uint8)
            # seeded by the pixels, not the position in a batch: any batching gives the same labels
            rng = np.random.default_rng([seed % 2**63, zlib.crc32(image.tobytes()), 17])
            (main, *others), score = self.views_of(image)
            labels = []
            for _ in range(n):
                ex = None
                for _try in range(4):
                    qtype = qtypes[int(rng.choice(len(qtypes), p=p))]
                    ex = make_example(main, rng, "vqa", qtype, 0.0) if main.objects else None
                    if ex is not None:
                        break
                if ex is None:
                    continue
                second = [world_answer(v, ex["query"]) for v in others]
                if any(a is None for a in second):
                    labels.append((format_qa(ex["query"], UNANSWERABLE), 0.0))
                    continue
                agree = all(a == ex["expected"] for a in second)
                labels.append((format_qa(ex["query"], ex["expected"]), round(score if agree else 0.0, 4)))
            out.append(labels)
        return out

    def generate(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9, temperature: float = 1.0,
                 max_len: int | None = None, seed: int = 0) -> list[list[str]]:
        """Texts only (see ``generate_scored``)."""
        return [[t for t, _ in row] for row in self.generate_scored(images, n, top_p, temperature, seed)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "teacher.json").write_text(json.dumps({"kind": self.kind, "qtype_prior": self.qtype_prior,
                                                       "min_score": self.min_score}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> DetectionTeacher:
        cfg = json.loads((Path(path) / "teacher.json").read_text())
        return cls(cfg["qtype_prior"], cfg["min_score"])


# ----------------------------------------------------------------------------------------------
# The Hugging Face (BLIP) teacher
# ----------------------------------------------------------------------------------------------


class BlipTeacher:
    """``BlipForConditionalGeneration`` trained to write ``question: q answer: a`` for an image."""

    def __init__(self, model: str | Path, max_new_tokens: int = 40):
        from transformers import AutoProcessor, BlipForConditionalGeneration

        self.source = str(model)
        self.processor = AutoProcessor.from_pretrained(self.source)
        self.model = BlipForConditionalGeneration.from_pretrained(self.source).eval()
        self.max_new_tokens = max_new_tokens
        self.answers = None  # any answer (the student's vocabulary filters)

    def train(self, items: Sequence, steps: int = 50, batch_size: int = 8, lr: float = 5e-5, seed: int = 0,
              progress: bool = True) -> dict:
        """Captioning loss on the formatted QA text (decoding starts at BLIP's bos token)."""
        from PIL import Image

        items = [as_qa(x) for x in items]
        tok = self.processor.tokenizer

        def batches(_epoch, rng):
            while True:
                chunk = [items[i] for i in rng.integers(len(items), size=batch_size)]
                batch = self.processor(images=[Image.fromarray(q.image) for q in chunk],
                                       text=[format_qa(q.question, q.answer).lower() for q in chunk],
                                       padding=True, truncation=True, max_length=self.max_new_tokens + 2,
                                       return_tensors="pt")
                ids = batch.input_ids.clone()
                ids[:, 0] = tok.bos_token_id
                yield batch.pixel_values, ids, batch.attention_mask

        def loss(model, batch):
            pixels, ids, mask = batch
            return model(pixel_values=pixels, input_ids=ids, attention_mask=mask,
                         labels=ids.masked_fill(mask == 0, -100)).loss

        # constant rate, AdamW's default decay, no clipping: the recipe BLIP captioning fine-tunes use
        cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.01, schedule="constant", grad_clip=0.0, seed=seed)
        out = train_loop(self.model, batches, loss, cfg, desc="teacher (BLIP)" if progress else None)
        return {"loss": [round(h["loss"], 4) for h in out.history["train"]]}

    def generate(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9, temperature: float = 1.0,
                 max_len: int | None = None, seed: int = 0) -> list[list[str]]:
        """``n`` nucleus-sampled texts per image."""
        import torch
        from PIL import Image

        torch.manual_seed(seed)
        batch = self.processor(images=[Image.fromarray(np.asarray(im, np.uint8)) for im in images],
                               return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(pixel_values=batch.pixel_values, do_sample=True, top_p=top_p,
                                      temperature=temperature, num_return_sequences=n,
                                      max_new_tokens=max_len or self.max_new_tokens)
        texts = [" ".join(t.split()) for t in self.processor.batch_decode(out, skip_special_tokens=True)]
        return [texts[i * n:(i + 1) * n] for i in range(len(images))]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BlipTeacher:
        return cls(path)


def load_teacher(path: str | Path):
    """A saved teacher folder of either kind."""
    path = Path(path)
    if (path / "teacher.json").is_file():
        return DetectionTeacher.load(path)
    if (path / "qgen.json").is_file():
        return ShapesTeacher.load(path)
    return BlipTeacher.load(path)


# ----------------------------------------------------------------------------------------------
# Pseudo-labelling
# ----------------------------------------------------------------------------------------------


def _read_image(item) -> np.ndarray:
    return item if isinstance(item, np.ndarray) else load_image(item)


def pseudo_label(teacher, images: Sequence, n_per_image: int = 2, top_p: float = 0.9, batch_size: int = 128,
                 seed: int = 0, progress: bool = True) -> list[PseudoLabel]:
    """Raw (unfiltered) teacher outputs for unlabelled images (arrays or paths)."""
    if not 1 <= n_per_image <= 8:
        raise ValueError(f"n_per_image must be in 1..8, got {n_per_image}")
    out: list[PseudoLabel] = []
    for s in tqdm(range(0, len(images), batch_size), desc="pseudo-labels", disable=not progress,
                  total=-(-len(images) // batch_size)):
        chunk = [_read_image(x) for x in images[s:s + batch_size]]
        scored = _generate_scored(teacher, chunk, n_per_image, top_p, derive_seed(seed, "batch", s))
        out += [PseudoLabel(s + i, t, confidence=c) for i, ts in enumerate(scored) for t, c in ts]
    return out


def _generate_scored(teacher, images, n: int, top_p: float, seed: int) -> list[list[tuple[str, float]]]:
    """(text, confidence) per label; teachers without confidences give 1.0."""
    if hasattr(teacher, "generate_scored"):
        return teacher.generate_scored(images, n=n, top_p=top_p, seed=seed)
    return [[(t, 1.0) for t in row] for row in teacher.generate(images, n=n, top_p=top_p, seed=seed)]


class _RayTeacher:
    """One Ray actor: loads the teacher folder once, labels batches of image paths."""

    def __init__(self, teacher_dir: str, n: int, top_p: float, seed: int):
        import torch

        torch.set_num_threads(1)
        self.teacher, self.n, self.top_p, self.seed = load_teacher(teacher_dir), n, top_p, seed

    def __call__(self, batch: dict) -> dict:
        images = [_read_image(str(p)) for p in batch["path"]]
        first = int(batch["order"][0])
        scored = _generate_scored(self.teacher, images, self.n, self.top_p, derive_seed(self.seed, "batch", first))
        return {"order": batch["order"], "texts": np.array([json.dumps(t) for t in scored], dtype=object)}


def pseudo_label_ray(teacher_dir: str | Path, image_paths: Sequence[str | Path], n_per_image: int = 2,
                     top_p: float = 0.9, workers: int = 2, batch_size: int = 64, seed: int = 0,
                     progress: bool = True) -> list[PseudoLabel]:
    """``pseudo_label`` over a large folder with a Ray Data actor pool (each actor loads the
    saved teacher once). Returns labels in input order."""
    ray = ray_session(workers, progress)
    ds = ray.data.from_items([{"order": i, "path": str(p)} for i, p in enumerate(image_paths)])
    ds = ds.map_batches(_RayTeacher, fn_constructor_args=(str(teacher_dir), n_per_image, top_p, seed),
                        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers))
    rows = sorted(ds.take_all(), key=lambda r: int(r["order"]))
    return [PseudoLabel(int(r["order"]), t, confidence=float(c)) for r in rows for t, c in json.loads(r["texts"])]


# ----------------------------------------------------------------------------------------------
# Student training set and augmentation
# ----------------------------------------------------------------------------------------------


def augment_image(image: np.ndarray, rng: np.random.Generator, max_shift: int = 2, noise: float = 6.0) -> np.ndarray:
    """Photometric jitter and a small translation; never a flip (left/right answers would flip),
    never a hue change (colour names are answers)."""
    img = image.astype(np.float32)
    img = (img - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-15, 15)  # contrast, brightness
    if noise:
        img = img + rng.normal(0, rng.uniform(0, noise), img.shape)
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    img = np.roll(img, (dy, dx), axis=(0, 1))  # small shifts keep every object (margins are >= 1 px)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_augment(seed: int = 0):
    """An ``augment`` callable for ``builder.methods.finetune.finetune`` (its RNG derives from torch's
    per-epoch seed, so a resumed run replays the same augmentations)."""
    import torch

    def aug(image: np.ndarray) -> np.ndarray:
        return augment_image(image, numpy_rng(seed, int(torch.randint(2**31, (1,)))))

    return aug


def build_student_set(real: Sequence, labels: Sequence[PseudoLabel], images: Sequence, ratio: float,
                      seed: int = 0) -> list[QA]:
    """Real + synthetic items at ``ratio`` synthetic:real (e.g. 1 for 1:1, 2 for 2:1).

    Synthetic items are drawn without replacement from the filtered ``labels`` (images index
    into ``images``); if there are too few, all are used and ``meta["short"]`` says so.
    """
    if ratio < 0:
        raise ValueError("ratio must be >= 0")
    real = [as_qa(x) for x in real]
    for q in real:
        q.meta.setdefault("source", "real")
    want = round(ratio * len(real))
    order = numpy_rng(seed, 31).permutation(len(labels))[:want]
    synth = []
    for i in order:
        lab = labels[int(i)]
        synth.append(QA(_read_image(images[lab.image]), lab.question, lab.answer,
                        {"source": "synthetic", "image_index": lab.image, "short": want > len(labels)}))
    return real + synth


# ----------------------------------------------------------------------------------------------
# Ground truth for measuring precision (shapes world only; never used to make labels)
# ----------------------------------------------------------------------------------------------


def world_answer(scene, question: str) -> str | None:
    """The ground-truth answer to a shapes-world question about ``scene``, or None when the
    question does not parse or has no unambiguous answer (references not unique, relation
    too close to call). For measuring pseudo-label precision only."""
    q = " ".join(question.lower().split()).rstrip("?.").strip()
    objs = list(scene.objects)

    def spec(name):
        return parse_phrase(name, strict=True)

    def unique(name):
        m = [o for o in objs if spec(name).matches(o)]
        return m[0] if len(m) == 1 else None

    for qtype, rx in question_patterns():
        m = rx.match(q)
        if not m:
            continue
        g = m.groupdict()
        try:
            if qtype in ("attribute", "size"):
                o = unique(g["obj"])
                attr = g.get("attr") or "size"
                return getattr(o, attr) if o else None
            if qtype == "count":
                n = sum(spec(g["objs"]).matches(o) for o in objs)
                return str(n) if n <= 9 else None
            if qtype == "exists":
                return "yes" if any(spec(g.get("a_obj") or g.get("objs")).matches(o) for o in objs) else "no"
            if qtype == "relation":
                a, b = unique(g["a"]), unique(g["b"])
                if a is None or b is None or a is b:
                    return None
                v = relation_holds(a, b, g["rel"], spatial_margin(scene))
                return None if v is None else ("yes" if v else "no")
            if qtype == "relate_attr":
                b = unique(g["b"])
                if b is None or g["attr"] == "size":
                    return None
                # the one object in that relation to b, and no other too close to call
                verdicts = [(o, relation_holds(o, b, g["rel"], spatial_margin(scene))) for o in objs if o is not b]
                hits = [o for o, v in verdicts if v is True]
                ok = len(hits) == 1 and all(v is not None for _, v in verdicts)
                return getattr(hits[0], g["attr"]) if ok else None
            if qtype == "compare":
                nx = sum(spec(g["xs"]).matches(o) for o in objs)
                ny = sum(spec(g["ys"]).matches(o) for o in objs)
                return "yes" if nx > ny else "no"
            if qtype == "same_color":
                o = unique(g["obj"])
                return str(sum(x.color == o.color for x in objs) - 1) if o else None
        except (ValueError, UserError):  # unknown words in an object name
            continue
    return None


def precision(labels: Sequence[PseudoLabel], scenes: Sequence) -> dict:
    """Share of labels whose answer equals the ground truth (unanswerable questions count as
    wrong), overall and by the parsed question type."""
    if not labels:
        return {"precision": None, "n": 0, "answerable": None}
    right, answerable = [], 0
    for lab in labels:
        truth = world_answer(scenes[lab.image], lab.question)
        answerable += truth is not None
        right.append(truth is not None and truth == lab.answer)
    return {"precision": round(float(np.mean(right)), 4), "n": len(labels),
            "answerable": round(answerable / len(labels), 4)}


def count_answers(labels: Sequence[PseudoLabel]) -> dict[str, int]:
    """How often each answer occurs (a collapsed teacher answers one thing)."""
    return dict(Counter(lab.answer for lab in labels).most_common())


# ----------------------------------------------------------------------------------------------
# Workspace entry point (the Augment step of the notebooks and widgets)
# ----------------------------------------------------------------------------------------------


def augment_workspace(ws, labelled: str = "examples", unlabelled: str | Path = "unlabelled", name: str = "seltda",
                      ratio: float = 1.0, n_per_image: int = 2, top_p: float = 0.9, qgen_steps: int = 400,
                      seed: int = 0, progress: bool = True, teacher: str = "detection",
                      min_confidence: float = 0.6) -> dict:
    """SelTDA on a workspace with the shapes default: fit a teacher to ``datasets/<labelled>``
    (a QA dataset, e.g. the task's examples), pseudo-label the images of ``unlabelled`` (a folder,
    or a name under ``datasets/``), filter them (answerability, confidence >= ``min_confidence``,
    structure), and save real + synthetic at ``ratio`` as ``datasets/<name>`` for the Fine-tune
    step. ``teacher``: "detection" (``DetectionTeacher``, the default) or "generative"
    (``ShapesTeacher``, ``qgen_steps`` of training). Returns counts, the filter report and examples.
    """
    real = load_qa_dataset(ws.dir("datasets", labelled))
    folder = Path(unlabelled)
    if not folder.is_absolute():
        folder = ws.dir("datasets") / unlabelled
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not paths:
        raise ValueError(f"{folder}: no unlabelled images (.png/.jpg/.webp) to pseudo-label")
    images = [load_image(p) for p in paths]
    if teacher == "detection":
        model = DetectionTeacher(min_score=min_confidence)
        model.train(real)
    elif teacher == "generative":
        from builder.tools.backends.shapes import ShapesVQA  # loads torch (the "ml" extra)

        model = ShapesTeacher.create(ShapesVQA().model, [q.question for q in real])
        model.train(real, qgen_steps=qgen_steps, seed=seed, progress=progress)
        min_confidence = 0.0
    else:
        raise ValueError(f"unknown teacher {teacher!r}; use 'detection' or 'generative'")
    model.save(ws.dir("checkpoints", f"{name}-teacher"))
    raw = pseudo_label(model, images, n_per_image=n_per_image, top_p=top_p, seed=seed, progress=progress)
    kept, report = filter_pseudo_labels(raw, model.answers, min_confidence=min_confidence)
    student = build_student_set(real, kept, images, ratio, seed=seed)
    path = save_qa_dataset(ws.dir("datasets", name), student, overwrite=True)
    return {"dataset": str(path), "real": len(real), "synthetic": len(student) - len(real),
            "unlabelled_images": len(images), "teacher": teacher, "filter": report.to_dict(),
            "examples": [{"image": paths[lab.image].name, "question": lab.question, "answer": lab.answer}
                         for lab in kept[:10]]}
