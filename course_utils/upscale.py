"""The x4 upscaler (``stabilityai/stable-diffusion-x4-upscaler``): offline models and input checks.

The upscaler is a latent diffusion model like SD 1.5, with three differences this module
reproduces in the course's `tiny` and `sd15-random` profiles:

* its UNet takes **7** input channels: the 4 noisy latents plus the 3 RGB channels of the
  low-resolution image, concatenated at every step (``unet.config.in_channels == 7``);
* the low-res image is first noised by a second scheduler (``low_res_scheduler``, a
  ``DDPMScheduler``) to ``noise_level`` (0 .. ``max_noise_level`` = 350), and the UNet is told
  that level through a class embedding (``num_class_embeds=1000``);
* its VAE has 3 blocks, so it shrinks images **4x** (not 8x) and its ``scaling_factor`` is
  0.08333 (SD 1.5: 0.18215). The latent of a 512x512 output is 128x128, the size of the input.

Nothing here downloads anything: the `tiny` upscaler is this repository's trained model
(``data/tiny/upscale``; text encoder and tokenizer are the `tiny` text-to-image model's),
assembled once with :func:`course_utils.build.cached_build`; ``sd15-random`` has the real
model's sizes with random weights.
"""
import math
import numbers

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from . import build, configs
from .device import CourseError

# --- The real model's configuration ---------------------------------------------------------
# Sources: the Hub folder stabilityai/stable-diffusion-x4-upscaler (scheduler/, low_res_scheduler/,
# unet/ and vae/ configs) and the original model's config it was converted from,
# Stability-AI/stablediffusion configs/stable-diffusion/x4-upscaling.yaml (linear_start 0.0001,
# linear_end 0.02 for both schedules - LDM's "linear" is diffusers' "scaled_linear" -;
# parameterization "v"; max_noise_level 350; scale_factor 0.08333). diffusers' single-file loader
# (loaders/single_file_utils.py) builds the same low_res_scheduler.

# Denoises the latents, like SD 1.5's PNDM, but the UNet predicts v (a mix of noise and image).
SD15_UPSCALER_SCHEDULER = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}
# Adds noise to the low-res *image* (pixels, not latents): noise_level is its timestep.
SD15_UPSCALER_LOW_RES_SCHEDULER = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": True,
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "trained_betas": None,
}
SD15_UPSCALER_MAX_NOISE_LEVEL = 350

# The text encoder is SD 2's OpenCLIP ViT-H/14 (penultimate layer, so 23 of its 24 layers).
SD15_UPSCALER_TEXT_ENCODER = dict(
    configs.SD15_TEXT_ENCODER,
    hidden_size=1024,  # text embeddings [1, 77, 1024]
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    projection_dim=512,
)
SD15_UPSCALER_UNET = dict(
    sample_size=128,  # latents 128x128 -> 512x512 images (from 128x128 inputs)
    in_channels=7,  # 4 noisy latents + 3 channels of the (noised) low-res RGB image
    out_channels=4,
    block_out_channels=(256, 512, 512, 1024),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    # no self-attention at the three highest resolutions (too expensive on 128x128 latents):
    only_cross_attention=(True, True, True, False),
    cross_attention_dim=1024,  # = the text encoder's hidden size
    attention_head_dim=8,  # diffusers' legacy name: 8 attention *heads*
    use_linear_projection=True,
    num_class_embeds=1000,  # an embedding of noise_level (0..999), added to the timestep embedding
    class_embed_type=None,
)
SD15_UPSCALER_VAE = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512),  # 3 blocks -> 2 downsamplings -> 4x smaller (SD 1.5: 8x)
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=2,
    scaling_factor=0.08333,  # the pipeline overwrites any other value (with a deprecation warning)
)

# --- tiny: the same architecture, trained by this repository (data/tiny/upscale) -----------
TINY_UPSCALER_UNET = dict(
    SD15_UPSCALER_UNET,  # the real upscaler's block types, class embeddings, linear projections
    sample_size=16,  # 16x16 input -> 16x16 latents -> 64x64 output
    block_out_channels=(32, 32, 64, 64),  # 16x16, 8x8, 4x4, 2x2
    layers_per_block=1,
    norm_num_groups=32,
    cross_attention_dim=configs.TINY_TEXT_ENCODER["hidden_size"],  # 64: the tiny text encoder's
)
# Its VAE is the tiny text-to-image VAE (3 blocks, 4x, like the real upscaler's), rescaled by
# upscaler_vae() to SD15_UPSCALER_VAE's scaling_factor, which the upscale pipeline requires.


def upscaler_vae(vae: AutoencoderKL, scaling_factor: float = SD15_UPSCALER_VAE["scaling_factor"]) -> AutoencoderKL:
    """The same autoencoder, with latents rescaled so that ``latents * scaling_factor`` keep unit std.

    ``StableDiffusionUpscalePipeline`` always decodes ``latents / 0.08333``. The `tiny`
    text-to-image VAE was measured to need ``scaling_factor`` ~0.34 instead: used as it is, its
    scaled latents would have a std of ~0.25, and every error of the UNet would come out of the
    decoder 4x larger. This folds the factor ``k = vae.config.scaling_factor / scaling_factor`` into
    the two 1x1 convolutions around the latent: ``quant_conv`` makes the posterior's mean ``k``
    times larger (and its log-variance ``2 ln k`` larger), ``post_quant_conv`` divides its input by
    ``k``. Encoding then decoding gives the same images as before (up to float rounding).

    Args:
        vae (`AutoencoderKL`): a VAE with ``quant_conv`` and ``post_quant_conv`` (SD's have them).
        scaling_factor (`float`, defaults to 0.08333): the scaling factor the new VAE should have.

    Returns:
        `AutoencoderKL`: a new model (``vae`` is left as it was), float32, in eval mode.
    """
    k = float(vae.config.scaling_factor) / scaling_factor
    new = AutoencoderKL.from_config(vae.config, scaling_factor=scaling_factor)
    new.load_state_dict(vae.state_dict())
    new = new.float().eval()
    c = new.config.latent_channels
    with torch.no_grad():
        new.quant_conv.weight[:c] *= k  # mean channels
        new.quant_conv.bias[:c] *= k
        new.quant_conv.bias[c:] += 2 * math.log(k)  # log-variance channels: std grows k times too
        new.post_quant_conv.weight /= k  # [out, in, 1, 1]: undo the factor on the way back
    return new


def _schedulers() -> dict:
    return dict(
        scheduler=DDIMScheduler.from_config(SD15_UPSCALER_SCHEDULER),
        low_res_scheduler=DDPMScheduler.from_config(SD15_UPSCALER_LOW_RES_SCHEDULER),
    )


def upscaler_components(text_encoder, unet_cfg: dict, vae_cfg: dict, seed: int = configs.TINY_SEED) -> dict:
    """Create the components of a ``StableDiffusionUpscalePipeline`` with seeded random weights.

    Args:
        text_encoder (`CLIPTextModel`): the text encoder (its ``hidden_size`` must equal
            ``unet_cfg["cross_attention_dim"]``).
        unet_cfg (`dict`): ``UNet2DConditionModel`` arguments (``in_channels=7``).
        vae_cfg (`dict`): ``AutoencoderKL`` arguments (3 blocks, ``scaling_factor=0.08333``).
        seed (`int`): seed for the random initialisation.

    Returns:
        `dict`: keyword arguments for ``StableDiffusionUpscalePipeline`` (no safety checker,
        feature extractor or watermarker; ``max_noise_level=350``).
    """
    torch.manual_seed(seed + 10)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed + 11)
    vae = AutoencoderKL(**vae_cfg)
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build.load_tokenizer(),
        unet=unet,
        **_schedulers(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        max_noise_level=SD15_UPSCALER_MAX_NOISE_LEVEL,
    )


def tiny_source():
    """The folder ``from_pretrained`` loads the `tiny` x4 upscaler from (assembled on first use).

    The 7-channel UNet is ``data/tiny/upscale/unet`` (trained to turn 16x16 images into 64x64);
    the VAE, ``data/tiny/upscale/vae``, is the `tiny` text-to-image VAE (also 4x) rescaled to the
    upscaler's ``scaling_factor`` 0.08333 (:func:`upscaler_vae`); text encoder and tokenizer are
    the text-to-image model's.

    Returns:
        `Path`: a diffusers pipeline folder (``model_index.json``, ``unet/``, ``vae/``, ...).
    """
    text_folder, unet_dir, vae_dir = build.tiny_text2img_folder(), build.tiny_file("upscale", "unet"), build.tiny_file("upscale", "vae")
    spec = dict(
        weights=build.digest(text_folder, unet_dir, vae_dir),
        scheduler=SD15_UPSCALER_SCHEDULER,
        low_res_scheduler=SD15_UPSCALER_LOW_RES_SCHEDULER,
        max_noise_level=SD15_UPSCALER_MAX_NOISE_LEVEL,
    )

    def make():
        f32 = dict(dtype=torch.float32)
        return StableDiffusionUpscalePipeline(
            vae=AutoencoderKL.from_pretrained(vae_dir, **f32),
            text_encoder=CLIPTextModel.from_pretrained(text_folder, subfolder="text_encoder", **f32),
            tokenizer=build.load_tokenizer(),
            unet=UNet2DConditionModel.from_pretrained(unet_dir, **f32),
            **_schedulers(),
            safety_checker=None,
            feature_extractor=None,
            watermarker=None,
            max_noise_level=SD15_UPSCALER_MAX_NOISE_LEVEL,
        )

    return build.cached_build("tiny-upscale", spec, make)


def _dtypes(dtype: torch.dtype) -> dict:
    # The x4 VAE overflows in float16. With a float16 VAE the pipeline casts it to float32 at every
    # call through its deprecated upcast_vae(); keeping the VAE in float32 from the start avoids that.
    return {"default": dtype, "vae": torch.float32}


def tiny_pipeline(cls=StableDiffusionUpscalePipeline, dtype: torch.dtype = torch.float32):
    """The trained `tiny` x4 upscaler: the real upscaler's architecture, 16x16 -> 64x64.

    The UNet is its own; VAE, tokenizer and text encoder are the `tiny` text-to-image model's.
    Every mechanism - 7-channel UNet, noise_level, 4x VAE - is the real upscaler's.

    Args:
        cls (`type`): ``StableDiffusionUpscalePipeline``.
        dtype (`torch.dtype`): dtype of the text encoder and UNet; the VAE stays float32.

    Returns:
        `StableDiffusionUpscalePipeline`: on the CPU (move it with ``.to(device)``).
    """
    return cls.from_pretrained(tiny_source(), dtype=_dtypes(dtype))


def sd15_random_pipeline(cls=StableDiffusionUpscalePipeline, dtype: torch.dtype = torch.float32):
    """The x4 upscaler at full size with random weights (~0.9 B parameters), built in memory.

    For speed and memory measurements only: the images are noise.

    Args:
        cls (`type`): ``StableDiffusionUpscalePipeline``.
        dtype (`torch.dtype`): dtype of the text encoder and UNet; the VAE stays float32.

    Returns:
        `StableDiffusionUpscalePipeline`: on the CPU.
    """
    torch.manual_seed(configs.TINY_SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_UPSCALER_TEXT_ENCODER))
    parts = upscaler_components(text_encoder, SD15_UPSCALER_UNET, SD15_UPSCALER_VAE)
    for name in ("text_encoder", "unet"):  # the VAE stays float32 (see _dtypes)
        if dtype == torch.float16:
            parts[name].half()  # (a model's .to(dtype) also works but logs a note about fp32 modules)
        elif dtype != torch.float32:
            parts[name].to(dtype=dtype)
    return cls(**parts)


def check_noise_level(pipe, noise_level) -> int:
    """Raise a clear error unless ``noise_level`` is a whole number in ``[0, pipe.config.max_noise_level]``.

    diffusers itself only rejects values above the maximum (with a ``ValueError``); a negative
    value would silently index the noise schedule from its end, then crash in the UNet's
    class embedding.

    Args:
        pipe (`StableDiffusionUpscalePipeline`): the upscaler (its ``config.max_noise_level``, 350).
        noise_level (`int`): how much noise is added to the low-res image before it conditions the UNet.

    Returns:
        `int`: ``noise_level`` unchanged.

    Raises:
        CourseError: the value is not a whole number, or outside the allowed range.
    """
    top = int(pipe.config.max_noise_level)
    what = (
        "noise_level is how much noise the upscaler adds to the low-res image before the UNet sees it "
        "(a step of its low_res_scheduler, also passed to the UNet as a label): 0 keeps the input as it is, "
        "higher values let the model invent more detail and drift further from the input; the default is 20."
    )
    if isinstance(noise_level, bool) or not isinstance(noise_level, numbers.Integral):
        raise CourseError(f"noise_level must be a whole number from 0 to {top}, got {noise_level!r}. {what}")
    if not 0 <= noise_level <= top:
        raise CourseError(
            f"noise_level={noise_level} is outside the allowed range [0, {top}] (pipe.config.max_noise_level; "
            f"the model was trained only up to {top}). {what}"
        )
    return int(noise_level)


def low_res_input(image: Image.Image, factor: int = 4) -> Image.Image:
    """Make the low-resolution input of an upscaling experiment from a photo.

    Each ``factor x factor`` block of pixels is averaged into one (``Image.Resampling.BOX``),
    like a camera with bigger pixels. The original stays the reference to compare against.

    Args:
        image (`PIL.Image.Image`): the photo, RGB, e.g. ``cu.load_image("chelsea.png", size=256)``.
        factor (`int`, defaults to 4): how much smaller; the x4 upscaler undoes 4.

    Returns:
        `PIL.Image.Image`: RGB, ``width/factor x height/factor`` (e.g. 256x256 -> 64x64).

    Raises:
        CourseError: the result would not have sides that are multiples of 8 (the upscaler's
            UNet halves its latent three times; its latent is as big as this image).
    """
    w, h = image.size
    lw, lh = w // factor, h // factor
    if w % factor or h % factor or lw % 8 or lh % 8 or lw == 0 or lh == 0:
        step = 8 * factor
        raise CourseError(
            f"A {w}x{h} image does not shrink {factor}x to sides that are multiples of 8 (it would be {lw}x{lh}). "
            f"Use sides that are multiples of {step}, e.g. cu.load_image(..., size=({max(step, w // step * step)}, "
            f"{max(step, h // step * step)}))."
        )
    return image.convert("RGB").resize((lw, lh), Image.Resampling.BOX)


def psnr(image: Image.Image, reference: Image.Image) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``reference``, in dB (higher = closer).

    ``10 * log10(1 / mean((image - reference)^2))`` on pixel values in [0, 1]; about 20-30 dB is
    typical for a 4x upscale of a photo. PSNR rewards blur over plausible invented detail,
    so it is one number to look at, not the verdict.

    Args:
        image (`PIL.Image.Image`): e.g. the upscaled image.
        reference (`PIL.Image.Image`): the original, same size.

    Returns:
        `float`: dB; ``inf`` for identical images.
    """
    if image.size != reference.size:
        raise CourseError(f"psnr needs images of the same size, got {image.size} and {reference.size}.")
    a = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    b = np.asarray(reference.convert("RGB"), dtype=np.float64) / 255.0
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
