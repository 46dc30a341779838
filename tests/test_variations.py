"""Diffusers variations on a tiny Stable Diffusion pipeline built from configs (offline)."""

import json

import numpy as np
import pytest

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_models import clip_tokenizer

    torch.manual_seed(0)
    tok = clip_tokenizer(max_length=32)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=16)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=16)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, max_position_embeddings=32, vocab_size=len(tok),
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tok, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = tmp_path_factory.mktemp("sd") / "tiny-sd"
    pipe.save_pretrained(out)
    return out


def test_img2img_variations_seeded_and_saved(tiny_sd, tmp_path):
    from augment.variations import ImageVariations, save_variations

    gen = ImageVariations(tiny_sd)
    assert gen.kind == "img2img" and gen.dtype == "float32"
    images = [np.full((32, 32, 3), 60 * (i + 1), np.uint8) for i in range(2)]
    out = gen.generate(images, prompt="a red circle", n_per_image=2, seed=10, strength=0.6, steps=4,
                       guidance_scale=1.0, progress=False)
    assert [(v.source, v.seed) for v in out] == [(0, 10), (0, 11), (1, 12), (1, 13)]
    assert all(v.image.shape == (32, 32, 3) and v.image.dtype == np.uint8 for v in out)
    assert not np.array_equal(out[0].image, out[1].image)  # different seeds differ
    again = gen.generate(images[1:], prompt="a red circle", n_per_image=1, seed=12, strength=0.6, steps=4,
                         guidance_scale=1.0, batch_size=1, progress=False)
    assert np.array_equal(again[0].image, out[2].image)  # one output regenerates from its recorded seed
    folder = save_variations(out, tmp_path / "vars")
    manifest = json.loads((folder / "variations.json").read_text())
    assert [m["seed"] for m in manifest] == [10, 11, 12, 13] and (folder / manifest[0]["file"]).is_file()
    with pytest.raises(ValueError, match="strength"):
        gen.generate(images, strength=0)


def test_missing_model_fails_clearly(tmp_path):
    from augment.variations import ImageVariations

    with pytest.raises(FileNotFoundError, match="cannot load a diffusers pipeline"):
        ImageVariations(tmp_path / "nothing-here")
