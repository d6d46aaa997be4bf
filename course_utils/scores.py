"""How well a text-to-image pipeline draws `tiny`'s world: the one scorer of ``evaluate`` and ``training``.

``python -m course_utils evaluate`` (the model card's numbers, 20 seeds per prompt) and the
text-to-image stage's in-run evaluation (``python -m training text2img``, a few seeds) both call
:func:`text2img_scores`; the evaluator also calls :func:`negative_scores`, and so does
``python -m training diagnose``; lesson 9 and ``bench`` call :func:`drawn_right`; the ControlNet's stage, ``evaluate``
and lesson 11 call :func:`control_scores`. Every image is read back with ``world.classify``. This module imports only
``world`` and ``edges`` (and torch), so ``training/`` may use it.
"""

import numpy as np
import torch

from . import edges, world

# (prompt, colour, shape, background or None): trained combinations, every colour and shape, half naming a background
SEEN = (
    ("a red circle", "red", "circle", None),
    ("an orange square", "orange", "square", None),
    ("a yellow triangle", "yellow", "triangle", None),
    ("a green circle", "green", "circle", None),
    ("a blue square", "blue", "square", None),
    ("a purple triangle", "purple", "triangle", None),
    ("a red square on a white background", "red", "square", "white"),
    ("an orange triangle on a blue background", "orange", "triangle", "blue"),
    ("a yellow circle on a black background", "yellow", "circle", "black"),
    ("a green square on a gray background", "green", "square", "gray"),
    ("a blue triangle on a red background", "blue", "triangle", "red"),
    ("a purple circle on a yellow background", "purple", "circle", "yellow"),
)
HELD_OUT = tuple(
    (f"{world.article(c)} {c} {s} on {world.article(b)} {b} background", c, s, b) for c, s, b in world.HELD_OUT
)
# Prompts that leave the colour (or the shape) open, for the negative-prompt test.
OPEN_COLOR = ("a circle on a white background", "a square on a black background", "a triangle on a gray background")
OPEN_SHAPE = (
    "a red shape on a white background",
    "a blue shape on a black background",
    "a yellow shape on a gray background",
)


def generate(pipe, prompt: str, seeds, negative_prompt: str | list | None = None, **settings) -> list:
    """One image per seed for ``prompt``; seed ``s`` always starts from the same latents.

    Args:
        pipe: a text-to-image pipeline.
        prompt (`str`): the prompt.
        seeds (`list[int]`): one image per seed (one generator each, so results are seed-matched
            between calls with and without a negative prompt).
        negative_prompt (`str` or `list[str]`, *optional*): one for all, or one per seed.
        **settings: ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``.

    Returns:
        `list[PIL.Image.Image]`.
    """
    seeds = list(seeds)
    if isinstance(negative_prompt, str):
        negative_prompt = [negative_prompt] * len(seeds)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe([prompt] * len(seeds), negative_prompt=negative_prompt, generator=generators, **settings).images


# Prompts of tiny's world for lesson 9's quick score of a setting (drawn_right): the first six, every colour and shape once.
QUALITY = tuple((prompt, color, shape) for prompt, color, shape, _ in SEEN[:6])


def drawn_right(pipe, seeds=(0, 1), **settings) -> float:
    """On `tiny`: the share of images whose colour and shape ``world.classify`` reads back as asked (lesson 9, §3).

    Args:
        pipe: a `tiny` text-to-image pipeline.
        seeds (`tuple[int]`, defaults to ``(0, 1)``): one image per prompt of :data:`QUALITY` and seed, in one batch.
        **settings: passed to the pipeline (``num_inference_steps``, ``guidance_scale``, ...).

    Returns:
        `float` in [0, 1].
    """
    prompts = [p for p, _, _ in QUALITY for _ in seeds]
    generators = [torch.Generator().manual_seed(s) for _ in QUALITY for s in seeds]
    images = pipe(prompts, generator=generators, **settings).images
    asked = [(c, s) for _, c, s in QUALITY for _ in seeds]
    right = [(r := world.classify(im))["color"] == c and r["shape"] == s for im, (c, s) in zip(images, asked)]
    return sum(right) / len(right)


def text2img_scores(pipe, seeds, **settings) -> dict:
    """Colour/shape/background accuracy on ``SEEN`` and colour-and-shape accuracy on ``HELD_OUT``.

    Args:
        pipe: a text-to-image pipeline of `tiny`'s world.
        seeds (`list[int]`): one image per prompt and seed (12 + 8 prompts).
        **settings: passed to the pipeline (``num_inference_steps``, ``guidance_scale``, ...).

    Returns:
        `dict`: ``seen_color``, ``seen_shape``, ``seen_background`` (prompts naming one),
        ``seen_all``, ``held_out_color``, ``held_out_shape``, ``held_out_color_and_shape``,
        ``held_out_background``: shares in [0, 1].
    """
    rows = {"seen": [], "held_out": []}
    for split, prompts in (("seen", SEEN), ("held_out", HELD_OUT)):
        for prompt, color, shape, background in prompts:
            for image in generate(pipe, prompt, seeds, **settings):
                c = world.classify(image)
                rows[split].append(
                    (
                        c["color"] == color,
                        c["shape"] == shape,
                        None if background is None else c["background"] == background,
                    )
                )
    seen, held = rows["seen"], rows["held_out"]
    named = [r[2] for r in seen if r[2] is not None]
    return {
        "seen_color": float(np.mean([r[0] for r in seen])),
        "seen_shape": float(np.mean([r[1] for r in seen])),
        "seen_background": float(np.mean(named)),
        "seen_all": float(np.mean([r[0] and r[1] and r[2] is not False for r in seen])),
        "held_out_color": float(np.mean([r[0] for r in held])),
        "held_out_shape": float(np.mean([r[1] for r in held])),
        "held_out_color_and_shape": float(np.mean([r[0] and r[1] for r in held])),
        "held_out_background": float(np.mean([r[2] for r in held])),
    }


def negative_scores(pipe, seeds, **settings) -> dict:
    """Seed by seed: name the colour (shape) an image has in the negative prompt; is it gone?

    An image counts as "removed" only if a shape is still drawn and its colour (shape) differs.
    """
    removed = {"color": [], "shape": []}
    for key, prompts in (("color", OPEN_COLOR), ("shape", OPEN_SHAPE)):
        for prompt in prompts:
            before = [world.classify(im)[key] for im in generate(pipe, prompt, seeds, **settings)]
            kept = [(s, b) for s, b in zip(seeds, before) if b is not None]
            if not kept:
                continue
            after = generate(pipe, prompt, [s for s, _ in kept], negative_prompt=[b for _, b in kept], **settings)
            for (_, b), image in zip(kept, after):
                c = world.classify(image)
                removed[key].append(c["shape"] is not None and c[key] != b)
    both = removed["color"] + removed["shape"]
    return {
        "negative_removes": float(np.mean(both)),
        "negative_removes_color": float(np.mean(removed["color"])) if removed["color"] else float("nan"),
        "negative_removes_shape": float(np.mean(removed["shape"])) if removed["shape"] else float("nan"),
        "negative_images": len(both),
    }


# Prompts for the style models (the outline fine-tune, its LoRA and its embedding); trained combinations.
STYLE_PROMPTS = (
    "a red circle on a white background",
    "a blue square on a yellow background",
    "a green triangle on a black background",
    "a yellow circle on a blue background",
    "an orange square on a gray background",
    "a purple triangle on a white background",
)


def outline_share(pipe, prompts, seeds, **settings) -> float:
    """Share of images whose shape ``world.classify`` finds hollow (an outline, not a solid shape)."""
    found = [world.classify(im) for p in prompts for im in generate(pipe, p, seeds, **settings)]
    return float(np.mean([f["shape"] is not None and f["hollow"] > world.HOLLOW for f in found]))


# --- ControlNet: does the picture follow the condition? ------------------------------------------------------------
CONTROL_SPLIT = "control"  # ``world.sample`` split of the conditions scored: seeds no training batch draws ("train")
IOU_FOLLOWS = 0.8  # a picture follows its condition when its shape's pixels overlap the condition's shape this much


def control_scenes(per_shape: int, start: int = 0) -> list:
    """Held-out scenes whose edges are the conditions scored: ``per_shape`` of each of ``world.SHAPES``.

    Each is ``world.sample(seed, CONTROL_SPLIT, shape=shape)``: a colour, background, size and position of its own,
    none of them seen in training (that draws the ``"train"`` split).

    Returns:
        `list[world.Sample]`: shape by shape, ``per_shape`` each.
    """
    return [world.sample(start + i, CONTROL_SPLIT, shape=s) for s in world.SHAPES for i in range(per_shape)]


def scene_prompt(scene) -> str:
    """``"a red circle on a blue background"``: the prompt that names everything in ``scene``."""
    c, b = scene.color, scene.background
    return f"{world.article(c)} {c} {scene.shape} on {world.article(b)} {b} background"


def overlap(image, reference) -> float:
    """Intersection over union of the shape's pixels (``world.shape_mask``) in two pictures of `tiny`'s world.

    Args:
        image, reference (`PIL.Image.Image`): e.g. a generated picture and the scene its condition was made from.

    Returns:
        `float` in [0, 1]: 1 when the two shapes cover the same pixels.
    """
    a, b = world.shape_mask(image), world.shape_mask(reference)
    return float((a & b).sum() / max(1, (a | b).sum()))


def control_scores(pipe, scenes, seed: int = 0, batch: int = 60, **settings) -> dict:
    """How well pictures follow their conditions: one picture per scene, its edge map as the condition.

    Args:
        pipe: a ``StableDiffusionControlNetPipeline`` of `tiny`'s world (the condition is passed as ``image``), or
            a text-to-image pipeline (the same prompts with no condition: how often the base model lands there by
            chance).
        scenes (`list[world.Sample]`): e.g. :func:`control_scenes`; prompt: :func:`scene_prompt`.
        seed (`int`, defaults to 0): picture ``i`` starts from ``torch.Generator().manual_seed(seed + i)``.
        batch (`int`, defaults to 60): pictures per pipeline call.
        **settings: passed to the pipeline (``num_inference_steps``, ``guidance_scale``,
            ``controlnet_conditioning_scale``, ...).

    Returns:
        `dict`: ``follows`` (share with :func:`overlap` >= ``IOU_FOLLOWS``), ``mean_iou``, ``color``, ``shape``,
        ``background`` (shares ``world.classify`` reads back as the scene has them), ``pictures``.
    """
    controlled = "controlnet" in getattr(pipe, "components", {})
    rows = []
    for i in range(0, len(scenes), batch):
        part = scenes[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + k) for k in range(len(part))]
        extra = dict(image=[edges.canny(s.image) for s in part]) if controlled else {}
        images = pipe([scene_prompt(s) for s in part], generator=gens, **extra, **settings).images
        for image, s in zip(images, part):
            found = world.classify(image)
            rows.append(
                (
                    overlap(image, s.image),
                    found["color"] == s.color,
                    found["shape"] == s.shape,
                    found["background"] == s.background,
                )
            )
    ious = np.array([r[0] for r in rows])
    return {
        "follows": float(np.mean(ious >= IOU_FOLLOWS)),
        "mean_iou": float(ious.mean()),
        "color": float(np.mean([r[1] for r in rows])),
        "shape": float(np.mean([r[2] for r in rows])),
        "background": float(np.mean([r[3] for r in rows])),
        "pictures": len(rows),
    }
