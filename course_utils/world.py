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
SHAPES = ("circle", "square", "triangle")

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
        shape (`str`): ``"circle"``, ``"square"`` or ``"triangle"``.
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
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def caption_for(color: str, shape: str, background: str, rng: random.Random) -> str:
    """A caption from one of the templates; about half name the background."""
    words = dict(color=color, shape=shape, background=background, a=article(color), a_bg=article(background))
    return rng.choice(TEMPLATES_NO_BG if rng.random() < 0.5 else TEMPLATES_BG).format(**words)


def article(word: str) -> str:
    """``"an"`` before a vowel (``"an orange circle"``), else ``"a"``."""
    return "an" if word[0] in "aeiou" else "a"


def sample(seed: int, split: str = "train") -> Sample:
    """Render the scene of ``seed``.

    Args:
        seed (`int`): any integer; the same seed gives the same sample.
        split (`str`): ``"train"`` never yields a ``HELD_OUT`` combination, ``"held_out"`` only those.

    Returns:
        `Sample`.
    """
    rng = random.Random(f"{split}-{seed}")
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
    caption = "" if split == "train" and rng.random() < EMPTY_FRACTION else caption_for(color, shape, background, rng)
    return Sample(image, caption, color, shape, background)


def _nearest(rgb: np.ndarray, palette: dict) -> str:
    names = list(palette)
    dist = [np.sum((rgb - np.array(palette[n], dtype=np.float32)) ** 2) for n in names]
    return names[int(np.argmin(dist))]


def classify(image: Image.Image) -> dict:
    """Read background, colour and shape back from an image of this world.

    Background: the median colour of the 2-pixel border. Shape pixels: those far from the
    background. Colour: their median. Shape: how much of its bounding box the shape fills
    (square ~1.0, circle ~0.79, triangle ~0.5).

    Args:
        image (`PIL.Image.Image`): any size; resized to SIZE x SIZE.

    Returns:
        `dict`: ``background``, ``color``, ``shape`` (``None`` when no shape is found) and ``fill``.
    """
    x = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    border = np.concatenate([x[:2].reshape(-1, 3), x[-2:].reshape(-1, 3), x[:, :2].reshape(-1, 3), x[:, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    mask = np.sqrt(((x - bg_rgb) ** 2).sum(-1)) > 60
    if mask.sum() < 12:
        return dict(background=background, color=None, shape=None, fill=0.0)
    color = _nearest(np.median(x[mask], axis=0), COLORS)
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = float(mask.sum() / box)
    shape = "square" if fill > 0.9 else ("circle" if fill > 0.65 else "triangle")
    return dict(background=background, color=color, shape=shape, fill=fill)
