"""The Hugging Face teacher: BLIP captioning trained to write ``question: q answer: a`` for an image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from augment.seltda.labels import format_qa
from builder.core.artifacts import Artifact
from builder.core.qa import as_qa
from builder.core.training import TrainConfig, train_loop


class BlipTeacher(Artifact):
    """``BlipForConditionalGeneration`` trained to write ``question: q answer: a`` for an image."""

    architecture = "seltda-blip-teacher"
    transformers_folder = True

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

    def artifact_config(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens}

    def _save_files(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.processor.save_pretrained(folder)

    @classmethod
    def _from_files(cls, folder: Path, config: dict, info: dict) -> BlipTeacher:
        return cls(folder, config["max_new_tokens"])
