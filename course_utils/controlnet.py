"""Lesson 11: ControlNet, the mechanism written out; the reference the lesson's by-hand cells are checked against.

A ControlNet is a trainable copy of the UNet's encoder half (``conv_in``, time embedding, down blocks, middle block)
that also reads a condition image (here a Canny edge map, :mod:`course_utils.edges`) through a small convolutional
embedding. After each block it feeds back, a zero-initialised 1x1 convolution turns its features into a *residual*
that is added to the UNet's matching skip connection (``down_block_additional_residuals``) or to its middle block's
output (``mid_block_additional_residual``). Zero convolutions make a fresh ControlNet add exactly nothing.

:func:`denoise` is lesson 3's loop (``by_hand.denoise``) with those two additions, exactly as
``StableDiffusionControlNetPipeline.__call__`` (diffusers 0.42) runs them: the condition scale, the start/end window
(``control_guidance_start``/``_end``) and guess mode included.
"""

import json
import os

import torch

from . import world
from .by_hand import _step_kwargs, guidance_enabled
from .models import tiny

__all__ = [
    "copied_parts",
    "condition_tensor",
    "residuals",
    "keep",
    "denoise",
    "training_steps",
    "training_examples",
    "training_record",
]


def copied_parts(unet, controlnet) -> dict:
    """What ``ControlNetModel.from_unet(unet)`` copied, and what it added.

    Args:
        unet (`UNet2DConditionModel`): the base model.
        controlnet (`ControlNetModel`): made from it.

    Returns:
        `dict`: ``copied`` (names of the ControlNet's top-level parts whose weights equal the UNet's part of the same
        name), ``new`` (its other parts: the condition embedding and the zero convolutions), ``parameters`` (count per
        group: ``copied``, ``new``, and ``unet`` for the whole base model).
    """
    copied, new = [], []
    for name, part in controlnet.named_children():
        base = getattr(unet, name, None)
        same = (
            base is not None
            and type(base) is type(part)
            and all(torch.equal(a, b) for a, b in zip(part.state_dict().values(), base.state_dict().values()))
            and len(part.state_dict()) == len(base.state_dict())
        )
        (copied if same else new).append(name)
    count = lambda names: sum(p.numel() for n in names for p in getattr(controlnet, n).parameters())  # noqa: E731
    return dict(
        copied=copied,
        new=new,
        parameters=dict(copied=count(copied), new=count(new), unet=sum(p.numel() for p in unet.parameters())),
    )


def condition_tensor(pipe, image, height: int, width: int, batch_size: int = 1) -> torch.Tensor:
    """The condition as the pipeline gives it to the ControlNet (its ``prepare_image``, without guidance's copy).

    Args:
        pipe (`StableDiffusionControlNetPipeline`): whose ``control_image_processor`` resizes and scales it.
        image (`PIL.Image.Image`): the edge map (:func:`course_utils.edges.canny`).
        height, width (`int`): the picture's size in pixels.
        batch_size (`int`, defaults to 1): copies, one per picture.

    Returns:
        `torch.Tensor`: ``[batch_size, 3, height, width]`` in [0, 1] (not [-1, 1]: the processor does not normalise
        conditions), on the ControlNet's device and in its dtype.
    """
    x = pipe.control_image_processor.preprocess(image, height=height, width=width).to(dtype=torch.float32)
    return x.repeat_interleave(batch_size, dim=0).to(pipe.controlnet.device, pipe.controlnet.dtype)


def residuals(controlnet, latents, t, text, condition, scale: float = 1.0, guess_mode: bool = False):
    """One ControlNet call: what it adds to the UNet at timestep ``t``.

    Args:
        controlnet (`ControlNetModel`): the copy.
        latents (`torch.Tensor`): x_t as the UNet sees it, ``[B, 4, h, w]``.
        t (`torch.Tensor` or `int`): the timestep.
        text (`torch.Tensor`): the text embedding, ``[B, 77, hidden]``.
        condition (`torch.Tensor`): :func:`condition_tensor`, ``[B, 3, H, W]``.
        scale (`float`, defaults to 1.0): multiplies every residual (``controlnet_conditioning_scale``).
        guess_mode (`bool`, defaults to `False`): scale the residuals from 0.1 (first skip) to 1.0 (middle block).

    Returns:
        `tuple`: ``(down, mid)``: one tensor per UNet skip connection (12 for SD 1.5, 9 for `tiny`), each the shape
        of that skip, and one the shape of the middle block's output.
    """
    return controlnet(
        latents,
        t,
        encoder_hidden_states=text,
        controlnet_cond=condition,
        conditioning_scale=scale,
        guess_mode=guess_mode,
        return_dict=False,
    )


def keep(i: int, n: int, start: float = 0.0, end: float = 1.0) -> float:
    """Whether the ControlNet acts at step ``i`` of ``n`` (1.0) or not (0.0): the pipeline's ``controlnet_keep``.

    It acts while the step's share of the way, ``i / n`` .. ``(i + 1) / n``, lies within ``start`` .. ``end``.
    """
    return 1.0 - float(i / n < start or (i + 1) / n > end)


def denoise(
    unet,
    controlnet,
    scheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance_scale: float,
    condition: torch.Tensor,
    scale: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    guess_mode: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Lesson 3's denoising loop with a ControlNet: ``StableDiffusionControlNetPipeline``'s step 8, written out.

    For each timestep t (step i of n):

    1. x_in = [x_t, x_t] when guiding, scaled by the scheduler (as ``by_hand.denoise``);
    2. the ControlNet reads x_in, t, the text and the condition and returns residuals, times
       ``scale * keep(i, n, start, end)``; in guess mode it reads the text half only (x_t, c) and the empty-prompt
       half gets zeros;
    3. ε = ε_θ(x_in, t, c, down + residuals, mid + residual): the UNet adds them to its skip connections and its
       middle block;
    4. guidance and ``scheduler.step``, as ``by_hand.denoise``.

    Args:
        unet (`UNet2DConditionModel`), controlnet (`ControlNetModel`), scheduler: ``set_timesteps`` already called.
        latents (`torch.Tensor`): x_T, ``[B, 4, h, w]``.
        cond, uncond (`torch.Tensor`): text embeddings ``[B, 77, hidden]`` (``uncond`` may be ``None`` without
            guidance).
        guidance_scale (`float`): w.
        condition (`torch.Tensor`): :func:`condition_tensor`, ``[B, 3, H, W]`` in [0, 1].
        scale (`float`, defaults to 1.0): ``controlnet_conditioning_scale``.
        start, end (`float`, defaults to 0.0 and 1.0): ``control_guidance_start`` / ``_end``.
        guess_mode (`bool`, defaults to `False`): as the pipeline's ``guess_mode``.
        generator (`torch.Generator`, *optional*): for schedulers that draw noise.

    Returns:
        `torch.Tensor`: the denoised latents x_0, ``[B, 4, h, w]``.
    """
    guided = guidance_enabled(unet, guidance_scale)
    text = torch.cat([uncond, cond]) if guided else cond
    both = torch.cat([condition] * 2) if guided and not guess_mode else condition
    timesteps = scheduler.timesteps
    extra = _step_kwargs(scheduler, generator, 0.0)
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)  # 1.
        s = scale * keep(i, len(timesteps), start, end)
        if guess_mode and guided:  # 2. the text half only; zeros for the empty prompt's half
            down, mid = residuals(controlnet, scheduler.scale_model_input(latents, t), t, cond, both, s, True)
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        else:
            down, mid = residuals(controlnet, x_in, t, text, both, s, guess_mode)
        eps = unet(  # 3.
            x_in, t, encoder_hidden_states=text, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        if guided:  # 4.
            eps_uncond, eps_text = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
        latents = scheduler.step(eps, t, latents, **extra, return_dict=False)[0]
    return latents


def training_steps(profile: str, device: str) -> int:
    """How many optimiser steps lesson 11's own short training runs (section 7).

    60 on `tiny` (well under a minute on a laptop CPU: enough to see the zero convolutions grow, far from the
    ~1,000 the course's trained ControlNet needed to follow the edges); 20 for SD 1.5 on a GPU and 2 on a CPU, only
    to see the loop run. ``COURSE_TRAIN_STEPS`` overrides all of them (the course's tests run a short schedule).

    Args:
        profile (`str`): ``"tiny"`` or ``"sd15"``.
        device (`str`): where the UNet runs.

    Returns:
        `int`: the number of steps.
    """
    if "COURSE_TRAIN_STEPS" in os.environ:
        return int(os.environ["COURSE_TRAIN_STEPS"])
    if profile == "tiny":
        return 60
    return 20 if device != "cpu" else 2


def training_examples(profile: str, photo, prompt: str, n: int = 512) -> list:
    """Lesson 11's training pictures and captions: ``(image, caption)`` pairs.

    Args:
        profile (`str`): on `tiny`, ``n`` training scenes of its world (``world.sample(i, "train")``, each with its own
            caption, some empty); on any other profile the one ``photo`` with ``prompt``.
        photo (`PIL.Image.Image`): the lesson's photo.
        prompt (`str`): its caption on profiles other than `tiny`.
        n (`int`, defaults to 512): how many scenes on `tiny`.

    Returns:
        `list[tuple[PIL.Image.Image, str]]`.
    """
    if profile != "tiny":
        return [(photo, prompt)]
    return [(s.image, s.caption) for s in (world.sample(i, "train") for i in range(n))]


def training_record() -> dict:
    """The training record of `tiny`'s ControlNet (``data/tiny/training_results.json``, written by
    ``python -m training export``): how its loss and its score moved during training.

    Returns:
        `dict`: ``loss_steps`` and ``loss`` (the training loss, averaged over 100 steps), ``eval_steps`` and
        ``follows`` (the share of held-out pictures whose shape overlaps the condition's by at least
        ``scores.IOU_FOLLOWS``, measured during training on 8 conditions per shape).
    """
    results = json.loads(tiny.tiny_file("training_results.json").read_text())
    return results["results"]["controlnet"]["record"]
