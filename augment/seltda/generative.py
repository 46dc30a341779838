"""The generative shapes-world teacher: a question generator and a VQA answerer, both seeing pixels only."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from augment.seltda.labels import format_qa, nucleus_sample
from builder.core.artifacts import Artifact, load_state, save_state
from builder.core.qa import as_qa
from builder.core.seeding import derive_seed, torch_generator
from builder.core.training import TrainConfig, train_loop

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


class ShapesTeacher(Artifact):
    """Question generator + answerer (see the module docstring); both see pixels only."""

    architecture = "seltda-shapes-teacher"

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
        from builder.domains.shapes.nets import vqa as sv

        size = self.qgen.config["image_size"]
        return sv.to_tensor(np.stack([sv.resize_square(np.asarray(im, np.uint8), size) for im in images]))

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

    def sample_questions(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9,
                         temperature: float = 1.0, max_len: int = 20, generator=None) -> list[str]:
        """``n`` nucleus-sampled questions per image (image-major order), from pixels alone."""
        import torch

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
                cur = nucleus_sample(logits, top_p, temperature, generator)
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
        return questions

    def generate(self, images: Sequence[np.ndarray], n: int = 2, top_p: float = 0.9, temperature: float = 1.0,
                 max_len: int = 20, seed: int = 0) -> list[list[str]]:
        """``n`` nucleus-sampled ``"Question: q Answer: a"`` texts per image."""
        import torch

        if not len(images):
            return []
        gen = torch.Generator().manual_seed(seed)
        questions = self.sample_questions(images, n, top_p, temperature, max_len, gen)
        with torch.no_grad():
            # The answer: nucleus-sampled from the answerer's distribution given image + question.
            xa = self._answer_images(images).repeat_interleave(n, 0)
            tokens, lengths = self.answerer.encode_questions([q or "?" for q in questions])
            logits = self.answerer(xa, tokens, lengths)
            ans = nucleus_sample(logits, top_p, temperature, gen).tolist()
        texts = [format_qa(q, self.answers[a]) if q else f"Question: Answer: {self.answers[a]}"
                 for q, a in zip(questions, ans, strict=True)]
        return [texts[i * n:(i + 1) * n] for i in range(len(images))]

    def _answer_images(self, images) -> object:
        from builder.domains.shapes.nets import vqa as sv

        size = self.answerer.config["image_size"]
        return sv.to_tensor(np.stack([sv.resize_square(np.asarray(im, np.uint8), size) for im in images]))

    def artifact_config(self) -> dict:
        return dict(self.qgen.config)

    def _save_files(self, folder: Path) -> None:
        """The question generator (``model.safetensors``) and the answerer (``answerer/``, a
        shapes VQA artifact folder)."""
        save_state(folder, self.qgen)
        self.answerer.save_pretrained(folder / "answerer")

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> ShapesTeacher:
        from builder.domains.shapes.nets import vqa as sv

        qg = _shapes_teacher_module()(**config)
        load_state(folder, qg)
        return cls(qg.eval(), sv.ShapesVQANet.from_pretrained(folder / "answerer"))
