"""Image variations with diffusers: image-to-image or image-variation pipelines, seeds recorded.

``ImageVariations(model)`` loads any diffusers pipeline folder or hub id:

* a text-to-image Stable Diffusion checkpoint is turned into its image-to-image pipeline
  (``AutoPipelineForImage2Image.from_pipe``): each variation re-noises the input to
  ``strength`` and denoises it, optionally guided by a prompt;
* an image-variation pipeline (e.g. ``lambdalabs/sd-image-variations-diffusers``, which takes
  no prompt) is called with the image alone;
* an image-to-image pipeline is used as is.

Memory-safe defaults: batch size 1, attention slicing and VAE slicing on, inference mode,
float16 on CUDA and float32 on CPU. Every output records its source image, seed, prompt and
settings; ``save_variations`` writes PNGs and a ``variations.json`` manifest, so a data set
built from variations can be regenerated exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from builder.tools.engines import as_rgb_array


@dataclass
class Variation:
    """One generated image and how it was made."""

    image: np.ndarray
    source: int
    seed: int
    prompt: str
    settings: dict = field(default_factory=dict)


class ImageVariations:
    """A diffusers pipeline that makes variations of images (see the module docstring)."""

    def __init__(self, model: str | Path, revision: str | None = None, device: str | None = None,
                 dtype: str | None = None, attention_slicing: bool = True):
        import torch
        from diffusers import AutoPipelineForImage2Image, DiffusionPipeline

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or ("float16" if self.device.startswith("cuda") else "float32")
        try:
            pipe = DiffusionPipeline.from_pretrained(str(model), revision=revision,
                                                     dtype=getattr(torch, self.dtype))
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"cannot load a diffusers pipeline from {model!r}: {e}") from e
        name = type(pipe).__name__
        self.kind = "variation" if "ImageVariation" in name else "img2img"
        if self.kind == "img2img" and "Img2Img" not in name and "Image2Image" not in name:
            pipe = AutoPipelineForImage2Image.from_pipe(pipe)
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if attention_slicing and hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing()
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        self.pipe, self.model = pipe, str(model)

    def generate(self, images: Sequence, prompt: str = "", n_per_image: int = 1, seed: int = 0,
                 strength: float = 0.5, steps: int = 20, guidance_scale: float = 5.0, batch_size: int = 1,
                 size: int | None = None, progress: bool = True) -> list[Variation]:
        """``n_per_image`` variations of each image. Output k of image i uses seed
        ``seed + i * n_per_image + k`` (its own generator), so any one is reproducible alone."""
        import torch
        from PIL import Image

        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if batch_size < 1 or n_per_image < 1:
            raise ValueError("batch_size and n_per_image must be at least 1")
        jobs = [(i, k) for i in range(len(images)) for k in range(n_per_image)]
        pils = [Image.fromarray(as_rgb_array(np.asarray(im))) for im in images]
        if size:
            pils = [p.resize((size, size), Image.BICUBIC) for p in pils]
        settings = {"model": self.model, "kind": self.kind, "strength": strength, "steps": steps,
                    "guidance_scale": guidance_scale}
        out: list[Variation] = []
        gen_device = "cpu" if not self.device.startswith("cuda") else self.device
        for s in tqdm(range(0, len(jobs), batch_size), desc="variations", disable=not progress):
            chunk = jobs[s:s + batch_size]
            seeds = [seed + i * n_per_image + k for i, k in chunk]
            gens = [torch.Generator(gen_device).manual_seed(v) for v in seeds]
            kw = {"image": [pils[i] for i, _ in chunk], "num_inference_steps": steps, "guidance_scale": guidance_scale,
                  "generator": gens, "output_type": "np"}
            if self.kind == "img2img":
                kw.update(prompt=[prompt] * len(chunk), strength=strength)
            with torch.inference_mode():
                result = self.pipe(**kw).images
            for (i, _), v, img in zip(chunk, seeds, result, strict=True):
                arr = np.clip(np.rint(np.asarray(img) * 255), 0, 255).astype(np.uint8)
                out.append(Variation(arr, i, v, prompt, settings))
        return out


def save_variations(variations: Sequence[Variation], out_dir: str | Path) -> Path:
    """PNGs plus ``variations.json`` (file, source index, seed, prompt, settings)."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, v in enumerate(variations):
        name = f"var-{n:05d}-src{v.source}-seed{v.seed}.png"
        Image.fromarray(v.image).save(out / name)
        rows.append({"file": name, **{k: val for k, val in asdict(v).items() if k != "image"}})
    (out / "variations.json").write_text(json.dumps(rows, indent=1) + "\n")
    return out
