"""Teaching a model something it has never seen: the data, one training step, and how to tell it learned.

Lesson 10 writes the training loop out in its cells and checks its first step against :func:`training_loss`;
``tests/test_new_concept.py`` checks this module against diffusers and the world's ground truth.

Stable Diffusion is trained with one loss (lesson 03, §2). Turned into an optimiser step::

    x_0   = vae.encode(image) * scaling_factor          # latents [B, 4, h, w] (cached once: the VAE is frozen)
    c     = text_encoder(caption ids)                    # [B, 77, hidden]      (cached once: frozen too)
    eps   = randn_like(x_0)                              # the noise to predict
    t     = randint(0, 1000, [B])                        # a random timestep per image
    x_t   = scheduler.add_noise(x_0, eps, t)             # sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) eps
    loss  = mse(unet(x_t, t, c), eps)                    # how wrong the predicted noise is
    loss.backward(); optimizer.step()                    # only the trainable weights move (here: a LoRA)

On `tiny` the new thing is a shape of the world it never drew (``world.NEW_SHAPES``: a diamond), rendered with
captions ("a red diamond on a white background") and mixed half and half with the world's own captioned scenes
(*prior preservation*, as DreamBooth mixes in class images), so that the old prompts keep their meaning.
:func:`share_drawn` reads the pictures back with ``world.classify`` to count how many show the new shape.
"""

import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from course_utils import by_hand, latents, scores, world
from course_utils.images import to_tensor

__all__ = [
    "NOISE_OFFSET",
    "LORA_TARGETS",
    "training_steps",
    "star",
    "shape_iou",
    "concept_scenes",
    "prior_scenes",
    "photo_crops",
    "encode_dataset",
    "sample_latents",
    "training_loss",
    "concept_prompts",
    "share_drawn",
    "old_prompts_kept",
]

NOISE_OFFSET = (
    0.2  # offset noise, as `tiny` was trained (lesson 03's box): plain dark or bright backgrounds stay reachable
)
# Where the LoRA sits: the attention projections AND the ResNet blocks' two convolutions. A LoRA on the attention
# projections alone (46,592 parameters on `tiny`) drew no diamond in 240 steps (docs/training.md, "Toward issue 16"):
# a shape's corners are made by the convolutions, not by where the text attends.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")
PRIOR_SEED = 10**9  # prior scenes are world.sample(PRIOR_SEED + i): seeds no concept scene uses


def training_steps(profile: str, device: str) -> int:
    """How many optimiser steps lesson 10 trains its LoRA for, printing why when it is only a few.

    The full recipe: 400 on `tiny` (about 4 minutes on a 2-core CPU), 200 for SD 1.5 on a GPU; SD 1.5 on a CPU
    gets 4, only to see the mechanics run. ``COURSE_TRAIN_STEPS`` overrides all of them (the course's tests run a
    short schedule, to check that the loss falls).

    Args:
        profile (`str`): ``"tiny"`` or ``"sd15"``.
        device (`str`): where the UNet runs (``"cuda"``, ``"mps"``, ``"cpu"``).

    Returns:
        `int`: the number of steps.
    """
    if "COURSE_TRAIN_STEPS" in os.environ:
        return int(os.environ["COURSE_TRAIN_STEPS"])
    if profile == "tiny":
        return 400
    if device != "cpu":
        return 200
    print("SD 1.5 on a CPU: 4 steps, only to see the mechanics run; a real run needs a GPU.")
    return 4


def star(color: str, background: str, r: float = 22, inner: float = 0.382, size: int = 64) -> Image.Image:
    """A five-pointed star in the middle of a picture of the world (4x supersampled, like ``world.draw``).

    Lesson 10, §2 puts it through the VAE beside a diamond: its points are thinner than one of `tiny`'s latent
    pixels (4 image pixels), so the round trip loses them.

    Args:
        color (`str`): a colour of ``world.COLORS``.
        background (`str`): a colour of ``world.BACKGROUNDS``.
        r (`float`, defaults to 22): the outer radius in pixels.
        inner (`float`, defaults to 0.382): the inner radius as a share of ``r`` (0.382: a regular star).
        size (`int`, defaults to 64): the picture's side.

    Returns:
        `PIL.Image.Image`: ``size`` x ``size`` RGB.
    """
    s = 4
    img = Image.new("RGB", (size * s, size * s), world.BACKGROUNDS[background])
    points = []
    for k in range(10):  # the outer and inner corners in turn, starting at the top
        radius, angle = (r if k % 2 == 0 else r * inner) * s, -math.pi / 2 + k * math.pi / 5
        points.append((size * s / 2 + radius * math.cos(angle), size * s / 2 + radius * math.sin(angle)))
    ImageDraw.Draw(img).polygon(points, fill=world.COLORS[color])
    return img.resize((size, size), Image.Resampling.BOX)


def shape_iou(a: Image.Image, b: Image.Image) -> float:
    """How much of the shape two pictures of one scene share: the IoU of their shape pixels (``world.shape_mask``).

    Args:
        a (`PIL.Image.Image`): a picture of the world, e.g. a drawing.
        b (`PIL.Image.Image`): another picture of the same scene, e.g. the drawing after the VAE's round trip.

    Returns:
        `float`: intersection over union, 1.0 for the same shape pixels.
    """
    masks = [world.shape_mask(im) for im in (a, b)]
    return float((masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum())


def concept_scenes(shape: str, n: int, seed: int = 0) -> list:
    """``n`` rendered scenes of a shape, in the world's colours, backgrounds, sizes and caption templates.

    Args:
        shape (`str`): e.g. ``"diamond"`` (``world.NEW_SHAPES``).
        n (`int`): how many.
        seed (`int`, defaults to 0): scene ``i`` is ``world.sample(seed + i, shape=shape)``.

    Returns:
        `list[world.Sample]`: ``.image`` (64x64 RGB), ``.caption`` (never empty), ``.color``, ``.background``.
    """
    return [world.sample(seed + i, shape=shape) for i in range(n)]


def prior_scenes(n: int, seed: int = 0) -> list:
    """``n`` of the world's own training scenes (circles, squares, triangles; 10% with an empty caption).

    Args:
        n (`int`): how many.
        seed (`int`, defaults to 0): scene ``i`` is ``world.sample(PRIOR_SEED + seed + i, "train")``.

    Returns:
        `list[world.Sample]`.
    """
    return [world.sample(PRIOR_SEED + seed + i, "train") for i in range(n)]


def photo_crops(image: Image.Image, n: int, size: int, seed: int = 0, scale: tuple = (0.6, 1.0)) -> list:
    """``n`` random square crops of one photo, resized to ``size``: a handful of "instance" images (DreamBooth).

    Args:
        image (`PIL.Image.Image`): the photo (any size; RGB).
        n (`int`): how many crops.
        size (`int`): their side in pixels (the pipeline's height and width, e.g. 512).
        seed (`int`, defaults to 0): for the crop positions.
        scale (`tuple[float, float]`, defaults to ``(0.6, 1.0)``): the crop's side as a share of the photo's shorter side.

    Returns:
        `list[PIL.Image.Image]`: ``n`` RGB images of ``size`` x ``size``.
    """
    image = image.convert("RGB")
    rng = random.Random(seed)
    short = min(image.size)
    out = []
    for _ in range(n):
        side = int(short * rng.uniform(*scale))
        x, y = rng.randint(0, image.width - side), rng.randint(0, image.height - side)
        out.append(image.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.LANCZOS))
    return out


@torch.no_grad()
def encode_dataset(pipe, images: list, captions: list[str], batch_size: int | None = None) -> dict:
    """Run the frozen VAE and text encoder once over the training set, so each step only runs the UNet.

    Args:
        pipe (`StableDiffusionPipeline`): its ``vae``, ``tokenizer`` and ``text_encoder`` are used.
        images (`list[PIL.Image.Image]`): ``N`` images at the pipeline's size.
        captions (`list[str]`): ``N`` captions.
        batch_size (`int`, *optional*): images per VAE call. Default: as many as make 2**18 pixels (64 of
            `tiny`'s 64x64 images; one 512x512 image: SD 1.5's VAE encoder keeps about 0.3 GiB per image in float16).

    Returns:
        `dict`: ``mean`` and ``std`` of the VAE's latent distribution, ``[N, 4, h, w]`` each, unscaled, on the
        CPU in float32 (``course_utils.latents.encode``, the cache ``training/`` keeps too; :func:`sample_latents`
        draws from it and scales); ``text`` ``[N, 77, hidden]``, the text encoder's output, on the CPU in float32.
    """
    if len(images) != len(captions):
        raise ValueError(f"one caption per image: got {len(images)} images and {len(captions)} captions")
    vae, text_encoder, tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
    if batch_size is None:
        width, height = images[0].size if images else (1, 1)
        batch_size = max(1, 2**18 // (width * height))
    means, stds, texts = [], [], []
    for k in range(0, len(images), batch_size):
        part = latents.encode(vae, to_tensor(images[k : k + batch_size]))  # pixels [b, 3, H, W] in [-1, 1]
        means.append(part["mean"])
        stds.append(part["std"])
        texts.append(by_hand.encode_text(tokenizer, text_encoder, captions[k : k + batch_size]).float().cpu())
    return dict(mean=torch.cat(means), std=torch.cat(stds), text=torch.cat(texts))


def sample_latents(data: dict, index: torch.Tensor, scaling_factor: float, generator: torch.Generator) -> torch.Tensor:
    """Latents ``x_0`` for the images ``index``: a draw from the VAE's distribution, times ``scaling_factor``.

    ``course_utils.latents.draw``, the draw ``training/`` makes from its latent cache too: ``(mean + std * randn)
    * scaling_factor``, one ``randn`` from ``generator``. The lesson draws ``index`` itself first (``draw_batch``:
    half new, half prior), from the same generator.

    Args:
        data (`dict`): from :func:`encode_dataset`.
        index (`torch.LongTensor`): ``[B]`` image numbers.
        scaling_factor (`float`): ``vae.config.scaling_factor``.
        generator (`torch.Generator`): a CPU generator.

    Returns:
        `torch.Tensor`: ``[B, 4, h, w]`` on the CPU, float32.
    """
    return latents.draw(data, index, scaling_factor, generator)


def noise_latents(latents, scheduler, generator, noise_offset: float = NOISE_OFFSET, timesteps=None) -> tuple:
    """``x_0`` noised as in training: ``x_t = add_noise(x_0, eps, t)`` at random timesteps, with offset noise.

    The random numbers are drawn in this order (what :func:`training_loss` and
    ``text_embeddings.train_textual_inversion`` both rely on): ``eps = randn([B, 4, h, w])``, then
    ``noise_offset * randn([B, 4, 1, 1])`` added to it (drawn even when ``noise_offset`` is 0), then ``t``.

    Args:
        latents (`torch.Tensor`): ``x_0``, ``[B, 4, h, w]``, already scaled, on the CPU.
        scheduler: a scheduler with ``add_noise`` and ``config.num_train_timesteps``.
        generator (`torch.Generator`): a CPU generator.
        noise_offset (`float`, defaults to ``NOISE_OFFSET``): the offset noise's std.
        timesteps (`tuple[int, int]`, *optional*): the range ``t`` is drawn from (upper bound excluded); default
            every training timestep.

    Returns:
        `tuple[torch.Tensor, torch.Tensor, torch.Tensor]`: ``(x_t, eps, t)``, ``[B, 4, h, w]`` twice and ``[B]``.
    """
    b, ch = latents.shape[:2]
    noise = torch.randn(latents.shape, generator=generator)  # eps
    noise = noise + noise_offset * torch.randn((b, ch, 1, 1), generator=generator)
    low, high = timesteps or (0, scheduler.config.num_train_timesteps)
    t = torch.randint(low, high, (b,), generator=generator)
    return scheduler.add_noise(latents, noise, t), noise, t


def training_loss(
    unet,
    scheduler,
    latents: torch.Tensor,
    text: torch.Tensor,
    generator: torch.Generator,
    noise_offset: float = NOISE_OFFSET,
) -> torch.Tensor:
    """Stable Diffusion's training loss for one batch: noise the latents, predict the noise, mean squared error.

    The noising runs where ``latents`` are (the CPU) in their dtype (float32): ``scheduler.add_noise`` casts
    ``alphas_cumprod`` to the latents' dtype, and in float16 that rounds ``sqrt(1 - a_bar_t)`` by up to 2% at small
    t. Only ``x_t`` and the text go to the UNet's device and dtype. Call it under ``precision.autocast`` to train in
    half precision as diffusers' scripts do.

    Args:
        unet (`UNet2DConditionModel`): predicts epsilon.
        scheduler: a scheduler with ``add_noise`` and ``config.num_train_timesteps`` (the pipeline's, or DDPM).
        latents (`torch.Tensor`): ``x_0``, ``[B, 4, h, w]``, already scaled, on the CPU.
        text (`torch.Tensor`): ``c``, ``[B, 77, hidden]``.
        generator (`torch.Generator`): a CPU generator; draws the noise, then the timesteps.
        noise_offset (`float`, defaults to ``NOISE_OFFSET``): adds ``noise_offset * randn([B, 4, 1, 1])`` to the
            noise (one value per image and channel).

    Returns:
        `torch.Tensor`: the scalar loss (float32), with a gradient for whatever in ``unet`` requires one.
    """
    noisy, noise, t = noise_latents(latents, scheduler, generator, noise_offset)  # x_t, eps, t
    device, dtype = unet.device, unet.dtype
    eps_hat = unet(noisy.to(device, dtype), t.to(device), encoder_hidden_states=text.to(device, dtype)).sample
    return F.mse_loss(eps_hat.float(), noise.to(device).float())


def concept_prompts(shape: str, n: int = 20) -> list[str]:
    """``n`` prompts for ``shape``, every colour in turn, every other one with a background.

    Args:
        shape (`str`): e.g. ``"diamond"``.
        n (`int`, defaults to 20): how many.

    Returns:
        `list[str]`: ``"a red diamond"``, ``"an orange diamond on a black background"``, ...
    """
    colors, backgrounds = list(world.COLORS), ["white", "black", "gray", "blue", "yellow"]
    prompts = []
    for i in range(n):
        color, background = colors[i % len(colors)], backgrounds[i % len(backgrounds)]
        prompt = f"{world.article(color)} {color} {shape}"
        if i % 2 and background != color:
            prompt += f" on {world.article(background)} {background} background"
        prompts.append(prompt)
    return prompts


@torch.no_grad()
def share_drawn(pipe, shape: str, prompts: list[str], seeds: list[int] | None = None, **settings) -> tuple:
    """The share of images that ``world.classify`` (with ``world.NEW_SHAPES`` among its templates) reads as ``shape``.

    Args:
        pipe (`StableDiffusionPipeline`): a `tiny` text-to-image pipeline (with or without a LoRA).
        shape (`str`): the shape to look for.
        prompts (`list[str]`): one image per prompt, in one batch.
        seeds (`list[int]`, *optional*): one seed per prompt (default ``0, 1, 2, ...``).
        **settings: ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``.

    Returns:
        `tuple[float, list[PIL.Image.Image], list[dict]]`: the share, the images and what ``classify`` found.
    """
    seeds = list(range(len(prompts))) if seeds is None else list(seeds)
    images = pipe(list(prompts), generator=[torch.Generator().manual_seed(s) for s in seeds], **settings).images
    found = [world.classify(im, shapes=world.SHAPES + world.NEW_SHAPES) for im in images]
    return float(np.mean([f["shape"] == shape for f in found])), images, found


@torch.no_grad()
def old_prompts_kept(pipe, shape: str, seeds: tuple = (0, 1), **settings) -> dict:
    """Forgetting, measured: the world's 12 trained prompts (``scores.SEEN``), each with ``seeds``, read back.

    Args:
        pipe (`StableDiffusionPipeline`): a `tiny` text-to-image pipeline (with or without a LoRA).
        shape (`str`): the new shape, e.g. ``"diamond"``: how many old prompts come out as one.
        seeds (`tuple[int]`, defaults to ``(0, 1)``): the seeds of each prompt (one batch of 12 x len(seeds)).
        **settings: ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``.

    Returns:
        `dict`: ``colour`` and ``shape``, the share drawn in the prompt's colour and shape; ``diamonds`` (named for
        lesson 10's shape), how many were drawn as ``shape``; ``n``, how many pictures.
    """
    asked = [(prompt, color, kind) for prompt, color, kind, _ in scores.SEEN for _ in seeds]
    generators = [torch.Generator().manual_seed(seed) for _ in scores.SEEN for seed in seeds]
    images = pipe([prompt for prompt, _, _ in asked], generator=generators, **settings).images
    found = [world.classify(im, shapes=world.SHAPES + world.NEW_SHAPES) for im in images]
    return dict(
        colour=float(np.mean([f["color"] == color for f, (_, color, _) in zip(found, asked)])),
        shape=float(np.mean([f["shape"] == kind for f, (_, _, kind) in zip(found, asked)])),
        diamonds=sum(f["shape"] == shape for f in found),
        n=len(found),
    )
