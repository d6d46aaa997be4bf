"""SD 1.5's models as shapes only, and the GPU work the lessons do with them (for ``gpu_memory``'s estimates).

The models are built with SD 1.5's exact configurations (``models.configs``) on PyTorch's ``meta`` device, so that
casts, LoRA adapters and ``cast_training_params`` work as usual; ``gpu_memory_counter.load`` then puts them on the
fake GPU. The work is what a lesson's cell allocates, cut to what repeats:

* one pipeline call (:func:`generate`) is its text encoding, two denoising steps (a loop's memory repeats every
  step) and its VAE decode; :func:`decode` is ``cu.decode_latents``;
* one training run (:func:`train_lora`, :func:`train_embedding`, :func:`train_controlnet`) is two optimiser steps
  (AdamW's state appears at the first).
"""

import torch
import torch.nn.functional as F

from .models import configs

SIZE = 512  # SD 1.5's image side
WORK_STEPS = 2  # denoising steps (or training steps) run per estimate: the memory of step 2 is that of step 50


# --- the models, as on the Hub (shapes only) -------------------------------------------------------------
def sd15_model(name: str, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    """One of SD 1.5's models on the ``meta`` device, in ``dtype``, in eval mode, frozen.

    Args:
        name (`str`): ``"text_encoder"``, ``"unet"``, ``"inpaint_unet"`` (9 input channels), ``"vae"``,
            ``"safety_checker"``, ``"controlnet"`` (lesson 11's canny ControlNet: ``from_unet`` of the UNet), or the
            x4 upscaler's ``"x4_text_encoder"``, ``"x4_unet"``, ``"x4_vae"``.
        dtype (`torch.dtype`, defaults to float16): the weights' dtype (the x4 VAE: pass float32, as the course loads it).

    Returns:
        `torch.nn.Module`: the model, its parameters on ``meta``.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    build = dict(
        text_encoder=lambda: CLIPTextModel(CLIPTextConfig(**configs.SD15_TEXT_ENCODER)),
        unet=lambda: UNet2DConditionModel.from_config(configs.SD15_UNET),
        inpaint_unet=lambda: UNet2DConditionModel.from_config(configs.SD15_INPAINT_UNET),
        vae=lambda: AutoencoderKL.from_config(configs.SD15_VAE),
        safety_checker=lambda: StableDiffusionSafetyChecker(CLIPConfig(**configs.SD15_SAFETY_CHECKER)),
        x4_text_encoder=lambda: CLIPTextModel(CLIPTextConfig(**configs.X4_UPSCALER_TEXT_ENCODER)),
        x4_unet=lambda: UNet2DConditionModel.from_config(configs.X4_UPSCALER_UNET),
        x4_vae=lambda: AutoencoderKL.from_config(configs.X4_UPSCALER_VAE),
        controlnet=lambda: ControlNetModel.from_unet(
            UNet2DConditionModel.from_config(configs.SD15_UNET), load_weights_from_unet=False
        ),
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: a cast afterwards makes diffusers log a note
    try:
        with torch.device("meta"):
            model = build[name]()
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def pipeline_parts(kind: str = "text2img", safety_checker: bool = True, dtype: torch.dtype = torch.float16) -> dict:
    """The models a pipeline of ``kind`` holds on the GPU, on ``meta`` (put them on the fake GPU with
    ``gpu_memory_counter.load``).

    Args:
        kind (`str`, defaults to ``"text2img"``): ``"text2img"`` (also img2img), ``"inpaint"`` or ``"upscale"``.
        safety_checker (`bool`, defaults to `True`): SD 1.5's Hub folders ship one and ``from_pretrained`` loads it.
        dtype (`torch.dtype`, defaults to float16): the weights' dtype (the upscaler's VAE stays float32).

    Returns:
        `dict`: ``text_encoder``, ``unet``, ``vae`` and (not for ``"upscale"``) ``safety_checker`` if asked.
    """
    if kind == "upscale":
        return dict(
            text_encoder=sd15_model("x4_text_encoder", dtype),
            unet=sd15_model("x4_unet", dtype),
            vae=sd15_model("x4_vae", torch.float32),
        )
    parts = dict(
        text_encoder=sd15_model("text_encoder", dtype),
        unet=sd15_model("inpaint_unet" if kind == "inpaint" else "unet", dtype),
        vae=sd15_model("vae", dtype),
    )
    if safety_checker:
        parts["safety_checker"] = sd15_model("safety_checker", dtype)
    return parts


# --- the work ------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    parts: dict,
    images: int = 1,
    size: int = SIZE,
    guidance: bool = True,
    steps: int = WORK_STEPS,
    init_image: bool = False,
    vae_slicing: bool = False,
    width: int | None = None,
) -> None:
    """What a Stable Diffusion pipeline call allocates: text, ``steps`` UNet calls, the decode, the safety checker.

    Args:
        parts (`dict`): loaded (``text_encoder``, ``unet``, ``vae``, optional ``safety_checker``); an
            ``inpaint_unet`` (9 channels) also encodes the masked image, the x4 UNet (7 channels) takes the image.
        images (`int`, defaults to 1): images in the batch (prompts x ``num_images_per_prompt``).
        size (`int`, defaults to 512): the output image's height in pixels.
        guidance (`bool`, defaults to `True`): classifier-free guidance doubles the UNet's batch.
        steps (`int`, defaults to 2): UNet calls.
        init_image (`bool`, defaults to `False`): encode an input image first (img2img).
        vae_slicing (`bool`, defaults to `False`): decode one image at a time (``pipe.vae.enable_slicing()``).
        width (`int`, *optional*): the output's width (default: ``size``).
    """
    te, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
    dtype = unet.dtype
    channels = unet.config.in_channels
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # 8 for SD 1.5, 4 for the x4 upscaler
    width = width or size
    h, w = size // factor, width // factor  # latents (the x4 upscaler's: 4 times smaller than its output)
    ids = torch.zeros(images, 77, dtype=torch.long)
    text = te(ids)[0]
    if guidance:
        text = torch.cat([te(ids)[0], text])  # the negative (empty) prompt's embeddings, then the prompt's
    extra = None
    if channels == 9 or init_image:  # encode the (masked) input image
        pixels = torch.zeros(images, 3, size, width, dtype=vae.dtype)
        encoded = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        if channels == 9:
            mask = torch.zeros(images, 1, h, w, dtype=dtype)
            extra = torch.cat([mask, encoded.to(dtype)], dim=1)
        del pixels
    if channels == 7:  # the x4 upscaler: the (noised) low-resolution image itself, 4 times smaller
        extra = torch.zeros(images, 3, h, w, dtype=dtype)
    x = torch.randn(images, 4, h, w, dtype=dtype)
    kwargs = dict(class_labels=torch.full((2 * images if guidance else images,), 20)) if channels == 7 else {}
    for _ in range(steps):
        model_in = torch.cat([x, x]) if guidance else x
        if extra is not None:
            model_in = torch.cat([model_in, torch.cat([extra, extra]) if guidance else extra], dim=1)
        eps = unet(model_in, torch.tensor(500), text, **kwargs).sample
        if guidance:
            uncond, cond = eps.chunk(2)
            eps = uncond + 7.5 * (cond - uncond)
        x = x - 0.1 * eps  # a scheduler step: a few latent-sized tensors
        del model_in, eps
    x = (x / vae.config.scaling_factor).to(vae.dtype)
    if vae_slicing:
        image = torch.cat([vae.decode(x[i : i + 1]).sample for i in range(images)])
    else:
        image = vae.decode(x).sample
    if "safety_checker" in parts:  # CLIP's image tower on 224x224 copies of the images, the images still held
        checker = parts["safety_checker"]
        checker.vision_model(torch.zeros(images, 3, 224, 224, dtype=checker.dtype))
    del image


@torch.no_grad()
def decode(parts: dict, latents: int, size: int = SIZE) -> None:
    """``latents`` latents decoded as ``cu.decode_latents`` does: ``visual.DECODE_BATCH`` per VAE call, each batch's
    images moved off the GPU before the next.

    Args:
        parts (`dict`): loaded, with a ``vae``.
        latents (`int`): how many latents, each ``[4, size/8, size/8]``.
        size (`int`, defaults to 512): the images' side in pixels.
    """
    from .visual import DECODE_BATCH

    vae = parts["vae"]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    for k in range(0, latents, DECODE_BATCH):
        n = min(DECODE_BATCH, latents - k)
        vae.decode(torch.zeros(n, 4, size // factor, size // factor, dtype=vae.dtype))


def add_lora(
    parts: dict,
    rank: int = 16,
    targets: tuple = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"),
    gradient_checkpointing: bool = True,
) -> None:
    """Prepare ``parts`` (on ``meta``) for LoRA training as diffusers' scripts (and lesson 10) do: a LoRA on the
    UNet's ``targets``, its parameters cast to float32 (``cast_training_params``), the rest frozen in half precision.

    Args:
        parts (`dict`): from :func:`pipeline_parts`, not yet loaded.
        rank (`int`, defaults to 16): the LoRA's rank (lesson 10 on SD 1.5).
        targets (`tuple`, defaults to attention and ResNet layers): the layers that get a LoRA
            (``new_concept.LORA_TARGETS``).
        gradient_checkpointing (`bool`, defaults to `True`): recompute the UNet's activations in the backward pass.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet = parts["unet"]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)))
    cast_training_params(unet, dtype=torch.float32)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()


def train_lora(parts: dict, batch: int = 2, size: int = SIZE, steps: int = WORK_STEPS) -> torch.optim.Optimizer:
    """What LoRA training steps allocate (after :func:`add_lora` and loading).

    Cached latents and text embeddings (the VAE and text encoder only sit in memory), the forward pass under
    autocast, the loss scaled and the gradients unscaled in place (what a ``GradScaler`` does), gradient clipping,
    AdamW.

    Args:
        parts (`dict`): loaded.
        batch (`int`, defaults to 2): images per step.
        size (`int`, defaults to 512): image side (latents 8 times smaller).
        steps (`int`, defaults to 2): optimiser steps.

    Returns:
        `torch.optim.Optimizer`: the optimiser (its state stays in memory while it is referenced).
    """
    unet = parts["unet"]
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for _ in range(steps):
        latents = torch.randn(batch, 4, size // 8, size // 8)
        text = torch.randn(batch, 77, unet.config.cross_attention_dim)
        noise = torch.randn_like(latents)
        with torch.autocast("cpu", dtype=torch.float16):
            pred = unet(latents + noise, torch.randint(0, 1000, (batch,)), text).sample
        loss = F.mse_loss(pred.float(), noise)
        (loss * 1024).backward()
        torch._foreach_mul_([p.grad for p in params], 1 / 1024)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del latents, text, noise, pred, loss
    return optimizer


def train_embedding(
    parts: dict,
    images: int = 8,
    batch: int = 1,
    size: int = SIZE,
    gradient_checkpointing: bool = True,
    steps: int = WORK_STEPS,
) -> None:
    """What training one new word's embedding allocates (``text_embeddings.train_textual_inversion``).

    Everything is frozen but one row of the token table (float32): the gradient flows back through the UNet and
    the text encoder to it, so their activations are kept (or, with gradient checkpointing, the UNet's recomputed).
    The images are encoded once and kept as latents.

    Args:
        parts (`dict`): loaded.
        images (`int`, defaults to 8): pictures of the concept.
        batch (`int`, defaults to 1): pictures per forward and backward pass (gradients add up over the rest).
        size (`int`, defaults to 512): image side.
        gradient_checkpointing (`bool`, defaults to `True`): in the UNet.
        steps (`int`, defaults to 2): optimiser steps.
    """
    from .text_embeddings import encode_embeddings

    te, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(torch.zeros(1, 3, size, size, dtype=vae.dtype)).latent_dist.mean for _ in range(images)]
        )
    row = torch.zeros(te.config.hidden_size, requires_grad=True)
    optimizer = torch.optim.Adam([row], lr=5e-3)
    table = te.get_input_embeddings()
    for _ in range(steps):
        for start in range(0, images, batch):
            n = min(batch, images - start)
            with torch.autocast("cpu", dtype=torch.float16):
                text = encode_embeddings(te, table(torch.zeros(n, 77, dtype=torch.long)) + row)
                x = latents[start : start + n]
                pred = unet(x + torch.randn_like(x), torch.randint(0, 1000, (n,)), text).sample
            loss = F.mse_loss(pred.float(), torch.zeros(pred.shape))
            (loss * 1024).backward()
            del text, x, pred, loss
        row.grad.mul_(1 / 1024)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def train_controlnet(parts: dict, student, batch: int = 1, size: int = SIZE, steps: int = WORK_STEPS) -> None:
    """What lesson 11's ControlNet training steps allocate: a ``student`` ControlNet trained in float32 (AdamW) beside
    the frozen half-precision UNet, whose activations are kept for the gradient to flow back through it to the
    residuals; both with gradient checkpointing, as the lesson runs SD 1.5.

    Args:
        parts (`dict`): loaded (``unet``; the pipeline's other models only sit in memory).
        student (`ControlNetModel`): loaded, in float32.
        batch (`int`, defaults to 1): pictures per step.
        size (`int`, defaults to 512): image side (the condition's; latents 8 times smaller).
        steps (`int`, defaults to 2): optimiser steps.
    """
    unet = parts["unet"]
    student.requires_grad_(True).train().enable_gradient_checkpointing()
    unet.enable_gradient_checkpointing()
    unet.train()
    params = list(student.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    for _ in range(steps):
        x = torch.randn(batch, 4, size // 8, size // 8, dtype=unet.dtype)
        text = torch.randn(batch, 77, unet.config.cross_attention_dim, dtype=unet.dtype)
        condition = torch.zeros(batch, 3, size, size)
        t = torch.randint(0, 1000, (batch,))
        with torch.autocast("cpu", dtype=torch.float16):
            down, mid = student(x, t, encoder_hidden_states=text, controlnet_cond=condition, return_dict=False)
            pred = unet(x, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        loss = F.mse_loss(pred.float(), torch.zeros(pred.shape))
        (loss * 1024).backward()
        torch._foreach_mul_([p.grad for p in params], 1 / 1024)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del x, text, condition, down, mid, pred, loss
    del optimizer
