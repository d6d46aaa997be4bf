"""``python -m training diagnose``: what a text-to-image model does with a negative prompt that names a shape.

    python -m training diagnose [--ckpt training/runs/text2img/ckpt.pt] [--seeds 0-19] [--guidance 3 4] [--full]

For each guidance scale, one JSON line:

* ``shapes``: per ``scores.OPEN_SHAPE`` prompt ("a red shape on a white background"), seed by seed,
  the shape drawn without a negative prompt and then with that shape's bare word as the negative
  prompt, counted as ``"circle->square"`` (changed) or ``"circle->circle"`` (stayed);
* ``words``: what the bare words "circle", "square" and "triangle" draw as prompts;
* with ``--full``, also ``course_utils.scores``' text-to-image and negative-prompt scores (what
  ``python -m course_utils evaluate`` reports, on the same seeds).

The model is ``data/tiny``'s text-to-image pipeline; ``--ckpt`` swaps in the text encoder and UNet
(EMA weights) of a text2img checkpoint, finished or not, so a run can be checked mid-way. The
findings it gave (docs/training.md, "Negative prompts"): the bare words draw their shape (59 of 60),
yet a shape named in the negative prompt changes in about two thirds of the images, at any guidance
from 3 to 5 and with any sampler.
"""

import collections
import json

import torch

from course_utils import scores, world
from course_utils.models import builders, profiles

from .checkpoints import weights
from .config import TrainingError

WORDS = tuple(world.SHAPES)  # the bare words tried alone as prompts


def seed_range(text: str) -> list:
    """``"0-19"`` -> ``[0, ..., 19]``; ``"5"`` -> ``[5]``."""
    lo, _, hi = text.partition("-")
    try:
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise TrainingError(f"--seeds takes FIRST-LAST, e.g. 0-19, not {text!r}") from None
    return list(range(lo, hi + 1))


def pipeline(ckpt=None):
    """``data/tiny``'s text-to-image pipeline (CPU, float32), with a text2img checkpoint's weights if ``ckpt``."""
    pipe = builders.tiny_text2img()
    pipe.set_progress_bar_config(disable=True)
    if ckpt:
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        if ck.get("stage") != "text2img":
            raise TrainingError(f"{ckpt} is a checkpoint of stage {ck.get('stage')!r}, not text2img")
        pipe.text_encoder.load_state_dict(weights(ck, "text_encoder"))
        pipe.unet.load_state_dict(weights(ck, "unet"))
    return pipe


def shape_changes(pipe, seeds, **settings) -> dict:
    """Per ``OPEN_SHAPE`` prompt: ``{"before->after": count}`` with the drawn shape's word as the negative prompt."""
    out = {}
    for prompt in scores.OPEN_SHAPE:
        before = [world.classify(im)["shape"] for im in scores.generate(pipe, prompt, seeds, **settings)]
        kept = [(s, b) for s, b in zip(seeds, before) if b]
        after = (
            scores.generate(pipe, prompt, [s for s, _ in kept], negative_prompt=[b for _, b in kept], **settings)
            if kept
            else []
        )
        out[prompt] = dict(
            collections.Counter(f"{b}->{world.classify(im)['shape']}" for (_, b), im in zip(kept, after))
        )
    return out


def diagnose(
    ckpt=None, seeds=range(20), guidance=None, full: bool = False, steps: int | None = None, quiet: bool = False
) -> list:
    """Run the diagnosis; returns (and unless ``quiet`` prints) one dict per guidance scale.

    Args:
        ckpt (`str`, *optional*): a text2img checkpoint whose weights replace ``data/tiny``'s.
        seeds (`list[int]`): one image per prompt and seed (the evaluator uses 0-19).
        guidance (`list[float]`, *optional*): guidance scales (default: the model card's, 3).
        full (`bool`): also the text-to-image and negative-prompt scores.
        steps (`int`, *optional*): sampler steps (default: the model card's, 25).
    """
    pipe = pipeline(ckpt)
    settings = dict(profiles.DEFAULTS["tiny"])
    if steps:
        settings["num_inference_steps"] = steps
    seeds = list(seeds)
    rows = []
    for g in guidance or [settings["guidance_scale"]]:
        s = dict(settings, guidance_scale=g)
        row = dict(
            guidance=g,
            shapes=shape_changes(pipe, seeds, **s),
            words={
                w: dict(collections.Counter(world.classify(im)["shape"] for im in scores.generate(pipe, w, seeds, **s)))
                for w in WORDS
            },
        )
        if full:
            row["scores"] = {
                k: round(v, 3)
                for k, v in {
                    **scores.text2img_scores(pipe, seeds, **s),
                    **scores.negative_scores(pipe, seeds, **s),
                }.items()
            }
        if not quiet:
            print(json.dumps(row), flush=True)
        rows.append(row)
    return rows
