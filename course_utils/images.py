"""Load and check the images the lessons feed to pipelines (lesson 04, §6; used from lesson 02 on).

Every image the course passes to a pipeline goes through :func:`load_image`, so a learner's
own file in an odd mode (RGBA, grayscale, palette, CMYK) or size gets a clear conversion
note or a clear error instead of a crash deep inside diffusers.
"""

from pathlib import Path

import diffusers.utils
import numpy as np
import torch
from PIL import Image

from .errors import CourseError
from .paths import DATA_DIR


def _data_listing() -> str:
    names = sorted(p.name for p in DATA_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    return ", ".join(names) or "(no images)"


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL image to RGB, printing a note when the mode changes.

    Lesson 04, §6 shows its note (an RGBA horse); :func:`load_image` calls it.

    RGBA/LA/P-with-transparency images are put on a white background (their transparent
    parts become white); grayscale, palette and CMYK images are converted with PIL.

    Args:
        image (`PIL.Image.Image`): the input, any mode.
        name (`str`): how to call it in the note.

    Returns:
        `PIL.Image.Image`: an RGB image of the same size.
    """
    if image.mode == "RGB":
        return image
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        out = Image.new("RGB", image.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        print(f"note: {name} was mode {mode}, converted to RGB on a white background")
    else:
        out = image.convert("RGB")
        print(f"note: {name} was mode {mode}, converted to RGB")
    return out


def round_size(size, multiple: int = 8) -> tuple[int, int]:
    """Round a size down to multiples of ``multiple`` (SD's VAE needs multiples of 8).

    Lesson 04, §6 shows the rounding (through ``img2img.load_init_image``); :func:`load_image` calls it.

    Args:
        size (`int` or `tuple[int, int]`): one side of a square, or ``(width, height)``.
        multiple (`int`, defaults to 8): the step to round to.

    Returns:
        `tuple[int, int]`: ``(width, height)``, each at least ``multiple``.
    """
    w, h = (size, size) if isinstance(size, int) else size
    if w < multiple or h < multiple:
        raise CourseError(f"Size {w}x{h} is too small; each side must be at least {multiple} pixels.")
    return (w // multiple * multiple, h // multiple * multiple)


def load_image(path_or_url, size=None) -> Image.Image:
    """Open an image as RGB, optionally resized to multiples of 8.

    Lesson 04, §6 explains its conversions; lessons load their images with it from lesson 02, §6 on.

    Args:
        path_or_url (`str` or `Path` or `PIL.Image.Image`): a file path, a bare name of a file in
            ``data/`` (e.g. ``"sketch.png"``), an ``http(s)://`` URL, or an image already opened.
        size (`int` or `tuple[int, int]`, *optional*): resize to this ``(width, height)`` (or a
            square); sides that are not multiples of 8 are rounded down, with a note.

    Returns:
        `PIL.Image.Image`: an RGB image.

    Raises:
        CourseError: the file does not exist (the message lists what is in ``data/``) or is not an image.
    """
    if isinstance(path_or_url, Image.Image):
        image, name = path_or_url, "image"
    elif str(path_or_url).startswith(("http://", "https://")):
        image, name = diffusers.utils.load_image(str(path_or_url)), str(path_or_url)
    else:
        path = Path(path_or_url).expanduser()
        if not path.exists() and (DATA_DIR / path).exists():
            path = DATA_DIR / path
        if not path.exists():
            raise CourseError(
                f"No image at '{path_or_url}' (looked in {Path.cwd()} and {DATA_DIR}). The course's images are: {_data_listing()}."
            )
        try:
            image = Image.open(path)
            image.load()
        except Exception as err:
            raise CourseError(f"'{path}' is not an image PIL can read ({err}).") from None
        name = path.name
    image = to_rgb(image, name)
    if size is not None:
        target = round_size(size)
        wanted = (size, size) if isinstance(size, int) else tuple(size)
        if target != wanted:
            print(f"note: size {wanted[0]}x{wanted[1]} rounded down to {target[0]}x{target[1]} (multiples of 8)")
        image = image.resize(target, Image.Resampling.LANCZOS)
    return image


def check_size(width: int, height: int) -> None:
    """Raise a clear error unless ``width`` and ``height`` are multiples of 8 (the VAE downsamples 8x).

    Lesson 08, §1 checks its photo with it (through ``masks.check_mask``).

    Args:
        width (`int`), height (`int`): the image's size in pixels.

    Raises:
        CourseError: a side is not a multiple of 8; the message suggests the size to use.
    """
    if width % 8 or height % 8:
        raise CourseError(
            f"Image size {width}x{height} is not a multiple of 8: the VAE shrinks images 8x, so SD needs "
            f"multiples of 8. Use {width // 8 * 8}x{height // 8 * 8}, e.g. load_image(..., size=({width}, {height}))."
        )


def to_tensor(images) -> torch.Tensor:
    """RGB images to pixels in [-1, 1], what the pipelines' image processor gives the VAE (lesson 10, §3).

    The one place the course turns pictures into the VAE's input; ``by_hand.to_pil`` is its inverse (the
    pipeline's own post-processing). ``training/`` uses it too.

    Args:
        images (`list[PIL.Image.Image]`): pictures of one size (converted to RGB).

    Returns:
        `torch.Tensor`: ``[batch, 3, H, W]`` float32 in [-1, 1].
    """
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).div(127.5).sub(1.0).contiguous()
