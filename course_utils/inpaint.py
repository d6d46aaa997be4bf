"""Inpainting: repaint the white part of a mask, keep the rest (lesson 08).

SD 1.5's inpainting model is the text-to-image model with a wider first layer: its UNet
takes **9** input channels instead of 4 -

* 4: the noisy latents being denoised (as in text-to-image),
* 1: the mask, shrunk to latent size (1 = repaint, 0 = keep),
* 4: the *masked image* (the photo with the repaint region blanked to grey), VAE-encoded.

So at every step the model sees what is around the hole. The alternative for a plain
4-channel model is *latent blending*: after each step, paste the original latents
(re-noised to the next step's noise level) back outside the mask.

This module holds what lesson 08 derives: drawing and loading masks (§1), the 9 channels
built exactly as ``StableDiffusionInpaintPipeline`` does (§3-4: the lesson writes them out in its cells and
checks them against these functions), latent blending (§5, likewise),
how much a result changed inside and outside the mask (§2, §6) and pasting back (§6). The pipelines themselves
come from the model layer (``course_utils.models``), like every lesson's.
"""

from pathlib import Path

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageDraw

from . import by_hand
from .errors import CourseError
from .images import check_size, load_image
from .paths import DATA_DIR

# Where a hat goes on data/astronaut.png: an ellipse over the top of her head, as fractions
# (left, top, right, bottom) of the image's width and height (its top lies above the frame).
# Lesson 08, §1's `sd15` mask (via `lesson_mask`).
HAT_BOX = (0.26, -0.14, 0.64, 0.17)
# The box around the red circle of data/tiny_scene.png (64x64, centre (30, 34), radius 17; see
# tools/make_data.py) with 3 pixels to spare on each side, as fractions: pixels (10, 14, 50, 54).
# Lesson 08, §1's `tiny` mask (via `lesson_mask`).
TINY_SCENE_BOX = (10 / 64, 14 / 64, 50 / 64, 54 / 64)


# --- masks ----------------------------------------------------------------------------------
def _size(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _pixels(size, box) -> list[float]:
    """``box`` in pixels: ints are pixels, floats are fractions of width/height."""
    w, h = _size(size)
    if len(box) != 4:
        raise CourseError(f"A box is (left, top, right, bottom); got {box!r}.")
    return [v * (w if i % 2 == 0 else h) if isinstance(v, float) else v for i, v in enumerate(box)]


def rect_mask(size, box) -> Image.Image:
    """A mask with a white rectangle (the region to repaint) on black (the region to keep).

    Lesson 08, §1 draws masks with it (the `tiny` mask, and a wrong-size one for `check_mask`); its exercises too.

    Args:
        size (`int` or `tuple[int, int]`): the image's ``(width, height)`` (or a square's side).
        box (`tuple`): ``(left, top, right, bottom)``; ints are pixels, floats are fractions of
            the width/height (so ``(0.25, 0.0, 0.75, 0.5)`` fits any image size).

    Returns:
        `PIL.Image.Image`: mode ``"L"``, values 0 or 255, of size ``size``.
    """
    x0, y0, x1, y1 = _pixels(size, box)
    mask = Image.new("L", _size(size), 0)
    if x1 > x0 and y1 > y0:  # an empty box gives an all-black mask (nothing to repaint)
        ImageDraw.Draw(mask).rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
    return mask


def ellipse_mask(size, box) -> Image.Image:
    """A mask with a white ellipse inside ``box`` on black; like :func:`rect_mask`.

    Lesson 08, §1's `sd15` mask is one (via :func:`hat_mask`).

    Args:
        size (`int` or `tuple[int, int]`): the image's ``(width, height)``.
        box (`tuple`): the ellipse's bounding box ``(left, top, right, bottom)``; ints are pixels,
            floats fractions. It may reach outside the image (only the part inside is drawn).

    Returns:
        `PIL.Image.Image`: mode ``"L"``, values 0 or 255.
    """
    x0, y0, x1, y1 = _pixels(size, box)
    mask = Image.new("L", _size(size), 0)
    if x1 > x0 and y1 > y0:  # an empty box gives an all-black mask (nothing to repaint)
        ImageDraw.Draw(mask).ellipse([x0, y0, x1 - 1, y1 - 1], fill=255)
    return mask


def hat_mask(size) -> Image.Image:
    """The region where a hat goes on ``data/astronaut.png`` (an ellipse over her head, :data:`HAT_BOX`).

    Lesson 08, §1's `sd15` mask (via :func:`lesson_mask`).

    Args:
        size (`int` or `tuple[int, int]`): the image's ``(width, height)``; the ellipse scales with it.

    Returns:
        `PIL.Image.Image`: mode ``"L"``, white (255) = repaint, black (0) = keep.
    """
    return ellipse_mask(size, HAT_BOX)


def lesson_mask(profile: str, size) -> Image.Image:
    """The mask lesson 08, §1 repaints on ``cu.image_name("photo", profile)``.

    * `sd15` (and `sd15-random`): :func:`hat_mask`, an ellipse over the astronaut's head.
    * `tiny`: a rectangle around the red circle of ``data/tiny_scene.png`` (:data:`TINY_SCENE_BOX`).

    Args:
        profile (`str`): ``"sd15"``, ``"tiny"`` or ``"sd15-random"``.
        size (`int` or `tuple[int, int]`): the image's ``(width, height)``; the box scales with it.

    Returns:
        `PIL.Image.Image`: mode ``"L"``, white (255) = repaint, black (0) = keep.
    """
    if profile == "tiny":
        return rect_mask(size, TINY_SCENE_BOX)
    return hat_mask(size)


def load_mask(path_or_image, size=None) -> Image.Image:
    """Open a mask as a mode ``"L"`` image: white (255) = repaint, black (0) = keep.

    Lesson 08, §1 gives the rules it enforces (white = repaint, binarised at 128); :func:`load_pair` calls it.

    RGB/palette masks are converted to grayscale. Masks with transparency (RGBA, LA) are put on
    black, so transparent pixels are kept and opaque painted strokes are repainted. Grey values
    are allowed, but ``StableDiffusionInpaintPipeline`` binarises the mask at 0.5: values >= 128
    are repainted, the rest kept (a note says so when the mask is not pure black and white).

    Args:
        path_or_image (`str`, `Path` or `PIL.Image.Image`): a file, a bare name of a file in ``data/``,
            or an image.
        size (`int` or `tuple[int, int]`, *optional*): resize to this ``(width, height)``
            (nearest neighbour, so a black-and-white mask stays black and white).

    Returns:
        `PIL.Image.Image`: mode ``"L"``.

    Raises:
        CourseError: no such file, or not an image.
    """
    if isinstance(path_or_image, Image.Image):
        mask, name = path_or_image, "mask"
    else:
        path = Path(path_or_image).expanduser()
        if not path.exists() and (DATA_DIR / path).exists():
            path = DATA_DIR / path
        if not path.exists():
            raise CourseError(f"No mask image at '{path_or_image}' (looked in {Path.cwd()} and {DATA_DIR}).")
        try:
            mask = Image.open(path)
            mask.load()
        except Exception as err:
            raise CourseError(f"'{path}' is not an image PIL can read ({err}).") from None
        name = path.name
    if mask.mode != "L":
        mode = mask.mode
        if mode == "P" and "transparency" in mask.info:
            mask = mask.convert("RGBA")
        if mask.mode in ("RGBA", "LA", "PA"):
            rgba = mask.convert("RGBA")
            mask = Image.new("L", rgba.size, 0)
            mask.paste(rgba.convert("L"), mask=rgba.getchannel("A"))
            print(f"note: {name} was mode {mode}, converted to L on black (transparent = keep)")
        else:
            mask = mask.convert("L")
            print(f"note: {name} was mode {mode}, converted to L (grayscale)")
    if size is not None:
        mask = mask.resize(_size(size), Image.Resampling.NEAREST)
    grey = np.count_nonzero((np.asarray(mask) > 0) & (np.asarray(mask) < 255))
    if grey:
        print(f"note: {name} has {grey} grey pixels; the pipeline repaints values >= 128 and keeps the rest")
    return mask


def check_mask(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Check that ``mask`` fits ``image`` and return it as mode ``"L"``.

    Lesson 08, §1 shows its error ("same size as the photo, pixel for pixel").

    Args:
        image (`PIL.Image.Image`): the photo to edit; its sides must be multiples of 8.
        mask (`PIL.Image.Image`): white = repaint, black = keep.

    Returns:
        `PIL.Image.Image`: the mask in mode ``"L"`` (see :func:`load_mask`).

    Raises:
        CourseError: the sizes differ (the message gives both and how to fix it), or the image's
            sides are not multiples of 8.
    """
    if mask.size != image.size:
        (mw, mh), (iw, ih) = mask.size, image.size
        raise CourseError(
            f"The mask is {mw}x{mh} but the image is {iw}x{ih}: they must be the same size, pixel for pixel "
            f"(white = repaint, black = keep). Resize the mask with load_mask(mask, size=({iw}, {ih})), "
            f"or draw it for this size, e.g. rect_mask(({iw}, {ih}), box)."
        )
    check_size(*image.size)
    return mask if mask.mode == "L" else load_mask(mask)


def load_pair(image, mask, size=None) -> tuple[Image.Image, Image.Image]:
    """Load a photo and its mask, ready for the pipeline: RGB image, ``"L"`` mask, same size.

    Lesson 08, §1 loads its photo and mask with it.

    Args:
        image (`str`, `Path` or `PIL.Image.Image`): the photo (any mode; RGBA/grayscale are
            converted to RGB with a note, see :func:`course_utils.load_image`).
        mask (`str`, `Path` or `PIL.Image.Image`): the mask (see :func:`load_mask`).
        size (`int` or `tuple[int, int]`, *optional*): resize both to this ``(width, height)``.

    Returns:
        `tuple[PIL.Image.Image, PIL.Image.Image]`: ``(image, mask)``.

    Raises:
        CourseError: as :func:`check_mask`.
    """
    image = load_image(image, size=size)
    mask = load_mask(mask, size=image.size if size is not None else None)
    return image, check_mask(image, mask)


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
        scheduler: the pipeline's scheduler (for ``add_noise``).
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
    "HAT_BOX",
    "TINY_SCENE_BOX",
    "rect_mask",
    "ellipse_mask",
    "hat_mask",
    "lesson_mask",
    "load_mask",
    "check_mask",
    "load_pair",
    "encode_image",
    "preprocess",
    "masked_image_inputs",
    "unet_input",
    "blend_latents",
    "region_change",
    "paste_back",
]
