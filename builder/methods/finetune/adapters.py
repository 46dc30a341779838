"""Adapters: what the fine-tuning loop needs to know about a VQA model (batching, loss,
prediction, checkpoint folders), for Hugging Face BLIP and the shapes-world VQA net."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from builder.core.qa import QA
from builder.methods.finetune.config import FinetuneError
from builder.tools.engines import Answer


class VQAAdapter(Protocol):
    """How ``finetune`` drives one kind of VQA model."""

    name: str

    def build(self):
        """The torch module to train (freshly loaded from the adapter's source weights)."""

    def collate(self, items: list[QA]) -> dict:
        """A training batch (tensors) for ``loss``."""

    def loss(self, model, batch: dict):
        """The scalar training loss for a batch."""

    def predict(self, model, items: list[QA]) -> list[Answer]:
        """Answers for a list of items (model in eval mode, no gradients)."""

    def save(self, model, path: Path) -> None:
        """Write a checkpoint folder ``engine(path)`` can serve from."""

    def load(self, model, path: Path) -> None:
        """Load a checkpoint folder's weights into ``model``."""

    def engine(self, path: Path):
        """A VQA engine (``VQAEngine``) serving a checkpoint folder."""


class BlipVQAAdapter:
    """Hugging Face BLIP VQA (``BlipForQuestionAnswering``): the ``HFVQA`` backend's model.

    The answer decoder is trained with teacher forcing on ``[DEC] answer [SEP]`` (the sequence
    ``generate`` produces), padding ignored in the loss. Checkpoints are ``save_pretrained``
    folders (model + processor), loadable by ``HFVQA(model=path)``.
    """

    name = "hf-blip-vqa"

    def __init__(self, model: str | Path, max_answer_tokens: int = 10):
        self.source = str(model)
        self.max_answer_tokens = max_answer_tokens
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(self.source)

    def build(self):
        """The BLIP VQA model loaded from the adapter's source."""
        from transformers import BlipForQuestionAnswering

        return BlipForQuestionAnswering.from_pretrained(self.source)

    def collate(self, items: list[QA]) -> dict:
        """Processor tensors for the images and questions, answer tokens as teacher-forced labels."""
        from PIL import Image

        batch = self.processor(images=[Image.fromarray(q.image) for q in items], text=[q.question for q in items],
                               padding=True, return_tensors="pt")
        tok = self.processor.tokenizer
        ans = tok([q.answer for q in items], padding=True, truncation=True,
                  max_length=self.max_answer_tokens + 2, return_tensors="pt")
        ids = ans.input_ids.clone()
        ids[:, 0] = tok.bos_token_id  # BLIP decodes from [DEC], not [CLS]
        labels = ids.masked_fill(ans.attention_mask == 0, -100)
        return {"pixel_values": batch.pixel_values, "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask, "decoder_input_ids": ids,
                "decoder_attention_mask": ans.attention_mask, "labels": labels}

    def loss(self, model, batch: dict):
        """The answer decoder's teacher-forced cross-entropy."""
        return model(**batch).loss

    def predict(self, model, items: list[QA]) -> list[Answer]:
        """Generated answers (greedy) for the items."""
        import torch
        from PIL import Image

        batch = self.processor(images=[Image.fromarray(q.image) for q in items], text=[q.question for q in items],
                               padding=True, return_tensors="pt")
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=self.max_answer_tokens, do_sample=False, num_beams=1,
                                 output_logits=True, return_dict_in_generate=True)
        steps = len(out.logits)
        logp = torch.stack([torch.log_softmax(lg.float(), -1) for lg in out.logits], 1)  # (B, steps, V)
        gen = out.sequences[:, -steps:]
        tok_lp = logp.gather(-1, gen.unsqueeze(-1)).squeeze(-1)
        sep = model.config.text_config.sep_token_id
        answers = []
        for i in range(len(items)):
            # mean log-probability up to and including the end token, as HFVQA computes it
            ends = (gen[i] == sep).nonzero()
            n = int(ends[0]) + 1 if len(ends) else steps
            conf = math.exp(float(tok_lp[i, :n].mean()))
            text = " ".join(self.processor.decode(out.sequences[i], skip_special_tokens=True).split())
            answers.append(Answer(text, min(1.0, max(0.0, conf))))
        return answers

    def save(self, model, path: Path) -> None:
        """A ``save_pretrained`` folder of model and processor (what ``HFVQA(model=path)`` loads)."""
        model.save_pretrained(path)  # safetensors
        self.processor.save_pretrained(path)

    def load(self, model, path: Path) -> None:
        """Load a checkpoint's safetensors into ``model``; a checkpoint that does not fit is an error."""
        from safetensors.torch import load_file

        state = load_file(str(Path(path) / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # tied weights are stored once; anything else missing means a wrong checkpoint
        real_missing = [k for k in missing if k not in _tied_keys(model)]
        if real_missing or unexpected:
            raise ValueError(f"{path}: checkpoint does not fit the model (missing {real_missing[:3]}, "
                             f"unexpected {unexpected[:3]})")

    def engine(self, path: Path):
        """The ``HFVQA`` backend serving the checkpoint folder."""
        from builder.tools.backends.hf import HFVQA

        return HFVQA(model=str(path), max_new_tokens=self.max_answer_tokens)


def _tied_keys(model) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = set(tied.keys() if isinstance(tied, dict) else tied)
    return keys


class ShapesVQAAdapter:
    """The shapes-world default VQA model (``builder.domains.shapes.nets.vqa.ShapesVQANet``).

    Built on that module's public API (``from_pretrained``/``save_pretrained``, ``resize_square``,
    ``to_tensor``, ``encode_questions``, ``predict``), so a checkpoint folder is an artifact
    folder, exactly what the shapes VQA backend loads. ``word_dropout`` replaces question words by <unk> during
    training, as ``builder.domains.shapes.training.vqa.train`` does, so new phrasings stay in distribution. Items that
    carry object labels (``meta["objects"]``: the replayed original task) also train the
    perception heads with weight ``aux_weight``, so answers on new data cannot pull perception
    away from what it sees in the original domain.
    """

    name = "shapes-vqa"

    def __init__(self, weights: str | Path | None = None, word_dropout: float = 0.1, aux_weight: float = 0.5):
        from builder.domains.shapes.nets import vqa as vqa_net
        from builder.domains.shapes.training import vqa as vqa_train

        self._m, self._t = vqa_net, vqa_train  # the network, its training code
        self.source = Path(weights) if weights else vqa_net.DEFAULT_WEIGHTS
        self.word_dropout = word_dropout
        self.aux_weight = aux_weight
        self._vocab_model = None  # the model whose vocab/answers collate uses

    def build(self):
        """The shapes VQA network loaded from the adapter's source weights."""
        self._vocab_model = self._m.ShapesVQANet.from_pretrained(self.source)
        self._vocab_model.info = {"finetuned_from": str(self.source)}  # its checkpoints' record
        return self._vocab_model

    def _ref(self):
        if self._vocab_model is None:
            self._vocab_model = self._m.ShapesVQANet.from_pretrained(self.source)
        return self._vocab_model

    def collate(self, items: list[QA]) -> dict:
        """Images, question tokens and answer labels, plus perception targets for items with object labels."""
        import torch

        ref = self._ref()
        size = ref.config["image_size"]
        x = self._m.to_tensor(np.stack([self._m.resize_square(q.image, size) for q in items]))
        tokens, lengths = ref.encode_questions([q.question for q in items])
        unknown = sorted({q.answer for q in items} - set(ref.answers))
        if unknown:
            raise FinetuneError(f"answers outside the shapes VQA vocabulary: {unknown[:5]}")
        labels = torch.tensor([ref.answers.index(q.answer) for q in items])
        has, centre, attrs = self._t.aux_targets([(q.image.shape[:2], tuple(q.meta.get("objects") or ()))
                                                  for q in items], size)
        return {"images": x, "tokens": tokens, "lengths": lengths, "labels": labels, "aux_has": has,
                "aux_centre": centre, "aux_attrs": attrs}

    def loss(self, model, batch: dict):
        """Answer cross-entropy plus, where object labels exist, the weighted perception loss."""
        import torch
        from torch.nn import functional as F

        tokens = batch["tokens"]
        if model.training and self.word_dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout) & (tokens > 0)
            tokens = tokens.masked_fill(drop, self._ref().word_index[self._m.UNK])
        logits, aux = model(batch["images"], tokens, batch["lengths"], with_aux=True)
        loss = F.cross_entropy(logits, batch["labels"])
        if self.aux_weight > 0 and bool(batch["aux_has"].any()):
            loss = loss + self.aux_weight * self._t.aux_loss(aux, batch["aux_has"], batch["aux_centre"],
                                                             batch["aux_attrs"])
        return loss

    def predict(self, model, items: list[QA]) -> list[Answer]:
        """The network's answers and confidences for the items."""
        out = model.predict([q.image for q in items], [q.question for q in items])
        return [Answer(a, c) for a, c in out]

    def save(self, model, path: Path) -> None:
        """The network as an artifact folder (what the shapes VQA backend loads)."""
        model.save_pretrained(path)

    def load(self, model, path: Path) -> None:
        """Load a checkpoint folder's weights into ``model``."""
        from builder.core.artifacts import load_state

        load_state(path, model)

    def engine(self, path: Path):
        """The shapes VQA backend serving the checkpoint folder."""
        from builder.tools.backends.shapes import ShapesVQA

        return ShapesVQA(weights=str(path))

    def replay_items(self, n: int, seed: int = 0) -> list[QA]:
        """About ``n`` items of the task the model was trained on (daylight shapes-world scenes,
        scene-level and crop questions, training phrasings), to mix into fine-tuning batches so
        the original task is not forgotten. Scenes come from seeds the default weights never saw."""
        return self._t.build_dataset(max(1, n // 12), 900_000 + seed, self._t.MIX_DOMAIN, "train")[:n]


def make_adapter(backend: str, model: str | None):
    """An adapter by backend name: "shapes" (default weights unless ``model``) or "hf" (BLIP path/id)."""
    if backend == "shapes":
        return ShapesVQAAdapter(model)
    if backend == "hf":
        if not model:
            raise FinetuneError("the hf backend needs --model (a BLIP VQA id or folder)")
        return BlipVQAAdapter(model)
    raise FinetuneError(f"unknown backend {backend!r}; use 'shapes' or 'hf'")
