"""Lessons 4 and 5: img2img by hand == pipeline, negative prompt by hand == pipeline, long prompts, bad input."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline
from PIL import Image

import course_utils as cu
from course_utils import by_hand, img2img, long_prompt
from course_utils.models import configs

SIZE = 64  # the tiny model's size: latents 16x16
F = 4  # tiny's VAE downsamples 4x (3 blocks; SD 1.5: 8x)
TOL = 1e-4


@pytest.fixture(scope="module")
def img2img_pipe(tiny_pipe):
    """An img2img pipeline sharing the tiny text-to-image pipeline's modules."""
    pipe = StableDiffusionImg2ImgPipeline(**tiny_pipe.components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sketch():
    return cu.load_image("sketch.png", size=SIZE)


def gen(seed=0):
    return torch.Generator(device="cpu").manual_seed(seed)


@pytest.mark.parametrize("strength", [0.3, 0.75])
def test_img2img_by_hand_matches_pipeline(img2img_pipe, sketch, strength):
    prompt = cu.prompt("restyle", "tiny")
    theirs = img2img_pipe(
        prompt,
        image=sketch,
        strength=strength,
        num_inference_steps=8,
        guidance_scale=7.5,
        generator=gen(),
        output_type="latent",
    ).images
    mine = img2img.img2img_by_hand(img2img_pipe, sketch, prompt, strength, 8, 7.5, gen())
    assert mine.shape == (1, 4, SIZE // F, SIZE // F)
    assert (mine - theirs).abs().max().item() <= TOL


def test_img2img_step_by_step_matches_pipeline(img2img_pipe, sketch):
    """The four moves of lesson 4, spelled out, with a negative prompt and a generator drawn in the pipeline's order."""
    prompt, negative = cu.prompt("restyle", "tiny"), cu.prompt("negative", "tiny")
    theirs = img2img_pipe(
        prompt,
        image=sketch,
        strength=0.6,
        negative_prompt=negative,
        num_inference_steps=10,
        generator=gen(3),
        output_type="latent",
    ).images
    g = gen(3)
    ts = img2img.start_timesteps(img2img_pipe.scheduler, 10, 0.6)
    z0 = img2img.encode_image(img2img_pipe.vae, sketch, g)
    zt = img2img.noise_latents(img2img_pipe.scheduler, z0, ts[0], g)
    cond = by_hand.encode_text(img2img_pipe.tokenizer, img2img_pipe.text_encoder, prompt)
    uncond = by_hand.encode_text(img2img_pipe.tokenizer, img2img_pipe.text_encoder, negative)
    mine = by_hand.denoise(img2img_pipe.unet, img2img_pipe.scheduler, zt, cond, uncond, 7.5, timesteps=ts)
    assert (mine - theirs).abs().max().item() <= TOL


def test_img2img_by_hand_other_scheduler(img2img_pipe, sketch):
    original = img2img_pipe.scheduler
    img2img_pipe.scheduler = DDIMScheduler.from_config(original.config)
    try:
        theirs = img2img_pipe(
            "a cat", image=sketch, strength=0.5, num_inference_steps=6, generator=gen(1), output_type="latent"
        ).images
        mine = img2img.img2img_by_hand(img2img_pipe, sketch, "a cat", 0.5, 6, 7.5, gen(1))
        assert len(img2img.start_timesteps(img2img_pipe.scheduler, 6, 0.5)) == 3
    finally:
        img2img_pipe.scheduler = original
    assert (mine - theirs).abs().max().item() <= TOL


def test_negative_prompt_by_hand_matches_pipeline(tiny_pipe):
    pipe = tiny_pipe
    prompt, negative = cu.prompt("main", "tiny"), cu.prompt("negative", "tiny")
    theirs = pipe(
        prompt,
        negative_prompt=negative,
        height=SIZE,
        width=SIZE,
        num_inference_steps=5,
        guidance_scale=7.5,
        generator=gen(),
        output_type="latent",
    ).images
    cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
    uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, negative)
    pipe.scheduler.set_timesteps(5, device="cpu")
    x_T = by_hand.initial_latents(
        1, pipe.unet, pipe.scheduler, SIZE, SIZE, gen(), "cpu", cond.dtype, vae_scale_factor=pipe.vae_scale_factor
    )
    mine = by_hand.denoise(pipe.unet, pipe.scheduler, x_T, cond, uncond, 7.5)
    assert (mine - theirs).abs().max().item() <= TOL
    # ... and the empty prompt instead gives something else: the negative prompt does matter
    empty = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
    pipe.scheduler.set_timesteps(5, device="cpu")
    other = by_hand.denoise(pipe.unet, pipe.scheduler, x_T, cond, empty, 7.5)
    assert (other - theirs).abs().max().item() > 1e-3


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), "0.5"])
def test_strength_outside_range_is_a_course_error(strength):
    with pytest.raises(cu.CourseError, match="between 0 and 1"):
        img2img.check_strength(strength)


def test_strength_checked_before_any_work(img2img_pipe, sketch):
    with pytest.raises(cu.CourseError, match="strength"):
        img2img.img2img_by_hand(img2img_pipe, sketch, "a cat", strength=1.5, num_inference_steps=4)
    with pytest.raises(cu.CourseError):
        img2img.start_timesteps(img2img_pipe.scheduler, 10, 2)
    assert img2img.check_strength(0) == 0 and img2img.check_strength(1.0) == 1.0


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK"])
def test_image_modes_accepted(img2img_pipe, sketch, mode, capsys):
    odd = sketch.convert(mode)
    z0 = img2img.encode_image(img2img_pipe.vae, odd, gen())
    assert z0.shape == (1, 4, SIZE // F, SIZE // F)
    assert "converted to RGB" in capsys.readouterr().out


def test_size_not_multiple_of_8_is_rounded(img2img_pipe, capsys):
    image = Image.new("RGB", (70, 60), (120, 30, 200))
    loaded = img2img.load_init_image(image)
    assert loaded.size == (64, 56)
    assert "rounded down" in capsys.readouterr().out
    assert img2img.encode_image(img2img_pipe.vae, image, gen()).shape == (1, 4, 56 // F, 64 // F)


def test_start_timesteps_pndm_counts(img2img_pipe):
    scheduler = img2img_pipe.scheduler
    ts = img2img.start_timesteps(scheduler, 10, 0.6)
    assert ts.tolist() == [601, 501, 401, 301, 201, 101, 1]  # PNDM repeats its first step: 7 UNet calls for 6 steps
    assert scheduler.timesteps.tolist()[:3] == [901, 801, 801]
    assert len(img2img.start_timesteps(scheduler, 10, 1.0)) == 11
    assert len(img2img.start_timesteps(scheduler, 25, 0.3)) == int(25 * 0.3) + 1


def test_start_timesteps_matches_pipeline_get_timesteps(img2img_pipe):
    for steps, strength in [(10, 0.6), (25, 0.75), (50, 0.3), (7, 1.0)]:
        img2img_pipe.scheduler.set_timesteps(steps)
        expected, _ = img2img_pipe.get_timesteps(steps, strength, "cpu")
        assert torch.equal(img2img.start_timesteps(img2img_pipe.scheduler, steps, strength), expected)


def test_pndm_warm_up_lags_one_step_in_an_img2img_tail():
    """PNDM's two-call warm-up runs on a cut tail: from the third call on the latents are one step noisier."""
    z0, noise = torch.randn(1, 4, 16, 16, generator=gen(5)), torch.randn(1, 4, 16, 16, generator=gen(6))
    pndm = PNDMScheduler.from_config(configs.SD15_SCHEDULER)
    final_sigma = ((1 - pndm.alphas_cumprod[0]) / pndm.alphas_cumprod[0]).sqrt().item()
    tail = img2img.start_timesteps(pndm, 10, 0.6)
    assert tail.tolist() == [601, 501, 401, 301, 201, 101, 1] and not hasattr(pndm, "set_begin_index")
    told, held, (a, end) = img2img.noise_levels(pndm, tail, z0, noise)
    assert abs(held[0] - told[0]) < 1e-3 and abs(held[1] - told[1]) < 1e-3  # the warm-up: 601 -> 501, corrected
    assert abs(held[2] - told[1]) < 1e-3  # told 401, still at 501's noise level
    assert all(h > t * 1.05 for h, t in zip(held[2:], told[2:]))
    assert end > 5 * final_sigma and a < 0.9  # noise left, signal scaled down
    # the same tail with the repeat put back, as in the full list, follows the schedule exactly
    tail = img2img.start_timesteps(pndm, 10, 0.6)
    told, held, (a, end) = img2img.noise_levels(pndm, torch.cat([tail[:2], tail[1:]]), z0, noise)
    assert told[1] == told[2] and max(abs(h - t) for h, t in zip(held[2:], told[2:])) < 1e-3
    assert abs(end - final_sigma) < 1e-3
    # solvers without the warm-up call follow their tails exactly
    for cls, target in ((DDIMScheduler, final_sigma), (DPMSolverMultistepScheduler, 0.0)):
        solver = cls.from_config(pndm.config)
        told, held, (a, end) = img2img.noise_levels(solver, img2img.start_timesteps(solver, 10, 0.6), z0, noise)
        assert max(abs(h - t) for h, t in zip(held, told)) < 1e-3 and abs(end - target) < 1e-3 and abs(a - 1) < 1e-3
    # at strength 1 nothing is cut, and PNDM is exact too
    told, held, (a, end) = img2img.noise_levels(pndm, img2img.start_timesteps(pndm, 10, 1.0), z0, noise)
    assert max(abs(h - t) for h, t in zip(held, told)) < 1e-3 and abs(end - final_sigma) < 1e-3


def _long_prompts():
    """Two prompts past CLIP's 77 tokens that differ only after the cut (SD 1.5's prompts: same tokenizer)."""
    parts = [cu.prompt(n, "sd15") for n in ("main", "restyle", "describe_photo")]
    head = ", ".join(parts * 3)
    return head + ", " + cu.prompt("describe_photo", "sd15"), head + ", " + cu.prompt("restyle", "sd15")


def test_which_tokens_are_cut(tiny_pipe):
    tok = tiny_pipe.tokenizer
    assert long_prompt.which_tokens_are_cut(tok, cu.prompt("main", "tiny")) == []
    assert long_prompt.which_tokens_are_cut(tok, " ".join(["cat"] * 75)) == []
    assert long_prompt.which_tokens_are_cut(tok, " ".join(["cat"] * 75) + " red hat") == ["red", "hat"]
    long_a, _ = _long_prompts()
    cut = long_prompt.which_tokens_are_cut(tok, long_a)
    assert cut[-4:] == ["face", "with", "green", "eyes"]
    with long_prompt.captured_warnings() as messages, torch.no_grad():
        tiny_pipe.encode_prompt(long_a, "cpu", 1, False)
    assert any(" ".join(cut) in m for m in messages)  # the same text diffusers reports as truncated


def test_long_prompt_embeds_shapes_and_content(tiny_pipe):
    pipe = tiny_pipe
    hidden = pipe.text_encoder.config.hidden_size
    short = cu.prompt("main", "tiny")
    c, u = long_prompt.long_prompt_embeds(pipe, short, "blurry")
    with torch.no_grad():
        pc, pu = pipe.encode_prompt(short, "cpu", 1, True, "blurry")
    assert c.shape == u.shape == (1, 77, hidden)
    assert torch.allclose(c, pc, atol=1e-6) and torch.allclose(u, pu, atol=1e-6)  # one chunk == the pipeline's

    long_a, long_b = _long_prompts()
    ca, ua = long_prompt.long_prompt_embeds(pipe, long_a, "")
    cb, _ = long_prompt.long_prompt_embeds(pipe, long_b, "")
    assert ca.shape == ua.shape == (1, 154, hidden)
    assert torch.allclose(ca[:, :77], cb[:, :77])  # the first 75 tokens are the same ...
    assert (ca - cb).abs().max() > 1e-3  # ... and the words past them now count
    with torch.no_grad():
        pa, _ = pipe.encode_prompt(long_a, "cpu", 1, False)
        pb, _ = pipe.encode_prompt(long_b, "cpu", 1, False)
    assert torch.equal(pa, pb)  # whereas the pipeline cuts them off

    c, u = long_prompt.long_prompt_embeds(pipe, short, ", ".join(["blurry, low quality"] * 40))
    assert c.shape == u.shape == (1, 77 * 3, hidden)  # the short prompt is padded with empty chunks


def test_pipeline_accepts_long_embeds(tiny_pipe):
    long_a, _ = _long_prompts()
    c, u = long_prompt.long_prompt_embeds(tiny_pipe, long_a, cu.prompt("negative", "tiny"))
    out = tiny_pipe(
        prompt_embeds=c,
        negative_prompt_embeds=u,
        height=SIZE,
        width=SIZE,
        num_inference_steps=2,
        generator=gen(),
        output_type="latent",
    ).images
    assert out.shape == (1, 4, SIZE // F, SIZE // F) and torch.isfinite(out).all()
