"""What lessons 1 and 2 rely on: seeds, CLIP's token ids and 77-token window, PNDM's timesteps,
the VAE's 48x compression, and components loaded one by one == the pipeline (on `tiny`)."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

import course_utils as cu
from course_utils.models.builders import load_tokenizer, pndm_scheduler

ASTRONAUT_IDS = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
FAST = dict(height=64, width=64, num_inference_steps=3, guidance_scale=7.5)


def _generate(pipe, seed, **kwargs):
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return pipe(cu.prompt("main", "tiny"), generator=generator, output_type="np", **{**FAST, **kwargs}).images


def test_astronaut_token_ids_and_padding():
    tokenizer = load_tokenizer()
    prompt = cu.prompt("main", "sd15")
    assert tokenizer(prompt).input_ids == ASTRONAUT_IDS
    padded = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids
    assert tokenizer.model_max_length == 77 and len(padded) == 77
    assert padded[:10] == ASTRONAUT_IDS and set(padded[10:]) == {tokenizer.pad_token_id} == {49407}


def test_truncation_keeps_75_text_tokens_and_pipeline_encodes_exactly_those(tiny_pipe):
    tokenizer = tiny_pipe.tokenizer
    long_prompt = ", ".join([cu.prompt("main", "tiny")] * 12)
    all_ids = tokenizer(long_prompt).input_ids
    assert len(all_ids) > 77
    kept = tokenizer(long_prompt, padding="max_length", max_length=77, truncation=True).input_ids
    assert kept[:76] == all_ids[:76] and kept[76] == tokenizer.eos_token_id
    assert tokenizer.decode(all_ids[76:-1])  # something is cut off
    embeds, _ = tiny_pipe.encode_prompt(long_prompt, "cpu", 1, False)
    with torch.no_grad():
        expected = tiny_pipe.text_encoder(torch.tensor([kept]))[0]
    assert torch.equal(embeds, expected)


def test_pndm_takes_its_first_step_twice():
    scheduler = pndm_scheduler()
    for steps in (10, 25, 50):
        scheduler.set_timesteps(steps)
        timesteps = scheduler.timesteps.tolist()
        assert len(timesteps) == steps + 1
        assert timesteps[1] == timesteps[2] and len(set(timesteps)) == steps
        assert timesteps == sorted(timesteps, reverse=True)


def test_same_seed_same_image_other_seed_other_image(tiny_pipe):
    a, b, c = _generate(tiny_pipe, 0), _generate(tiny_pipe, 0), _generate(tiny_pipe, 1)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_num_images_per_prompt_gives_distinct_images(tiny_pipe):
    images = _generate(tiny_pipe, 10, num_images_per_prompt=2)
    assert images.shape == (2, 64, 64, 3) and np.abs(images[0] - images[1]).max() > 0.1


def test_tiny_has_no_safety_checker(tiny_pipe):
    assert tiny_pipe.safety_checker is None and tiny_pipe.feature_extractor is None
    generator = torch.Generator(device="cpu").manual_seed(0)
    out = tiny_pipe("x", generator=generator, **{**FAST, "num_inference_steps": 1})
    assert out.nsfw_content_detected is None


@pytest.fixture(scope="module")
def components():
    src = cu.model_source("text2img", profile="tiny")
    f32 = dict(
        dtype=torch.float32
    )  # what the lessons pass on the CPU (it is also the default: data/tiny declares float32)
    return dict(
        tokenizer=CLIPTokenizer.from_pretrained(src, subfolder="tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **f32),
        unet=UNet2DConditionModel.from_pretrained(src, subfolder="unet", **f32),
        scheduler=PNDMScheduler.from_pretrained(src, subfolder="scheduler"),
        vae=AutoencoderKL.from_pretrained(src, subfolder="vae", **f32),
    )


def test_vae_latents_are_12x_smaller(components):
    """tiny's VAE halves twice (SD 1.5's three times: 48x); its scaling_factor was measured in training."""
    vae = components["vae"]
    image = cu.load_image("tiny_scene.png", size=64)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    generator = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.sample(generator) * vae.config.scaling_factor
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
    assert vae.config.scaling_factor != pytest.approx(0.18215)
    assert tuple(latents.shape) == (1, 4, 16, 16) and decoded.shape == x.shape
    assert x.numel() // latents.numel() == 12


def test_components_one_by_one_make_the_same_pipeline(components, tiny_pipe):
    assembled = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    assembled.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(0)
    latents = assembled("a cat", generator=generator, output_type="latent", **FAST).images
    with torch.no_grad():
        by_hand = (components["vae"].decode(latents / components["vae"].config.scaling_factor).sample / 2 + 0.5).clamp(
            0, 1
        )
    generator = torch.Generator(device="cpu").manual_seed(0)
    from_pipe = tiny_pipe("a cat", generator=generator, output_type="np", **FAST).images
    assert np.abs(by_hand.permute(0, 2, 3, 1).numpy() - from_pipe).max() <= 1e-4
