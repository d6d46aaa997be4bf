"""Deterministic batches from ``course_utils.world``: the same (seed, step) always gives the same batch.

A batch depends only on the stage's seed and the step number, never on what came before, so a
resumed run sees exactly the batches an uninterrupted one would.
"""

import random

import numpy as np
import torch
from PIL import Image, ImageDraw

from course_utils import world
from course_utils.images import to_tensor  # PIL -> [-1, 1], as the pipelines do
from course_utils.models import tiny
from course_utils.models.builders import load_tokenizer

from . import config

_TOKENIZER = None


def tokenizer():
    """CLIP's tokenizer (SD 1.5's), loaded once."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = load_tokenizer()
    return _TOKENIZER


def tokenize(captions, tok=None) -> torch.Tensor:
    """Token ids ``[B, 77]``, padded and truncated exactly as ``StableDiffusionPipeline.encode_prompt`` does."""
    tok = tok or tokenizer()
    return tok(
        list(captions), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def world_seed(stage_seed: int, step: int, i: int, batch_size: int) -> int:
    """The ``world.sample`` seed of image ``i`` of ``step``: every (stage, step, i) gets its own scene."""
    return stage_seed * 1_000_000_000 + step * batch_size + i


def caption(
    color: str, shape: str, background: str, rng: random.Random, open_share: float = 0.0, word_share: float = 0.0
) -> str:
    """A fresh caption for known labels, as ``world.sample`` writes them (``world.EMPTY_FRACTION`` empty).

    Used with cached latents: the scene stays, its caption is drawn again every time it is used.
    ``open_share`` of the non-empty captions leave the shape or colour open, ``word_share`` are
    bare words ("circle", "red"; see ``world.caption_for``).
    """
    if rng.random() < world.EMPTY_FRACTION:
        return ""
    return world.caption_for(color, shape, background, rng, open_share, word_share)


# --- the outlined style -----------------------------------------------------------------------
def draw_outlined(color: str, shape: str, background: str, cx: float, cy: float, r: float) -> Image.Image:
    """Like ``world.draw`` but only the shape's outline, ``config.OUTLINE_WIDTH`` pixels wide."""
    s = world.SUPERSAMPLE
    img = Image.new("RGB", (world.SIZE * s, world.SIZE * s), world.BACKGROUNDS[background])
    d = ImageDraw.Draw(img)
    x, y, r, w = cx * s, cy * s, r * s, config.OUTLINE_WIDTH * s
    fill, bg = world.COLORS[color], world.BACKGROUNDS[background]
    if shape == "circle":
        d.ellipse([x - r, y - r, x + r, y + r], outline=fill, width=w, fill=bg)
    elif shape == "square":
        d.rectangle([x - r, y - r, x + r, y + r], outline=fill, width=w, fill=bg)
    else:
        d.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], outline=fill, width=w, fill=bg)
    return img.resize((world.SIZE, world.SIZE), Image.Resampling.BOX)


def styled_sample(seed: int):
    """A training scene drawn in the outlined style: ``(image, caption)`` (caption without the trigger)."""
    s = world.sample(seed, "train")
    rng = random.Random(f"style-{seed}")
    r = rng.uniform(*config.OUTLINE_RADIUS)  # larger than world.sample's 10-22: the VAE keeps big rings hollow
    cx, cy = rng.uniform(r + 2, world.SIZE - r - 2), rng.uniform(r + 2, world.SIZE - r - 2)
    return draw_outlined(s.color, s.shape, s.background, cx, cy, r), s.caption


def with_trigger(caption: str, trigger: str) -> str:
    """``"a red circle"`` -> ``"outline style, a red circle"`` (``"outline style"`` for an empty caption, the caption
    alone for no trigger): ``tiny.style_prompt``, the format ``course_utils.community.style_prompt`` writes too.

    The trigger comes first: CLIP's causal mask lets a word change only the tokens after it, and the frozen text
    encoder nearly ignores words it never saw at the end of a caption (docs/training.md, "Issue 16, continued").
    """
    return tiny.style_prompt(caption, trigger)


def with_embedding(caption: str, tokens: str) -> str:
    """``"a red circle"`` -> ``"<outline> <outline>_1, a red circle"``: ``tiny.embedding_prompt``."""
    return tiny.embedding_prompt(caption, tokens)


OTHER_WORD = tiny.OTHER_WORD  # the style stages' evaluation also asks for "watercolor style, ...": another unseen word


# --- batches ----------------------------------------------------------------------------------
def batch(stage_seed: int, step: int, batch_size: int, tok=None, tokens: bool = True) -> dict:
    """A batch of plain world scenes.

    Returns:
        `dict`: ``pixels`` [B, 3, 64, 64] in [-1, 1]; ``input_ids`` [B, 77] (if ``tokens``); ``captions``;
        ``labels`` (``(color, shape, background)`` per image).
    """
    samples = [world.sample(world_seed(stage_seed, step, i, batch_size), "train") for i in range(batch_size)]
    out = dict(
        pixels=to_tensor([s.image for s in samples]),
        captions=[s.caption for s in samples],
        labels=[(s.color, s.shape, s.background) for s in samples],
    )
    if tokens:
        out["input_ids"] = tokenize(out["captions"], tok)
    return out


def style_batch(stage_seed: int, step: int, batch_size: int, style_share: float, styled, tok=None) -> dict:
    """A batch where a share ``style_share`` of the images is outlined, their captions passed through ``styled``
    (e.g. ``lambda c: with_trigger(c, "outline")``)."""
    images, captions = [], []
    rng = random.Random(f"style-batch-{stage_seed}-{step}")
    for i in range(batch_size):
        seed = world_seed(stage_seed, step, i, batch_size)
        if rng.random() < style_share:
            image, caption = styled_sample(seed)
            caption = styled(caption)
        else:
            s = world.sample(seed, "train")
            image, caption = s.image, s.caption
        images.append(image)
        captions.append(caption)
    return dict(pixels=to_tensor(images), captions=captions, input_ids=tokenize(captions, tok))


def random_masks(stage_seed: int, step: int, batch_size: int, full: float, lo: float, hi: float) -> torch.Tensor:
    """Inpainting masks ``[B, 1, 64, 64]``, 1 = repaint, 0 = keep.

    A share ``full`` masks everything (the model must also work as text-to-image); the rest are a
    rectangle or an ellipse with sides between ``lo`` and ``hi`` of the image.
    """
    n = world.SIZE
    rng = random.Random(f"mask-{stage_seed}-{step}")
    masks = []
    for _ in range(batch_size):
        m = Image.new("L", (n, n), 0)
        if rng.random() < full:
            m.paste(255, (0, 0, n, n))
        else:
            w, h = rng.uniform(lo, hi) * n, rng.uniform(lo, hi) * n
            x0, y0 = rng.uniform(0, n - w), rng.uniform(0, n - h)
            box = [x0, y0, x0 + w, y0 + h]
            (ImageDraw.Draw(m).rectangle if rng.random() < 0.5 else ImageDraw.Draw(m).ellipse)(box, fill=255)
        masks.append(np.asarray(m, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(masks))[:, None]


def low_res(pixels: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """The upscaler's input: each ``factor x factor`` block averaged (= ``Image.Resampling.BOX``), 64 -> 16."""
    return torch.nn.functional.avg_pool2d(pixels, factor)
