"""Inpainting (lesson 08): the tiny 9-channel model, masks, and the by-hand mechanisms == the pipeline."""

import copy

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline
from PIL import Image

import course_utils as cu
from course_utils import by_hand, inpaint, masks
from course_utils.models import builders, configs, surgery

SIZE = 64  # the tiny model's size: latents [1, 4, 16, 16]
F = 4  # tiny's VAE downsamples 4x (3 blocks; SD 1.5: 8x)
STEPS = 3


@pytest.fixture(scope="module")
def inpaint_pipe():
    return cu.load_pipeline("inpaint", profile="tiny", device="cpu")


@pytest.fixture(scope="module")
def photo_and_mask():
    return masks.load_pair("astronaut.png", masks.hat_mask(SIZE), size=SIZE)


def test_load_pipeline_gives_a_9_channel_inpaint_pipeline(inpaint_pipe):
    assert isinstance(inpaint_pipe, StableDiffusionInpaintPipeline)
    assert inpaint_pipe.unet.config.in_channels == 9 and inpaint_pipe.unet.config.out_channels == 4
    assert str(cu.model_source("inpaint", profile="tiny")) == str(builders.tiny_inpaint_folder())


def test_inpaint_unet_from_zeroes_the_extra_channels(tiny_pipe):
    """How SD's (and tiny's) inpainting UNet starts: the text2img UNet with 5 zeroed input channels."""
    plain = tiny_pipe.unet
    wide = surgery.inpaint_unet_from(plain)
    w = wide.conv_in.weight
    assert w.shape[1] == 9
    assert torch.equal(w[:, :4], plain.conv_in.weight) and (w[:, 4:] == 0).all()
    # zeroed extra channels: the output equals the text2img UNet's, whatever the mask channels hold
    g = torch.Generator().manual_seed(0)
    n, hidden = SIZE // F, tiny_pipe.text_encoder.config.hidden_size
    x, extra, c = (
        torch.randn(1, 4, n, n, generator=g),
        torch.randn(1, 5, n, n, generator=g),
        torch.randn(1, 77, hidden, generator=g),
    )
    with torch.no_grad():
        a = wide(torch.cat([x, extra], 1), 500, encoder_hidden_states=c).sample
        b = plain(x, 500, encoder_hidden_states=c).sample
    assert (a - b).abs().max().item() <= 1e-5


def test_tiny_inpaint_shares_text_encoder_and_vae(inpaint_pipe, tiny_pipe):
    """The trained inpainting UNet is its own; everything else is the text-to-image model's."""
    assert torch.equal(
        inpaint_pipe.text_encoder.get_input_embeddings().weight, tiny_pipe.text_encoder.get_input_embeddings().weight
    )
    assert torch.equal(inpaint_pipe.vae.encoder.conv_in.weight, tiny_pipe.vae.encoder.conv_in.weight)
    assert inpaint_pipe.scheduler.config == tiny_pipe.scheduler.config
    # trained on masks: the mask channels are no longer zero
    assert inpaint_pipe.unet.conv_in.weight[:, 4:].abs().max() > 0


def _nonzero_extra_channels(pipe):
    """A copy of ``pipe`` whose UNet reads the mask channels (as a trained model does)."""
    unet = copy.deepcopy(pipe.unet)
    with torch.no_grad():
        unet.conv_in.weight[:, 4:] = (
            torch.randn(unet.conv_in.weight[:, 4:].shape, generator=torch.Generator().manual_seed(1)) * 0.1
        )
    return StableDiffusionInpaintPipeline(**dict(pipe.components, unet=unet), requires_safety_checker=False)


def test_by_hand_equals_pipeline(inpaint_pipe, photo_and_mask):
    image, mask = photo_and_mask
    pipe = _nonzero_extra_channels(inpaint_pipe)
    pipe.set_progress_bar_config(disable=True)
    prompt, w = "an astronaut wearing a hat", 7.5
    seen = {}

    def keep(p, i, t, tensors):
        seen.update({k: v.clone() for k, v in tensors.items()})
        return tensors

    pipe(
        prompt,
        image=image,
        mask_image=mask,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=w,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=keep,
        callback_on_step_end_tensor_inputs=["latents", "mask", "masked_image_latents"],
    )

    g = torch.Generator().manual_seed(0)
    pipe.scheduler.set_timesteps(STEPS)
    noise = by_hand.initial_latents(
        1, pipe.unet, pipe.scheduler, SIZE, SIZE, g, "cpu", torch.float32, vae_scale_factor=pipe.vae_scale_factor
    )
    parts = inpaint.masked_image_inputs(pipe, image, mask, g, height=SIZE, width=SIZE)
    assert parts["mask"].shape == (1, 1, SIZE // F, SIZE // F) and parts["masked_image_latents"].shape == (
        1,
        4,
        SIZE // F,
        SIZE // F,
    )
    assert set(parts["mask"].unique().tolist()) <= {0.0, 1.0}
    assert (seen["mask"][:1] - parts["mask"]).abs().max() <= 1e-6
    assert (seen["masked_image_latents"][:1] - parts["masked_image_latents"]).abs().max() <= 1e-5
    cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
    uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
    extra = torch.cat([parts["mask"], parts["masked_image_latents"]], 1)
    assert inpaint.unet_input(noise, parts["mask"], parts["masked_image_latents"]).shape == (1, 9, SIZE // F, SIZE // F)
    latents = by_hand.denoise(pipe.unet, pipe.scheduler, noise, cond, uncond, w, extra_channels=extra)
    assert (latents - seen["latents"]).abs().max().item() <= 1e-4
    # the mask channels matter for this UNet: another mask gives other latents
    pipe.scheduler.set_timesteps(STEPS)
    other = torch.cat([1 - parts["mask"], parts["masked_image_latents"]], 1)
    assert (
        by_hand.denoise(pipe.unet, pipe.scheduler, noise, cond, uncond, w, extra_channels=other) - latents
    ).abs().max() > 1e-3


def test_blending_with_a_4_channel_unet(tiny_pipe, photo_and_mask):
    image, mask = photo_and_mask
    pipe = StableDiffusionInpaintPipeline.from_pipe(tiny_pipe)
    assert pipe.unet.config.in_channels == 4
    prompt, w = "an astronaut wearing a hat", 7.5
    seen = {}

    def keep(p, i, t, tensors):
        seen.update({k: v.clone() for k, v in tensors.items()})
        return tensors

    out = pipe(
        prompt,
        image=image,
        mask_image=mask,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=w,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=keep,
    ).images[0]
    assert out.size == (SIZE, SIZE)

    g = torch.Generator().manual_seed(0)  # the blending pipeline's order: photo, noise, masked photo
    image_latents = inpaint.encode_image(pipe, inpaint.preprocess(pipe, image, mask, SIZE, SIZE)["image"], g)
    pipe.scheduler.set_timesteps(STEPS)
    noise = by_hand.initial_latents(
        1, pipe.unet, pipe.scheduler, SIZE, SIZE, g, "cpu", torch.float32, vae_scale_factor=pipe.vae_scale_factor
    )
    parts = inpaint.masked_image_inputs(pipe, image, mask, g, height=SIZE, width=SIZE)
    timesteps = pipe.scheduler.timesteps

    def paste(i, t, latents):
        nxt = timesteps[i + 1] if i + 1 < len(timesteps) else None
        return inpaint.blend_latents(latents, image_latents, noise, parts["mask"], pipe.scheduler, nxt)

    cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
    uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
    latents = by_hand.denoise(pipe.unet, pipe.scheduler, noise, cond, uncond, w, on_step=paste)
    assert (latents - seen["latents"]).abs().max().item() <= 1e-4
    outside = (parts["mask"] < 0.5).expand_as(latents)
    assert outside.any() and torch.equal(seen["latents"][outside], image_latents[outside])


def test_thin_mask_lines_at_latent_size(inpaint_pipe, photo_and_mask):
    """Lesson 8, exercise 1: nearest-neighbour keeps the top-left pixel of each f x f block."""
    image, _ = photo_and_mask
    f = inpaint_pipe.vae_scale_factor
    cells = {}
    for left in (8 * f + 1, 8 * f):
        line = masks.rect_mask(SIZE, (left, 0, left + 2, SIZE))
        cells[left] = inpaint.masked_image_inputs(inpaint_pipe, image, line, torch.Generator().manual_seed(0))["mask"]
    assert cells[8 * f + 1].sum() == 0  # misses every sampled column: gone at latent size
    assert cells[8 * f].sum() == SIZE // f and cells[8 * f][0, 0, :, 8].eq(1).all()  # one whole column
    # any f neighbouring pixels hold a sampled one
    for left in range(f, 2 * f):
        wide = masks.rect_mask(SIZE, (left, 0, left + f, SIZE))
        assert (
            inpaint.masked_image_inputs(inpaint_pipe, image, wide, torch.Generator().manual_seed(0))["mask"].sum()
            == SIZE // f
        )


def test_blend_written_out_equals_blend_latents(tiny_pipe):
    """Lesson 8, §5 writes the blend as ``mask * latents + (1 - mask) * noised_original``."""
    g = torch.Generator().manual_seed(0)
    latents, photo, noise = (torch.randn(1, 4, 16, 16, generator=g) for _ in range(3))
    mask = (torch.rand(1, 1, 16, 16, generator=g) > 0.5).float()
    scheduler = tiny_pipe.scheduler
    scheduler.set_timesteps(5)
    for nxt in (scheduler.timesteps[1], None):
        original = photo if nxt is None else scheduler.add_noise(photo, noise, torch.tensor([int(nxt)]))
        written_out = mask * latents + (1 - mask) * original
        assert torch.equal(written_out, inpaint.blend_latents(latents, photo, noise, mask, scheduler, nxt))


def test_mask_of_the_wrong_size():
    image = Image.new("RGB", (64, 64))
    with pytest.raises(cu.CourseError) as info:
        masks.check_mask(image, Image.new("L", (300, 200)))
    message = str(info.value)
    assert "300x200" in message and "64x64" in message and "load_mask" in message
    with pytest.raises(cu.CourseError, match="300x200"):
        masks.load_pair(image, Image.new("L", (300, 200)))
    with pytest.raises(cu.CourseError, match="multiple of 8"):
        masks.check_mask(Image.new("RGB", (60, 60)), Image.new("L", (60, 60)))
    with pytest.raises(cu.CourseError, match="No mask image"):
        masks.load_mask("no-such-mask.png")


def test_image_and_mask_modes_are_converted(capsys):
    rgba = Image.new("RGBA", (64, 64), (10, 20, 30, 0))
    gray = Image.new("L", (64, 64), 100)
    for photo in (rgba, gray):
        image, mask = masks.load_pair(photo, masks.rect_mask(64, (0, 0, 32, 32)))
        assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size == (64, 64)
    assert "converted to RGB" in capsys.readouterr().out
    # an RGBA mask: transparent = keep (0), opaque white strokes = repaint (255)
    strokes = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    strokes.paste((255, 255, 255, 255), (0, 0, 16, 16))
    mask = masks.load_mask(strokes)
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 255 and mask.getpixel((40, 40)) == 0
    assert masks.load_mask(Image.new("RGB", (8, 8), "white")).getpixel((0, 0)) == 255
    masks.load_mask(Image.new("L", (8, 8), 100))
    assert "grey pixels" in capsys.readouterr().out


def test_masks_by_code():
    m = masks.rect_mask((64, 32), (0.5, 0.0, 1.0, 0.5))  # fractions
    a = np.asarray(m)
    assert m.mode == "L" and a.shape == (32, 64) and set(np.unique(a)) == {0, 255}
    assert a[:16, 32:].all() and not a[16:].any() and not a[:, :32].any()
    assert np.array_equal(a, np.asarray(masks.rect_mask((64, 32), (32, 0, 64, 16))))  # pixels
    assert not np.asarray(masks.rect_mask(64, (0, 0, 0, 0))).any()
    hat = np.asarray(masks.hat_mask(256)) > 0
    assert 0.02 < hat.mean() < 0.2 and not hat[128:].any()  # on top of her head, not below


def test_region_change_and_paste_back(photo_and_mask):
    image, mask = photo_and_mask
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    before = inpaint.region_change(image, noise, mask)
    assert before["inside"] > 0.1 and before["outside"] > 0.1
    pasted = inpaint.paste_back(image, noise, mask)
    after = inpaint.region_change(image, pasted, mask)
    assert after["outside"] == 0.0 and abs(after["inside"] - before["inside"]) < 1e-6


def test_border_step_measures_the_step_across_the_mask_border():
    """Lesson 8, §6: a seam is a step across the mask's border; a picture that goes on across it has none."""
    mask = masks.rect_mask(8, (2, 2, 6, 6))  # a 4x4 box: 16 border pairs (4 on each side)
    plain = Image.new("RGB", (8, 8), (30, 80, 220))
    assert inpaint.border_step(plain, mask) == 0.0
    patched = plain.copy()
    patched.paste((255, 255, 255), (2, 2, 6, 6))  # the box painted white: every border pair steps the same
    expected = np.abs(np.array([255, 255, 255]) - np.array([30, 80, 220])).mean() / 255
    assert inpaint.border_step(patched, mask) == pytest.approx(expected)
    half = plain.copy()
    half.paste((255, 255, 255), (2, 2, 4, 6))  # only the box's left half: its right side does not step
    assert inpaint.border_step(half, mask) == pytest.approx(expected * 8 / 16)
    assert inpaint.border_step(plain, masks.rect_mask(8, (0, 0, 0, 0))) == 0.0  # no border
    assert inpaint.border_step(patched, masks.rect_mask(16, (4, 4, 12, 12))) == pytest.approx(expected)  # mask resized


def test_sd15_random_has_9_channels(monkeypatch):
    # the full-size model takes ~4 GB; the same code with the tiny sizes checks the wiring
    monkeypatch.setattr(configs, "SD15_INPAINT_UNET", configs.TINY_INPAINT_UNET)
    monkeypatch.setattr(configs, "SD15_TEXT_ENCODER", configs.TINY_TEXT_ENCODER)
    monkeypatch.setattr(configs, "SD15_VAE", configs.TINY_VAE)
    pipe = builders.random_inpaint()
    assert isinstance(pipe, StableDiffusionInpaintPipeline) and pipe.unet.config.in_channels == 9


def test_lesson_mask_covers_the_tiny_circle():
    image = np.asarray(cu.load_image("tiny_scene.png"))
    red = (image[..., 0] > 150) & (image[..., 2] < 120)  # the circle's pixels (red on blue)
    mask = np.asarray(masks.lesson_mask("tiny", 64)) > 127
    assert red.sum() > 500 and mask[red].all() and mask.mean() < 0.5
    assert masks.lesson_mask("tiny", 128).size == (128, 128)
    assert np.array_equal(np.asarray(masks.lesson_mask("sd15", 64)), np.asarray(masks.hat_mask(64)))
