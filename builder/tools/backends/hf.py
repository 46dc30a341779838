"""Hugging Face ``transformers`` backends for the detector, matcher, VQA and captioner engines.

Each backend takes any model id or local directory (``model``), an optional ``revision``
(a branch, tag or commit hash on the hub; pin a commit for reproducible exports), ``device``
("cpu", "cuda", "cuda:1", ...; default: CUDA when available) and ``dtype`` ("float32",
"float16", "bfloat16"; default float32). Nothing is imported or loaded until the first call,
so building an engine profile stays cheap and a profile naming models that are not needed by
a program costs nothing.

Recommended real models (for machines with hub access or local copies; the bundled ``hf``
engine profile uses the first choice of each row):

=============  ===========================================  ==========================================
engine         model id                                     notes
=============  ===========================================  ==========================================
detector       ``google/owlv2-base-patch16-ensemble``       OWLv2, best open-vocabulary boxes here
detector       ``google/owlv2-large-patch14-ensemble``      larger, slower OWLv2
detector       ``google/owlvit-base-patch32``               OWL-ViT v1, fastest
matcher        ``openai/clip-vit-base-patch32``             CLIP
matcher        ``openai/clip-vit-large-patch14``            larger CLIP
matcher        ``google/siglip-base-patch16-224``           SigLIP (sigmoid scores, needs max_length padding)
vqa            ``Salesforce/blip-vqa-base``                 BLIP VQA (generative answers)
vqa            ``Salesforce/blip-vqa-capfilt-large``        larger BLIP VQA
captioner      ``Salesforce/blip-image-captioning-base``    BLIP captions
captioner      ``Salesforce/blip-image-captioning-large``   larger BLIP captions
=============  ===========================================  ==========================================

Offline, these classes are tested on tiny random models saved by ``tests/tiny_models.py`` and
loaded by path, exactly as a hub id would be loaded.

Every backend's ``version`` names this module's behaviour version, the installed
``transformers`` version and the options that change outputs (threshold, prompt, dtype, ...),
because the tool cache keys results on it: changing any of them must not serve stale results.
"""

from __future__ import annotations

import math
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from builder.tools.engines import Answer, Detection, as_rgb_array

# Bump when a backend's outputs change for the same model and inputs.
BEHAVIOUR_VERSION = "1"

DTYPES = ("float32", "float16", "bfloat16")
OWL_MODEL_TYPES = ("owlvit", "owlv2")


class ModelLoadError(RuntimeError):
    """A model or its processor could not be loaded from the given id or path."""


def _looks_like_path(model: str) -> bool:
    """True when ``model`` can only be a local path, never a hub id ("name" or "org/name")."""
    return (
        model.startswith(("/", "./", "../", "~", "\\"))
        or model.count("/") > 1
        or (len(model) > 1 and model[1] == ":")  # a Windows drive letter
    )


def _transformers_version() -> str:
    # Read from the package metadata: importing transformers would cost seconds.
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "missing"


class _HFBackend:
    """Shared plumbing: lazy, thread-safe loading of one model + processor, on a device/dtype."""

    kind = "model"  # a word for error messages

    def __init__(
        self,
        model: str | Path,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ):
        if not str(model).strip():
            raise ValueError(f"{type(self).__name__}: model must be a hub id or a local path, got {model!r}")
        self.model = str(model)
        self.revision = revision
        self.device = device
        self.dtype = dtype or "float32"
        if self.dtype not in DTYPES:
            raise ValueError(
                f"{type(self).__name__}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}"
            )
        # Fail at once for a path that is not there, instead of a confusing hub error later.
        path = Path(self.model).expanduser()
        if _looks_like_path(self.model) and not path.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: model directory {self.model!r} does not exist")
        self.backend_id = f"hf:{self.model}@{revision or 'local'}"
        self._lock = threading.Lock()
        self._model: Any = None  # loaded lazily on first use
        self._processor = None

    @property
    def version(self) -> str:
        """Behaviour version + transformers version + the options that change outputs."""
        opts = ";".join(f"{k}={v}" for k, v in self._output_options().items())
        return f"{BEHAVIOUR_VERSION}/transformers-{_transformers_version()}/{opts}"

    def _output_options(self) -> dict[str, Any]:
        return {"dtype": self.dtype}

    def _model_class(self):
        """The transformers class to load the weights with (imported lazily by subclasses)."""
        raise NotImplementedError

    def _check_config(self, model) -> None:
        """Reject a checkpoint of the wrong family with a clear message (subclasses override)."""

    def _load(self):
        """Load model and processor once; later calls return them at once."""
        if self._model is not None:
            return self._model, self._processor
        with self._lock:
            if self._model is None:
                import torch
                from transformers import AutoProcessor

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                source = str(Path(self.model).expanduser()) if _looks_like_path(self.model) else self.model
                try:
                    processor = AutoProcessor.from_pretrained(source, revision=self.revision)
                    model, info = self._model_class().from_pretrained(
                        source, revision=self.revision, dtype=getattr(torch, self.dtype),
                        output_loading_info=True,
                    )
                except (OSError, ValueError, KeyError) as e:
                    where = "a local directory" if Path(source).is_dir() else "not a local directory"
                    raise ModelLoadError(
                        f"{type(self).__name__}: cannot load {self.kind} {self.model!r} "
                        f"(revision {self.revision or 'default'}; {where}): {e}"
                    ) from e
                self._check_config(model)
                # transformers only warns when weights are missing and initialises them at
                # random (e.g. a captioning checkpoint loaded for VQA): that would serve
                # meaningless outputs, so refuse it.
                missing = list(info.get("missing_keys", [])) + [
                    str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", [])
                ]
                if missing:
                    raise ModelLoadError(
                        f"{type(self).__name__}: {self.model!r} has no weights for {len(missing)} "
                        f"parameters of {type(model).__name__} (e.g. {', '.join(sorted(missing)[:3])}); "
                        "is it a checkpoint for another task?"
                    )
                self._processor = processor
                self._device = torch.device(device)
                self._model = model.to(self._device).eval()
        return self._model, self._processor

    def _inputs(self, batch) -> dict:
        """Move processor outputs to the model's device, floating tensors to its dtype."""
        model = self._model
        out = {}
        for key, value in batch.items():
            if hasattr(value, "to"):
                value = value.to(self._device)
                if value.is_floating_point():
                    value = value.to(model.dtype)
            out[key] = value
        return out

    def warmup(self) -> None:
        """Load the model now (e.g. before timing runs) instead of on the first call."""
        self._load()


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(as_rgb_array(image))


# --------------------------------------------------------------------------------------------
# Detector
# --------------------------------------------------------------------------------------------


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first.

    OWL's text-conditioned post-processing keeps every patch above the threshold, so one
    object often comes back as several overlapping boxes; counting programs need one each.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[overlap <= iou]
    return keep


class HFDetector(_HFBackend):
    """Open-vocabulary detection with OWL-ViT or OWLv2 (``AutoModelForZeroShotObjectDetection``).

    ``open_vocabulary``: it finds whatever noun it is asked for, so planners may pass any noun.

    ``query`` ("red circle") becomes the text query ``template.format(query)`` ("a photo of a
    red circle"), the prompt OWL was trained and evaluated with. Detections scoring above
    ``threshold`` are kept, overlapping ones (IoU > ``nms_iou``; ``None`` turns this off) are
    merged into the best-scoring box, boxes are clipped to the image and rounded outwards to
    integer (x0, y0, x1, y1) with x1/y1 exclusive. Results are sorted by score, best first.
    """

    open_vocabulary = True

    kind = "detector"

    def __init__(
        self,
        model: str | Path = "google/owlv2-base-patch16-ensemble",
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        threshold: float = 0.1,
        nms_iou: float | None = 0.5,
        template: str = "a photo of a {}",
    ):
        super().__init__(model, revision, device, dtype)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"HFDetector: threshold must be in [0, 1], got {threshold}")
        if nms_iou is not None and not 0.0 <= nms_iou <= 1.0:
            raise ValueError(f"HFDetector: nms_iou must be in [0, 1] or None, got {nms_iou}")
        if "{}" not in template:
            raise ValueError(f"HFDetector: template must contain '{{}}' for the query, got {template!r}")
        self.threshold = float(threshold)
        self.nms_iou = nms_iou
        self.template = template

    def _output_options(self) -> dict[str, Any]:
        return {**super()._output_options(), "threshold": self.threshold, "nms": self.nms_iou,
                "template": self.template}

    def _model_class(self):
        from transformers import AutoModelForZeroShotObjectDetection

        return AutoModelForZeroShotObjectDetection

    def _check_config(self, model) -> None:
        # Grounding DINO and others load through the same auto class but post-process differently.
        if model.config.model_type not in OWL_MODEL_TYPES:
            raise ModelLoadError(
                f"HFDetector: {self.model!r} is a {model.config.model_type!r} model; "
                f"supported: {', '.join(OWL_MODEL_TYPES)} (OWL-ViT, OWLv2)"
            )

    def text_query(self, query: str) -> str:
        """The text OWL sees for ``query``: the template, unless the query is already a phrase."""
        q = " ".join(query.split())
        if not q:
            raise ValueError("HFDetector: the query is empty")
        return q if q.lower().startswith("a photo of") else self.template.format(q)

    def detect(self, image: np.ndarray, query: str, threshold: float | None = None) -> list[Detection]:
        """Every object matching ``query``, best first; ``threshold`` overrides the default."""
        import torch

        image = as_rgb_array(image)
        thr = self.threshold if threshold is None else float(threshold)
        model, processor = self._load()
        h, w = image.shape[:2]
        # Long queries are truncated to the text model's length (16 tokens for real OWL models);
        # the end-of-text token OWL pools at is kept.
        batch = processor(
            text=[[self.text_query(query)]],
            images=_pil(image),
            truncation=True,
            max_length=model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        with torch.inference_mode():
            outputs = model(**self._inputs(batch))
        # Post-processing runs in float32 on the CPU (half-precision sigmoid/scaling loses boxes).
        outputs.logits = outputs.logits.float().cpu()
        outputs.pred_boxes = outputs.pred_boxes.float().cpu()
        # target_sizes is (height, width); for OWLv2 the processor scales by the longer side,
        # because it pads images to a square at the bottom/right before resizing.
        result = processor.post_process_grounded_object_detection(
            outputs, threshold=thr, target_sizes=[(h, w)]
        )[0]
        boxes = result["boxes"].numpy().astype(np.float64)
        scores = result["scores"].numpy().astype(np.float64)
        if len(boxes) == 0:
            return []
        # Clip to the image (OWLv2 may place boxes in the padding) and round outwards.
        x0 = np.clip(np.floor(boxes[:, 0]), 0, w)
        y0 = np.clip(np.floor(boxes[:, 1]), 0, h)
        x1 = np.clip(np.ceil(boxes[:, 2]), 0, w)
        y1 = np.clip(np.ceil(boxes[:, 3]), 0, h)
        boxes = np.stack([x0, y0, x1, y1], axis=1)
        valid = (x1 > x0) & (y1 > y0) & np.isfinite(scores)
        boxes, scores = boxes[valid], scores[valid]
        order = (
            _nms(boxes, scores, self.nms_iou)
            if self.nms_iou is not None
            else list(np.argsort(-scores, kind="stable"))
        )
        return [
            Detection(box=(int(boxes[i][0]), int(boxes[i][1]), int(boxes[i][2]), int(boxes[i][3])), score=float(scores[i]), label=query)
            for i in order
        ]


# --------------------------------------------------------------------------------------------
# Matcher
# --------------------------------------------------------------------------------------------


class _DualEncoderBackend(_HFBackend):
    """A CLIP/SigLIP-style model (``AutoModel`` with image and text feature heads)."""

    def _model_class(self):
        from transformers import AutoModel

        return AutoModel

    def _check_config(self, model) -> None:
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelLoadError(
                f"{type(self).__name__}: {self.model!r} ({model.config.model_type!r}) is not a dual "
                "image-text encoder such as CLIP or SigLIP"
            )


class HFMatcher(_DualEncoderBackend):
    """Image-text matching with CLIP or SigLIP (``AutoModel``): one similarity logit per text.

    Scores are the model's ``logits_per_image`` (scaled cosine similarity; SigLIP adds its bias,
    so ``sigmoid(score)`` is its match probability). All texts go through one forward pass.
    """

    kind = "matcher"

    def __init__(
        self,
        model: str | Path = "openai/clip-vit-base-patch32",
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ):
        super().__init__(model, revision, device, dtype)

    def scores(self, image: np.ndarray, texts: list[str]) -> list[float]:
        """One score per text, higher means a better fit."""
        import torch

        if isinstance(texts, str):
            raise TypeError("HFMatcher.scores: texts must be a list of strings, not one string")
        if not texts:
            return []
        model, processor = self._load()
        # SigLIP was trained on texts padded to max_length; other padding changes its scores.
        padding = "max_length" if model.config.model_type.startswith("siglip") else True
        batch = processor(
            text=list(texts), images=_pil(image), padding=padding, truncation=True, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = model(**self._inputs(batch)).logits_per_image[0]
        return [float(v) for v in logits.float().cpu()]


# --------------------------------------------------------------------------------------------
# Embedder
# --------------------------------------------------------------------------------------------


def _features(out):
    """transformers 5 returns a model output from ``get_*_features``; older versions a tensor."""
    if hasattr(out, "pooler_output"):
        return out.pooler_output
    return out


class HFEmbedder(_DualEncoderBackend):
    """Image and text embeddings from CLIP or SigLIP (``AutoModel``): the projected features,
    L2-normalised, so inner product is the cosine similarity the model was trained with.

    Images and texts are embedded in batches of ``batch_size``; SigLIP texts are padded to
    max_length (as it was trained).
    """

    kind = "dual encoder"

    def __init__(
        self,
        model: str | Path = "openai/clip-vit-base-patch32",
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 32,
    ):
        super().__init__(model, revision, device, dtype)
        if batch_size < 1:
            raise ValueError(f"HFEmbedder: batch_size must be at least 1, got {batch_size}")
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        """The embedding size: the projection dimension, else the text hidden size (loads the model)."""
        model, _ = self._load()
        cfg = model.config
        return int(getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size)

    def _normalise(self, feats) -> np.ndarray:
        arr = feats.float().cpu().numpy().astype(np.float32)
        return arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)

    def embed_images(self, images: list) -> np.ndarray:
        """(N, dim) unit vectors."""
        import torch

        model, processor = self._load()
        out = []
        for s in range(0, len(images), self.batch_size):
            batch = processor(images=[_pil(im) for im in images[s: s + self.batch_size]], return_tensors="pt")
            with torch.inference_mode():
                feats = _features(model.get_image_features(pixel_values=self._inputs(batch)["pixel_values"]))
            out.append(self._normalise(feats))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(N, dim) unit vectors."""
        import torch

        if isinstance(texts, str):
            raise TypeError("HFEmbedder.embed_texts: texts must be a list of strings, not one string")
        model, processor = self._load()
        padding = "max_length" if model.config.model_type.startswith("siglip") else True
        out = []
        for s in range(0, len(texts), self.batch_size):
            batch = processor(text=list(texts[s: s + self.batch_size]), padding=padding, truncation=True,
                              return_tensors="pt")
            inputs = {k: v for k, v in self._inputs(batch).items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                feats = _features(model.get_text_features(**inputs))
            out.append(self._normalise(feats))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


# --------------------------------------------------------------------------------------------
# BLIP: VQA and captions
# --------------------------------------------------------------------------------------------


class _BlipGenerator(_HFBackend):
    """Greedy generation with BLIP, returning the text and its mean token log-probability."""

    def __init__(self, model, revision, device, dtype, max_new_tokens: int):
        super().__init__(model, revision, device, dtype)
        if max_new_tokens < 1:
            raise ValueError(
                f"{type(self).__name__}: max_new_tokens must be at least 1, got {max_new_tokens}"
            )
        self.max_new_tokens = int(max_new_tokens)

    def _output_options(self) -> dict[str, Any]:
        return {**super()._output_options(), "max_new_tokens": self.max_new_tokens}

    def _check_config(self, model) -> None:
        if model.config.model_type != "blip":
            raise ModelLoadError(
                f"{type(self).__name__}: {self.model!r} is a {model.config.model_type!r} model; "
                "this backend runs BLIP checkpoints"
            )

    def _generate(self, image: np.ndarray, text: str | None) -> tuple[str, float]:
        import torch

        model, processor = self._load()
        kwargs = {"text": text} if text else {}
        batch = processor(images=_pil(image), return_tensors="pt", **kwargs)
        with torch.inference_mode():
            out = model.generate(
                **self._inputs(batch),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                output_logits=True,
                return_dict_in_generate=True,
            )
        sequence = out.sequences[0].cpu()
        # The raw logits of each generated step, aligned with the last len(logits) tokens.
        steps = len(out.logits)
        generated = sequence[len(sequence) - steps:]
        stop = model.config.text_config.sep_token_id
        logprobs = []
        for logits, token in zip(out.logits, generated, strict=True):
            logprobs.append(float(torch.log_softmax(logits[0].float().cpu(), dim=-1)[token]))
            if int(token) == stop:  # the end token counts: it says the answer is complete
                break
        mean_logprob = sum(logprobs) / len(logprobs) if logprobs else float("-inf")
        text_out = processor.decode(sequence, skip_special_tokens=True)
        return " ".join(text_out.split()), mean_logprob


class HFVQA(_BlipGenerator):
    """Visual question answering with BLIP (``BlipForQuestionAnswering.generate``).

    transformers 5 removed the VQA pipeline, so the model is called directly. The answer is
    decoded greedily; ``confidence`` is exp(mean log-probability of the generated tokens,
    including the end token), a value in [0, 1] that selective decomposition thresholds.
    """

    kind = "VQA model"

    def __init__(
        self,
        model: str | Path = "Salesforce/blip-vqa-base",
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_new_tokens: int = 10,
    ):
        super().__init__(model, revision, device, dtype, max_new_tokens)

    def _model_class(self):
        from transformers import BlipForQuestionAnswering

        return BlipForQuestionAnswering

    def answer(self, image: np.ndarray, question: str) -> Answer:
        """The answer to ``question`` about ``image`` with its confidence."""
        if not question or not question.strip():
            raise ValueError("HFVQA: the question is empty")
        text, mean_logprob = self._generate(image, question.strip())
        confidence = min(1.0, max(0.0, math.exp(mean_logprob)))
        return Answer(text=text, confidence=confidence)


class HFCaptioner(_BlipGenerator):
    """Image captioning with BLIP (``BlipForConditionalGeneration.generate``).

    With a ``prompt`` (e.g. "a picture of") BLIP continues it, and the caption starts with
    the prompt, as in the model card's conditional-captioning example.
    """

    kind = "captioning model"

    def __init__(
        self,
        model: str | Path = "Salesforce/blip-image-captioning-base",
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 30,
    ):
        super().__init__(model, revision, device, dtype, max_new_tokens)
        self.prompt = prompt.strip() if prompt and prompt.strip() else None

    def _output_options(self) -> dict[str, Any]:
        return {**super()._output_options(), "prompt": self.prompt}

    def _model_class(self):
        from transformers import BlipForConditionalGeneration

        return BlipForConditionalGeneration

    def caption(self, image: np.ndarray) -> str:
        """One sentence describing ``image``."""
        text, _ = self._generate(image, self.prompt)
        return text
