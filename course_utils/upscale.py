"""The x4 upscaler (``stabilityai/stable-diffusion-x4-upscaler``): what lesson 06 derives.

The upscaler is a latent diffusion model like SD 1.5, with three differences the lesson shows:

* its UNet takes **7** input channels: the 4 noisy latents plus the 3 RGB channels of the
  low-resolution image, concatenated at every step (``unet.config.in_channels == 7``);
* the low-res image is first noised by a second scheduler (``low_res_scheduler``, a
  ``DDPMScheduler``) to ``noise_level`` (0 .. ``max_noise_level`` = 350), and the UNet is told
  that level through a class embedding (``num_class_embeds=1000``);
* its VAE has 3 blocks, so it shrinks images **4x** (not 8x) and its ``scaling_factor`` is
  0.08333 (SD 1.5: 0.18215). The latent of a 512x512 output is 128x128, the size of the input.

Its architecture is ``course_utils.models.configs.X4_UPSCALER_*``; the `tiny` and `sd15-random`
upscalers are built by ``course_utils.models.builders``. Here: the input checks and measures of
the lesson - the original photo and its low-resolution input (§1), ``noise_level``'s range (§3)
and PSNR (§2).
"""

import numbers

import numpy as np
from PIL import Image

from .errors import CourseError

# The settings `tiny`'s model card scores the upscaler with (``python -m course_utils evaluate``; lesson 06 uses them
# on `tiny`): guidance 1 switches classifier-free guidance off, which keeps the result closest to the input.
SCORE_SETTINGS = dict(num_inference_steps=25, noise_level=20, guidance_scale=1.0)


def check_noise_level(pipe, noise_level) -> int:
    """Raise a clear error unless ``noise_level`` is a whole number in ``[0, pipe.config.max_noise_level]``.

    Lesson 06, §3 derives the range and shows this error next to diffusers'.

    diffusers itself only rejects values above the maximum (with a ``ValueError``); a negative
    value would silently index the noise schedule from its end, then crash in the UNet's
    class embedding.

    Args:
        pipe (`StableDiffusionUpscalePipeline`): the upscaler (its ``config.max_noise_level``, 350).
        noise_level (`int`): how much noise is added to the low-res image before it conditions the UNet.

    Returns:
        `int`: ``noise_level`` unchanged.

    Raises:
        CourseError: the value is not a whole number, or outside the allowed range.
    """
    top = int(pipe.config.max_noise_level)
    what = (
        "noise_level is how much noise the upscaler adds to the low-res image before the UNet sees it "
        "(a step of its low_res_scheduler, also passed to the UNet as a label): 0 keeps the input as it is, "
        "higher values let the model invent more detail and drift further from the input; the default is 20."
    )
    if isinstance(noise_level, bool) or not isinstance(noise_level, numbers.Integral):
        raise CourseError(f"noise_level must be a whole number from 0 to {top}, got {noise_level!r}. {what}")
    if not 0 <= noise_level <= top:
        raise CourseError(
            f"noise_level={noise_level} is outside the allowed range [0, {top}] (pipe.config.max_noise_level; "
            f"the model was trained only up to {top}). {what}"
        )
    return int(noise_level)


def fit_for_upscaling(image: Image.Image, max_side: int, factor: int = 4) -> Image.Image:
    """The original of an upscaling experiment: a photo shrunk (never enlarged) and cropped, never stretched (lesson 06, §1).

    1. If the longer side is above ``max_side``, shrink the photo (Lanczos) so that it is ``max_side``,
       keeping the aspect ratio. A photo is never enlarged: enlarging invents no detail, and the
       upscaler would then be judged against an original that is itself blurred.
    2. Crop the centre, so that each side is a multiple of ``8 * factor`` (what :func:`low_res_input`
       needs); at most ``8 * factor - 1`` pixels go per side.

    ``chelsea.png`` (451x300) becomes 448x288 with ``max_side=512``: cropped, not resized.

    Args:
        image (`PIL.Image.Image`): the photo, any size and mode.
        max_side (`int`): the largest side wanted, e.g. the profile's ``width`` (512 for `sd15`).
        factor (`int`, defaults to 4): how much smaller the low-res input will be.

    Returns:
        `PIL.Image.Image`: RGB, each side a multiple of ``8 * factor`` and at most ``max_side``.

    Raises:
        CourseError: a side would end up shorter than ``8 * factor``.
    """
    step = 8 * factor
    image = image.convert("RGB")
    w, h = image.size
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    cw, ch = w // step * step, h // step * step
    if cw == 0 or ch == 0:
        raise CourseError(
            f"A {w}x{h} picture is too small to crop to sides that are multiples of {step} (the x{factor} upscaler's "
            f"low-res input needs sides that are multiples of 8): use a larger picture or a larger max_side."
        )
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def low_res_input(image: Image.Image, factor: int = 4) -> Image.Image:
    """Make the low-resolution input of an upscaling experiment from a photo (lesson 06, §1).

    Each ``factor x factor`` block of pixels is averaged into one (``Image.Resampling.BOX``),
    like a camera with bigger pixels. The original stays the reference to compare against.

    Args:
        image (`PIL.Image.Image`): the photo, RGB, e.g. ``fit_for_upscaling(cu.load_image("chelsea.png"), 512)``.
        factor (`int`, defaults to 4): how much smaller; the x4 upscaler undoes 4.

    Returns:
        `PIL.Image.Image`: RGB, ``width/factor x height/factor`` (e.g. 448x288 -> 112x72).

    Raises:
        CourseError: the result would not have sides that are multiples of 8 (the upscaler's
            UNet halves its latent three times; its latent is as big as this image).
    """
    w, h = image.size
    lw, lh = w // factor, h // factor
    if w % factor or h % factor or lw % 8 or lh % 8 or lw == 0 or lh == 0:
        step = 8 * factor
        raise CourseError(
            f"A {w}x{h} image does not shrink {factor}x to sides that are multiples of 8 (it would be {lw}x{lh}). "
            f"Use sides that are multiples of {step}, e.g. cu.load_image(..., size=({max(step, w // step * step)}, "
            f"{max(step, h // step * step)}))."
        )
    return image.convert("RGB").resize((lw, lh), Image.Resampling.BOX)


def psnr(image: Image.Image, reference: Image.Image) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``reference``, in dB (higher = closer).

    Lesson 06, §2 compares bicubic and the upscaler with it; used again in §3's ``noise_level`` sweep.

    ``10 * log10(1 / mean((image - reference)^2))`` on pixel values in [0, 1]; about 20-30 dB is
    typical for a 4x upscale of a photo. PSNR rewards blur over plausible invented detail,
    so it is one number to look at, not the verdict.

    Args:
        image (`PIL.Image.Image`): e.g. the upscaled image.
        reference (`PIL.Image.Image`): the original, same size.

    Returns:
        `float`: dB; ``inf`` for identical images.
    """
    if image.size != reference.size:
        raise CourseError(f"psnr needs images of the same size, got {image.size} and {reference.size}.")
    a = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    b = np.asarray(reference.convert("RGB"), dtype=np.float64) / 255.0
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
