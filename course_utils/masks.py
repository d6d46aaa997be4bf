"""Inpainting masks: draw, load and check them (lesson 08, §1).

A mask is a mode ``"L"`` image the size of the photo, pixel for pixel: **white (255) = repaint**, **black (0) =
keep**; ``StableDiffusionInpaintPipeline`` repaints values >= 128. This module draws masks by code (boxes in
pixels or in fractions of the image, so they fit every resolution: :func:`rect_mask`, :func:`ellipse_mask`, and
the lesson's own, :func:`lesson_mask`), opens painted ones (:func:`load_mask`: any mode, transparency = keep), and
checks that a mask fits its photo (:func:`check_mask`, :func:`load_pair`). What the pipeline does with the mask
is in :mod:`course_utils.inpaint`.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
]
