"""Inpainting: repaint the white part of a mask, keep the rest (lesson 08).

SD 1.5's inpainting model is the text-to-image model with a wider first layer: its UNet
takes **9** input channels instead of 4 -

* 4: the noisy latents being denoised (as in text-to-image),
* 1: the mask, shrunk to latent size (1 = repaint, 0 = keep),
* 4: the *masked image* (the photo with the repaint region blanked to grey), VAE-encoded.

So at every step the model sees what is around the hole. The alternative for a plain
4-channel model is *latent blending*: after each step, paste the original latents
(re-noised to the next step's noise level) back outside the mask.

This module holds what lesson 08 derives: the 9 channels built exactly as ``StableDiffusionInpaintPipeline``
does (§3-4: the lesson writes them out in its cells and checks them against these functions), latent blending
(§5, likewise), how much a result changed inside and outside the mask (§2, §6), how sharply it steps across the
mask's border (§6) and pasting back (§6). Drawing,
loading and checking masks (§1) is :mod:`course_utils.masks`. The pipelines themselves come from the model layer
(``course_utils.models``), like every lesson's.
"""

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from . import by_hand


# --- the 9 channels by hand -----------------------------------------------------------------
@torch.no_grad()
def encode_image(pipe, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE-encode image tensors as the inpainting pipeline does: a *sample* of the latent
    distribution (drawn with ``generator``), times ``vae.config.scaling_factor``.

    Lesson 08, §3 writes it out (channels 5-8, checked via :func:`masked_image_inputs`); §5 checks its own
    encoding of the photo for latent blending against it.

    Args:
        pipe (`StableDiffusionInpaintPipeline`): gives the VAE.
        pixels (`torch.Tensor`): shape ``[batch, 3, height, width]``, values in [-1, 1].
        generator (`torch.Generator`, *optional*): the generator the pipeline was given.

    Returns:
        `torch.Tensor`: latents of shape ``[batch, 4, height/8, width/8]``.
    """
    # The inpainting pipeline's `repeat` leaves its copy in the standard memory layout; the VAE's output
    # may be channels-last on the CPU, and the UNet's convolutions then round differently (~1e-5).
    return by_hand.encode(pipe.vae, pixels, generator).contiguous()


def preprocess(pipe, image, mask, height: int | None = None, width: int | None = None) -> dict:
    """The pipeline's preprocessing of photo and mask (no randomness, no VAE).

    Lesson 08, §3 writes it out (moves 1-2: binarise the mask, blank the photo) and checks it via :func:`masked_image_inputs`.

    Args:
        pipe (`StableDiffusionInpaintPipeline`): gives ``image_processor`` and ``mask_processor``.
        image (`PIL.Image.Image`): the photo, RGB.
        mask (`PIL.Image.Image`): white = repaint, black = keep.
        height (`int`, *optional*): default as the pipeline: ``unet.config.sample_size * vae_scale_factor``.
        width (`int`, *optional*): likewise.

    Returns:
        `dict` with
            - ``"image"``: ``[1, 3, height, width]`` in [-1, 1], the photo;
            - ``"mask_image"``: ``[1, 1, height, width]``, the mask binarised to 0/1 (>= 0.5 -> 1);
            - ``"masked_image"``: ``[1, 3, height, width]``, the photo with the repaint region set to 0 (mid-grey).
    """
    factor = pipe.vae_scale_factor
    height = height or pipe.unet.config.sample_size * factor
    width = width or pipe.unet.config.sample_size * factor
    init_image = pipe.image_processor.preprocess(image, height=height, width=width).to(torch.float32)
    mask_image = pipe.mask_processor.preprocess(mask, height=height, width=width)  # grayscale, [0, 1], binarised
    masked_image = init_image * (mask_image < 0.5)  # keep where the mask is black; 0 (mid-grey) elsewhere
    return dict(image=init_image, mask_image=mask_image, masked_image=masked_image)


def masked_image_inputs(
    pipe, image, mask, generator: torch.Generator | None = None, height: int | None = None, width: int | None = None
) -> dict:
    """Build the inpainting UNet's extra inputs by hand, exactly as ``StableDiffusionInpaintPipeline`` does.

    Lesson 08, §3 writes this out (channels 4-8) and checks its own tensors against these; its exercise 1 too.

    Call it *after* drawing the initial noise with the same ``generator``: the VAE encoding of the
    masked image draws from the generator too, and the pipeline draws in this order -

    * 9-channel UNet (strength 1): noise, then the masked image;
    * 4-channel UNet (latent blending): the whole photo (``encode_image(pipe, preprocess(...)["image"], generator)``),
      then noise, then the masked image (computed although a 4-channel UNet does not use it).

    Args:
        pipe (`StableDiffusionInpaintPipeline`): gives the VAE, the image and mask processors.
        image (`PIL.Image.Image`): the photo, RGB.
        mask (`PIL.Image.Image`): white = repaint, black = keep.
        generator (`torch.Generator`, *optional*): the same generator the noise came from.
        height (`int`, *optional*): default as the pipeline: ``unet.config.sample_size * vae_scale_factor``.
        width (`int`, *optional*): likewise.

    Returns:
        `dict` with the three tensors of :func:`preprocess` and
            - ``"mask"``: ``[1, 1, height/f, width/f]`` (f = ``pipe.vae_scale_factor``: 8 for SD 1.5, 4 for `tiny`),
              the mask shrunk to latent size (nearest: the top-left pixel of each f x f block) - channel 4 (0-based);
            - ``"masked_image_latents"``: ``[1, 4, height/f, width/f]``, the VAE-encoded masked image
              x ``scaling_factor`` - channels 5-8.
    """
    out = preprocess(pipe, image, mask, height, width)
    h, w = out["mask_image"].shape[-2:]
    small = torch.nn.functional.interpolate(
        out["mask_image"], size=(h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
    )
    out["mask"] = small.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
    out["masked_image_latents"] = encode_image(pipe, out["masked_image"], generator)
    return out


def unet_input(latents: torch.Tensor, mask: torch.Tensor, masked_image_latents: torch.Tensor) -> torch.Tensor:
    """The 9-channel UNet input: ``cat([latents, mask, masked_image_latents], dim=1)``.

    Lesson 08, §3-4 write this concatenation out (``by_hand.denoise`` does it with ``extra_channels``).

    Args:
        latents (`torch.Tensor`): ``[batch, 4, h, w]`` (after ``scheduler.scale_model_input``).
        mask (`torch.Tensor`): ``[1, 1, h, w]``; repeated to the batch.
        masked_image_latents (`torch.Tensor`): ``[1, 4, h, w]``; repeated to the batch.

    Returns:
        `torch.Tensor`: ``[batch, 9, h, w]``.
    """
    n = latents.shape[0]
    return torch.cat([latents, mask.expand(n, -1, -1, -1), masked_image_latents.expand(n, -1, -1, -1)], dim=1)


def blend_latents(
    latents: torch.Tensor,
    image_latents: torch.Tensor,
    noise: torch.Tensor,
    mask: torch.Tensor,
    scheduler,
    next_timestep=None,
) -> torch.Tensor:
    """Latent blending, one step: keep ``latents`` inside the mask, the original outside.

    Lesson 08, §5 writes this step out inside its loop (``latents = mask * latents + (1 - mask) * noised_original``);
    the tests apply this function after every step of ``by_hand.denoise``.

    The original latents are first re-noised to ``next_timestep`` with the *initial* noise, so
    they are as noisy as the latents the next step expects. After the last step
    (``next_timestep=None``) the clean original latents are pasted.

    Args:
        latents (`torch.Tensor`): ``[1, 4, h, w]``, the result of ``scheduler.step``.
        image_latents (`torch.Tensor`): ``[1, 4, h, w]``, the photo's latents.
        noise (`torch.Tensor`): ``[1, 4, h, w]``, the initial noise.
        mask (`torch.Tensor`): ``[1, 1, h, w]``, 1 = repaint.
        scheduler (`SchedulerMixin`): the pipeline's scheduler (for ``add_noise``).
        next_timestep (`int`, *optional*): the timestep of the next step; `None` after the last.

    Returns:
        `torch.Tensor`: ``(1 - mask) * original + mask * latents``.
    """
    original = image_latents
    if next_timestep is not None:
        original = scheduler.add_noise(image_latents, noise, torch.tensor([int(next_timestep)]))
    return (1 - mask) * original + mask * latents


# --- results ----------------------------------------------------------------------------------
def region_change(before: Image.Image, after: Image.Image, mask: Image.Image) -> dict:
    """How much an edit changed the image inside and outside the mask.

    Lesson 08, §2 measures the pipeline's edit with it, §6 what changed outside the mask.

    Args:
        before (`PIL.Image.Image`): the original photo.
        after (`PIL.Image.Image`): the result (resized to ``before``'s size if it differs).
        mask (`PIL.Image.Image`): white (>= 128) = inside.

    Returns:
        `dict`: ``{"inside": float, "outside": float}``, the mean absolute pixel change in [0, 1]
        (0 = unchanged, 1 = black became white).
    """
    if after.size != before.size:
        after = after.resize(before.size)
    diff = np.abs(np.asarray(after.convert("RGB"), np.float32) - np.asarray(before.convert("RGB"), np.float32)) / 255
    inside = np.asarray(mask.convert("L").resize(before.size, Image.Resampling.NEAREST)) >= 128
    return dict(
        inside=float(diff[inside].mean()) if inside.any() else 0.0,
        outside=float(diff[~inside].mean()) if (~inside).any() else 0.0,
    )


def border_step(image: Image.Image, mask: Image.Image) -> float:
    """How sharply the picture changes across the mask's border: a seam shows as a large step.

    Lesson 08, §6 measures its results with it (and the appendix's sweep, "From lesson 08").

    Every pair of neighbouring pixels (left-right or up-down) with one pixel inside the mask and one
    outside counts once; the step of a pair is the mean absolute difference of its RGB values.
    Compare a result's step with the photo's own: a picture that goes on smoothly across the border
    steps about as much as the photo; an edit that does not fit its surroundings steps more.

    Args:
        image (`PIL.Image.Image`): the picture to measure (e.g. an inpainted result, pasted back).
        mask (`PIL.Image.Image`): white (>= 128) = inside; resized to ``image``'s size (nearest) if it differs.

    Returns:
        `float`: the mean step over the border's pairs, in [0, 1] (0 = no change across the border,
        1 = black next to white); 0 for a mask without a border (all black or all white).
    """
    x = np.asarray(image.convert("RGB"), np.float32) / 255
    inside = np.asarray(mask.convert("L").resize(image.size, Image.Resampling.NEAREST)) >= 128
    steps = [
        np.abs(x[1:] - x[:-1]).mean(-1)[inside[1:] != inside[:-1]],  # up-down pairs
        np.abs(x[:, 1:] - x[:, :-1]).mean(-1)[inside[:, 1:] != inside[:, :-1]],  # left-right pairs
    ]
    steps = np.concatenate(steps)
    return float(steps.mean()) if steps.size else 0.0


def paste_back(original: Image.Image, result: Image.Image, mask: Image.Image) -> Image.Image:
    """Put the original pixels back outside the mask (undoes the VAE round trip there).

    Lesson 08, §6 derives this.

    Uses diffusers' ``VaeImageProcessor.apply_overlay``: the result shows through where the mask is
    white, the original where it is black (grey mask values blend the two).

    Args:
        original (`PIL.Image.Image`): the photo.
        result (`PIL.Image.Image`): the pipeline's output, same size.
        mask (`PIL.Image.Image`): white = repaint.

    Returns:
        `PIL.Image.Image`: RGB.
    """
    if result.size != original.size:
        result = result.resize(original.size)
    return VaeImageProcessor().apply_overlay(mask.convert("L"), original.convert("RGB"), result)


__all__ = [
    "encode_image",
    "preprocess",
    "masked_image_inputs",
    "unet_input",
    "blend_latents",
    "region_change",
    "border_step",
    "paste_back",
]
