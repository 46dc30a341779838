"""Tiny randomly initialised vision-language models, saved as a user would find them on disk.

No machine here can download weights, so the Hugging Face backends are tested the way
``transformers`` tests itself: real model classes built from small configs, with tokenizers
built locally from in-memory vocabularies. Each builder saves model + processor with
``save_pretrained`` into a directory and returns its path, so the backends load them by path,
through ``AutoProcessor`` / ``AutoModel*``, exactly as they would load a hub id.

The models are random: their outputs are meaningless but have the real types and shapes.
Tokenizers are character level and built from fixed vocabularies (no training), so they are
identical in every process.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

# Small enough that every forward pass takes milliseconds on one CPU core.
IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32
VISION = dict(
    hidden_size=HIDDEN,
    intermediate_size=37,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
)
TEXT = dict(hidden_size=HIDDEN, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)


def _byte_level_vocab() -> dict[str, int]:
    """A CLIP-style BPE vocab with no merges: every byte, alone or ending a word, then specials.

    CLIP's BPE appends ``</w>`` to the last symbol of each word, so both forms are needed.
    The special tokens come last on purpose: OWL-ViT treats a query whose first token id is 0
    as padding (every score becomes 0), and pools text at the argmax token id, which must be
    the end-of-text token as in the real 49408-token vocabulary.
    """
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}


def clip_tokenizer(max_length: int):
    """A CLIPTokenizer over single bytes (no merges), deterministic in every process.

    ``max_length`` must match the text model's ``max_position_embeddings``: OWL's processor
    pads every query to the tokenizer's ``model_max_length``.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_byte_level_vocab(), merges=[], model_max_length=max_length)


def bert_tokenizer():
    """A BERT (WordPiece) tokenizer over single characters, with BLIP's ``[DEC]`` start token.

    Words split into characters (``red`` -> ``r ##e ##d``); BLIP starts decoding with
    ``[DEC]`` (its ``bos_token``), which real BLIP checkpoints add after BERT's vocabulary.
    """
    from transformers import BertTokenizer

    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + ["[DEC]"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=32)


def _clip_text_ids(tok) -> dict:
    """CLIP-family text configs pool at the end-of-text token: its id must match the tokenizer."""
    return dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def build_owl(out_dir: str | Path, version: int = 2, seed: int = 0) -> Path:
    """Save a tiny OWLv2 (``version=2``) or OWL-ViT (``version=1``) detector with its processor."""
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessorPil,
        OwlViTProcessor,
    )

    # Real OWL pads queries to 16 tokens; with one token per character this needs more.
    tok = clip_tokenizer(max_length=32)
    text = dict(TEXT, max_position_embeddings=32, **_clip_text_ids(tok))
    # OWL projects image patches into the text space without a projection of its own:
    # projection_dim must equal the text hidden size.
    if version == 2:
        config = Owlv2Config(text_config=text, vision_config=VISION, projection_dim=HIDDEN)
        model_cls, proc_cls, image_proc = Owlv2ForObjectDetection, Owlv2Processor, Owlv2ImageProcessorPil
    elif version == 1:
        config = OwlViTConfig(text_config=text, vision_config=VISION, projection_dim=HIDDEN)
        model_cls, proc_cls, image_proc = OwlViTForObjectDetection, OwlViTProcessor, OwlViTImageProcessorPil
    else:
        raise ValueError(f"OWL version must be 1 or 2, got {version}")
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    if version == 2:
        processor = proc_cls(image_processor=image_proc(size=size), tokenizer=tok)
    else:
        processor = proc_cls(image_processor=image_proc(size=size, crop_size=size), tokenizer=tok)
    return _save(model_cls, config, processor, out_dir, seed, prepare=_centre_boxes_on_patches)


def _centre_boxes_on_patches(model) -> None:
    """Zero the last layer of OWL's box head, so each predicted box is its patch's prior box.

    Randomly initialised, the head saturates the box sigmoid and every box lands on an image
    corner (all clipped away); with this, boxes tile the image like a trained model's do, which
    exercises scaling, clipping and suppression. Class scores stay random.
    """
    with torch.no_grad():
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()


def build_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny CLIP image-text matcher with its processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = clip_tokenizer(max_length=32)
    text = dict(TEXT, max_position_embeddings=32, **_clip_text_ids(tok))
    config = CLIPConfig(text_config=text, vision_config=VISION, projection_dim=16)
    image_proc = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = CLIPProcessor(image_processor=image_proc, tokenizer=tok)
    return _save(CLIPModel, config, processor, out_dir, seed)


def build_siglip(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny SigLIP matcher; it tokenizes with the byte-level CLIP tokenizer.

    Real SigLIP tokenizers are SentencePiece models that cannot be built without training
    data; the model side (sigmoid logits with a bias, text pooled at the last position, so
    texts must be padded to max_length) is what the matcher treats differently.
    """
    from transformers import CLIPImageProcessorPil, CLIPProcessor, SiglipConfig, SiglipModel

    tok = clip_tokenizer(max_length=32)
    text = dict(TEXT, max_position_embeddings=32, **_clip_text_ids(tok))
    config = SiglipConfig(text_config=text, vision_config=VISION)
    image_proc = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = CLIPProcessor(image_processor=image_proc, tokenizer=tok)
    return _save(SiglipModel, config, processor, out_dir, seed)


def build_blip(out_dir: str | Path, task: str = "vqa", seed: int = 0) -> Path:
    """Save a tiny BLIP for ``task`` "vqa" (question answering) or "caption", with its processor."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    tok = bert_tokenizer()
    # BLIP decodes from [DEC] and stops at [SEP], as the real checkpoints do.
    text = dict(
        TEXT,
        vocab_size=len(tok),
        max_position_embeddings=64,
        bos_token_id=tok.bos_token_id,
        sep_token_id=tok.sep_token_id,
        eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = BlipConfig(text_config=text, vision_config=VISION, projection_dim=HIDDEN)
    models = {"vqa": BlipForQuestionAnswering, "caption": BlipForConditionalGeneration}
    if task not in models:
        raise ValueError(f"BLIP task must be one of {sorted(models)}, got {task!r}")
    image_proc = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_proc, tokenizer=tok)
    return _save(models[task], config, processor, out_dir, seed)


def _save(model_cls, config, processor, out_dir: str | Path, seed: int, prepare=None) -> Path:
    """Initialise ``model_cls`` from ``config`` with a fixed seed and save it with its processor."""
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    if prepare is not None:
        prepare(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
