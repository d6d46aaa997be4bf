"""A synthetic, captioned world of coloured shapes: data for training and judging the `tiny` models.

Every image is drawn by code from a seed, so the same seed always gives the same image,
caption and labels. A fixed list of colour-shape-background combinations is held out of
training (``HELD_OUT``) and used only to test whether a model generalises.

The :func:`classify` function reads colour, shape and background back from an image
with plain pixel statistics (no learning), so generated images can be scored.
"""

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # images are SIZE x SIZE pixels
SUPERSAMPLE = 4  # shapes are drawn 4x larger and downscaled, for smooth edges

COLORS = {  # the shape colours, as RGB
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 220, 30),
    "green": (40, 170, 60),
    "blue": (30, 80, 220),
    "purple": (140, 50, 180),
}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), **COLORS}
SHAPES = ("circle", "square", "triangle")  # the shapes the `tiny` models were trained on
# Shapes the world can draw and classify but never shows in training: lesson 10 teaches one of them to the model
# (a diamond is a square turned 45 degrees; its corners survive the 16x16 latents, a star's thin points do not).
NEW_SHAPES = ("diamond",)

# (colour, shape, background) combinations never shown in training; used only for evaluation.
HELD_OUT = (
    ("red", "triangle", "gray"),
    ("orange", "circle", "black"),
    ("yellow", "square", "blue"),
    ("green", "triangle", "white"),
    ("blue", "circle", "yellow"),
    ("purple", "square", "gray"),
    ("red", "square", "green"),
    ("blue", "triangle", "black"),
)

TEMPLATES_NO_BG = ("{a} {color} {shape}", "a {shape} that is {color}", "one {color} {shape}")
TEMPLATES_BG = ("{a} {color} {shape} on {a_bg} {background} background", "{a} {color} {shape} in front of {background}")
# Captions that leave the shape or the colour open, so "a red shape" means something and a
# negative prompt can then rule a shape out ("a red shape", negative prompt "circle"; the
# evaluator's ``OPEN_SHAPE`` test). Used in training only, through ``caption_for(...,
# open_share=...)``; ``sample`` never writes them.
TEMPLATES_OPEN_SHAPE = ("{a} {color} shape", "{a} {color} shape on {a_bg} {background} background", "something {color}")
TEMPLATES_OPEN_COLOR = ("a {shape}", "a {shape} on {a_bg} {background} background")
# Bare words, the way people write negative prompts ("circle", "red"): without them in training,
# the single word "circle" meant next to nothing to the model, so as a negative prompt it removed
# 7% of circles. Used in training only, through ``caption_for(..., word_share=...)``.
TEMPLATES_WORDS = ("{shape}", "{color}", "{color} {shape}")
EMPTY_FRACTION = 0.1  # share of empty captions, so the model also learns the unconditional case


@dataclass
class Sample:
    """One rendered scene: the image, its caption and the true labels."""

    image: Image.Image
    caption: str
    color: str
    shape: str
    background: str


def draw(color: str, shape: str, background: str, cx: float, cy: float, r: float) -> Image.Image:
    """Draw one shape.

    Args:
        color (`str`): a key of ``COLORS``.
        shape (`str`): ``"circle"``, ``"square"``, ``"triangle"`` or one of ``NEW_SHAPES`` (``"diamond"``).
        background (`str`): a key of ``BACKGROUNDS``.
        cx, cy (`float`): the centre, in pixels of the SIZE x SIZE image.
        r (`float`): half the shape's width, in pixels.

    Returns:
        `PIL.Image.Image`: an RGB image of SIZE x SIZE.
    """
    s = SUPERSAMPLE
    img = Image.new("RGB", (SIZE * s, SIZE * s), BACKGROUNDS[background])
    d = ImageDraw.Draw(img)
    x, y, r = cx * s, cy * s, r * s
    if shape == "circle":
        d.ellipse([x - r, y - r, x + r, y + r], fill=COLORS[color])
    elif shape == "square":
        d.rectangle([x - r, y - r, x + r, y + r], fill=COLORS[color])
    elif shape == "triangle":
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLORS[color])
    elif shape == "diamond":  # corners on the centre's vertical and horizontal lines, r away
        d.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=COLORS[color])
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES + NEW_SHAPES}")
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def caption_for(
    color: str, shape: str, background: str, rng: random.Random, open_share: float = 0.0, word_share: float = 0.0
) -> str:
    """A caption from one of the templates; about half name the background.

    Args:
        color, shape, background (`str`): the scene's labels.
        rng (`random.Random`): where the choice of template comes from.
        open_share (`float`, defaults to 0): the share of captions that leave the shape or the
            colour open (``TEMPLATES_OPEN_SHAPE``, ``TEMPLATES_OPEN_COLOR``); 0 draws nothing extra
            from ``rng``, so captions stay what they were.
        word_share (`float`, defaults to 0): the share of captions that are bare words
            (``TEMPLATES_WORDS``: "circle", "red", "red circle"); 0 draws nothing extra from ``rng``.
    """
    words = dict(color=color, shape=shape, background=background, a=article(color), a_bg=article(background))
    if word_share and rng.random() < word_share:
        return rng.choice(TEMPLATES_WORDS).format(**words)
    if open_share and rng.random() < open_share:
        return rng.choice(TEMPLATES_OPEN_SHAPE if rng.random() < 0.5 else TEMPLATES_OPEN_COLOR).format(**words)
    return rng.choice(TEMPLATES_NO_BG if rng.random() < 0.5 else TEMPLATES_BG).format(**words)


def article(word: str) -> str:
    """``"an"`` before a vowel (``"an orange circle"``), else ``"a"``."""
    return "an" if word[0] in "aeiou" else "a"


def sample(seed: int, split: str = "train", shape: str | None = None) -> Sample:
    """Render the scene of ``seed``.

    Args:
        seed (`int`): any integer; the same seed gives the same sample.
        split (`str`): ``"train"`` never yields a ``HELD_OUT`` combination, ``"held_out"`` only those.
        shape (`str`, *optional*): draw this shape instead of a random one of ``SHAPES``, e.g. ``"diamond"``
            (``NEW_SHAPES``, lesson 10): colour, background, size, position and caption template are drawn as
            usual (``split`` only seeds them), and the caption is never empty. Without it, scenes are exactly
            what they always were.

    Returns:
        `Sample`.
    """
    if shape is not None and shape not in SHAPES + NEW_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES + NEW_SHAPES}")
    rng = random.Random(f"{split}-{seed}")
    chosen = shape is not None
    if chosen:
        color = rng.choice(list(COLORS))
        background = rng.choice([b for b in BACKGROUNDS if b != color])
    else:
        while True:
            if split == "held_out":
                color, shape, background = rng.choice(HELD_OUT)
            else:
                color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
                background = rng.choice([b for b in BACKGROUNDS if b != color])
                if (color, shape, background) in HELD_OUT:
                    continue
            break
    r = rng.uniform(10, 22)
    cx, cy = rng.uniform(r + 2, SIZE - r - 2), rng.uniform(r + 2, SIZE - r - 2)
    image = draw(color, shape, background, cx, cy, r)
    empty = not chosen and split == "train" and rng.random() < EMPTY_FRACTION  # a chosen shape is always named
    caption = "" if empty else caption_for(color, shape, background, rng)
    return Sample(image, caption, color, shape, background)


def _nearest(rgb: np.ndarray, palette: dict) -> str:
    names = list(palette)
    dist = [np.sum((rgb - np.array(palette[n], dtype=np.float32)) ** 2) for n in names]
    return names[int(np.argmin(dist))]


def _spread(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Grow ``seed`` through 4-connected ``allowed`` pixels until it stops changing (a flood fill)."""
    region = seed & allowed
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= allowed
        if (grown == region).all():
            return region
        region = grown


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (all False if the mask is empty)."""
    best, left = np.zeros_like(mask), mask.copy()
    while left.sum() > best.sum():
        seed = np.zeros_like(mask)
        seed[tuple(np.argwhere(left)[0])] = True
        part = _spread(seed, left)
        if part.sum() > best.sum():
            best = part
        left &= ~part
    return best


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose 4 neighbours are all in it too (outside the image counts as in)."""
    p = np.pad(mask, 1, constant_values=True)
    return mask & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _ideal(shape: str, cy: float, cx: float, area: float) -> np.ndarray:
    """An ideal, axis-aligned ``shape`` of the given ``area`` (pixels) whose centroid is (cy, cx)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5  # pixel centres
    if shape == "square":
        half = np.sqrt(area) / 2
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= area / np.pi
    if shape == "diamond":  # |dx| + |dy| <= d has area 2 d^2
        return np.abs(x - cx) + np.abs(y - cy) <= np.sqrt(area / 2)
    h = np.sqrt(2 * area)  # apex-up triangle, base = height = h; its centroid is 2/3 of the way down
    top = cy - 2 * h / 3
    return (y >= top) & (y <= top + h) & (np.abs(x - cx) <= (y - top) / 2)


SHAPE_DISTANCE = 60.0  # RGB distance (0..441) from the background colour above which a pixel is the shape's


def _far_from_background(x: np.ndarray, threshold: float = SHAPE_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """``(mask, background RGB)``: the background is the median of the 2-pixel border of ``x`` (``[H, W, 3]``)."""
    border = np.concatenate(
        [x[:2].reshape(-1, 3), x[-2:].reshape(-1, 3), x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3)]
    )
    bg_rgb = np.median(border, axis=0)
    return np.sqrt(((x - bg_rgb) ** 2).sum(-1)) > threshold, bg_rgb


def shape_mask(image: Image.Image, threshold: float = SHAPE_DISTANCE) -> np.ndarray:
    """The pixels of `tiny`'s one shape: those far from the background colour, the test :func:`classify` starts from.

    The background colour is the median of the 2-pixel border; a pixel belongs to the shape when its RGB
    distance from it is above ``threshold`` (``classify`` then cleans the mask up). Used by lesson 3 (§9, where
    the attention goes) and lesson 10 (the overlap of two pictures of one scene).

    Args:
        image (`PIL.Image.Image`): an image of `tiny`'s world, any size.
        threshold (`float`, defaults to 60): RGB distance (0..441).

    Returns:
        `np.ndarray`: boolean ``[H, W]``.
    """
    return _far_from_background(np.asarray(image.convert("RGB"), dtype=np.float32), threshold)[0]


def classify(image: Image.Image, shapes: tuple = SHAPES) -> dict:
    """Read background, colour and shape back from an image of this world.

    Background: the median colour of the 2-pixel border. Shape: the largest connected region of
    pixels far from the background (specks and background texture elsewhere are ignored), its
    holes filled. Colour: the median of that region. Shape: whichever ideal square, circle or
    (apex-up) triangle of the same area and centre overlaps it best (intersection over union),
    so soft corners and small bumps do not flip the answer.

    Args:
        image (`PIL.Image.Image`): any size; resized to SIZE x SIZE.
        shapes (`tuple`, defaults to ``SHAPES``): the templates to choose from; pass
            ``SHAPES + NEW_SHAPES`` to also recognise a diamond (lesson 10). The default keeps every score
            the course quotes what it was.

    Returns:
        `dict`: ``background``, ``color``, ``shape`` (``None`` when no shape is found), ``fill``
        (the share of the region's bounding box it covers: square ~1.0, circle ~0.79, triangle
        ~0.5, an outline much less), ``hollow`` (the share of the shape's inside left unpainted:
        0 for a solid shape, ~0.5 or more for an outline) and ``iou`` (the best template's
        overlap, 0..1); the three numbers are rounded to 3 decimals, so a printed dict fits a line.
    """
    x = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    far, bg_rgb = _far_from_background(x)
    background = _nearest(bg_rgb, BACKGROUNDS)
    core = _largest_component(_erode(far))  # erosion cuts specks and 1-pixel tails off the shape
    region = (core | ~_erode(~core)) & far  # grow the eroded rim back (an opening), no further
    if region.sum() < 12:
        return dict(background=background, color=None, shape=None, fill=0.0, hollow=0.0, iou=0.0)
    color = _nearest(np.median(x[region], axis=0), COLORS)
    ys, xs = np.nonzero(region)
    fill = float(region.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)))
    edge = np.zeros_like(region)
    edge[[0, -1]], edge[:, [0, -1]] = True, True
    solid = ~_spread(edge & ~region, ~region)  # the region with its holes filled (what the border cannot reach)
    sy, sx = np.nonzero(solid)
    cy, cx, area = sy.mean() + 0.5, sx.mean() + 0.5, float(solid.sum())
    ious = {name: float((solid & t).sum() / (solid | t).sum()) for name in shapes for t in [_ideal(name, cy, cx, area)]}
    shape = max(ious, key=ious.get)
    hollow = 1.0 - float(region.sum() / solid.sum())
    return dict(
        background=background,
        color=color,
        shape=shape,
        fill=round(fill, 3),
        hollow=round(hollow, 3),
        iou=round(ious[shape], 3),
    )


HOLLOW = 0.15  # classify(...)["hollow"] above this: the shape is drawn as an outline (lesson 7's style)


def describe(image_or_found, shapes: tuple = SHAPES) -> str:
    """What a picture of this world shows, in words: ``"a red circle on a blue background"``.

    The one-line form of :func:`classify` for the lessons' outputs (its numbers stay in the dictionary):
    ``"an outlined red circle ..."`` when the shape is hollow (``hollow`` above :data:`HOLLOW`), ``"no shape on a blue
    background"`` when none is found.

    Args:
        image_or_found (`PIL.Image.Image` or `dict`): a picture, or what :func:`classify` found in one.
        shapes (`tuple`, defaults to ``SHAPES``): the templates to choose from (see :func:`classify`).

    Returns:
        `str`: the sentence.
    """
    found = image_or_found if isinstance(image_or_found, dict) else classify(image_or_found, shapes)
    background = f"on {article(found['background'])} {found['background']} background"
    if found["shape"] is None:
        return f"no shape {background}"
    if found["hollow"] > HOLLOW:
        return f"an outlined {found['color']} {found['shape']} {background}"
    return f"{article(found['color'])} {found['color']} {found['shape']} {background}"
