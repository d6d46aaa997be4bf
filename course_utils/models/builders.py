"""One builder per profile for every role: the pipelines of `tiny` (trained) and `sd15-random` (random).

Nothing here downloads anything (the `sd15` profile is ``from_pretrained`` on a Hub repository,
see :mod:`course_utils.models.registry`). Every builder has the same signature,
``builder(cls, dtype) -> pipeline`` (on the CPU), where ``cls`` is the role's diffusers pipeline
class: text-to-image and image-to-image share their components, so one builder serves both.

* `tiny`: the trained models of ``data/tiny`` (:mod:`course_utils.models.tiny`), loaded with
  ``from_pretrained`` / ``from_single_file`` - the same calls a learner makes for a Hub model.
* `sd15-random`: SD 1.5's (and the x4 upscaler's) full-size architecture with seeded random
  weights, for speed and memory measurements only: its images are noise.
"""

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    PNDMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionUpscalePipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..device import cast
from . import configs, tiny


# --- parts -------------------------------------------------------------------------------------
def load_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer (the one SD 1.5 uses), loaded from ``data/clip_tokenizer`` with no network."""
    return CLIPTokenizer.from_pretrained(tiny.TOKENIZER_DIR)


def pndm_scheduler() -> PNDMScheduler:
    """SD 1.5's default scheduler: PNDM with SD 1.5's noise schedule (``configs.SD15_SCHEDULER``)."""
    return PNDMScheduler.from_config(configs.SD15_SCHEDULER)


def x4_schedulers() -> dict:
    """The x4 upscaler's two schedulers: ``scheduler`` (DDIM, v-prediction) and ``low_res_scheduler`` (DDPM)."""
    return dict(
        scheduler=DDIMScheduler.from_config(configs.X4_UPSCALER_SCHEDULER),
        low_res_scheduler=DDPMScheduler.from_config(configs.X4_UPSCALER_LOW_RES_SCHEDULER),
    )


def random_text2img_components(
    text_cfg: dict, unet_cfg: dict, vae_cfg: dict, seed: int = configs.RANDOM_WEIGHTS_SEED
) -> dict:
    """Create the five components of a text-to-image pipeline with seeded random weights.

    Args:
        text_cfg (`dict`): ``CLIPTextConfig`` arguments.
        unet_cfg (`dict`): ``UNet2DConditionModel`` arguments.
        vae_cfg (`dict`): ``AutoencoderKL`` arguments.
        seed (`int`): seed for the random initialisation; the same seed gives the same weights.

    Returns:
        `dict`: keyword arguments for ``StableDiffusionPipeline`` (no safety checker).
    """
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**unet_cfg)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**vae_cfg)
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(),
        unet=unet,
        scheduler=pndm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def random_upscaler_components(
    text_encoder, unet_cfg: dict, vae_cfg: dict, seed: int = configs.RANDOM_WEIGHTS_SEED
) -> dict:
    """Create the components of a ``StableDiffusionUpscalePipeline`` with seeded random UNet and VAE.

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
        tokenizer=load_tokenizer(),
        unet=unet,
        **x4_schedulers(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        max_noise_level=configs.X4_UPSCALER_MAX_NOISE_LEVEL,
    )


def upscaler_dtypes(dtype: torch.dtype) -> dict:
    """``dtype=`` for ``from_pretrained`` of an x4 upscaler: ``dtype`` everywhere but the VAE, which stays float32.

    The x4 VAE overflows in float16. With a float16 VAE the pipeline casts it to float32 at every
    call through its deprecated ``upcast_vae()``; keeping it in float32 from the start avoids that.
    """
    return {"default": dtype, "vae": torch.float32}


# --- tiny: folders ---------------------------------------------------------------------------------
def _text2img_with(cls, **models):
    """The `tiny` text-to-image model's components with ``models`` added or in place of its own, as pipeline ``cls``
    (in float32, without a safety checker): how the inpainting and ControlNet folders are assembled."""
    parts = StableDiffusionPipeline.from_pretrained(tiny.text2img_folder(), dtype=torch.float32).components
    parts.update(models, safety_checker=None, feature_extractor=None, image_encoder=None)
    return cls(**parts, requires_safety_checker=False)


def tiny_inpaint_folder():
    """The folder ``from_pretrained`` loads the `tiny` inpainting model from (assembled on first use).

    Its 9-channel UNet (``data/tiny/inpaint/unet``) was trained from the `tiny` text-to-image UNet
    with the extra ``conv_in`` channels zeroed (``surgery.inpaint_unet_from``), as SD's inpainting
    model was; text encoder, tokenizer, VAE and scheduler are the text-to-image model's.
    """
    base, unet_dir = tiny.text2img_folder(), tiny.tiny_file("inpaint", "unet")
    spec = dict(weights=tiny.digest(base, unet_dir))

    def make():
        unet = UNet2DConditionModel.from_pretrained(unet_dir, dtype=torch.float32)
        return _text2img_with(StableDiffusionInpaintPipeline, unet=unet)

    return tiny.cached_build("tiny-inpaint", spec, make)


def tiny_upscale_folder():
    """The folder ``from_pretrained`` loads the `tiny` x4 upscaler from (assembled on first use).

    The 7-channel UNet is ``data/tiny/upscale/unet`` (trained to turn 16x16 images into 64x64);
    the VAE, ``data/tiny/upscale/vae``, is the `tiny` text-to-image VAE (also 4x) rescaled to the
    upscaler's ``scaling_factor`` 0.08333 (``surgery.upscaler_vae``); text encoder and tokenizer are
    the text-to-image model's.
    """
    text_folder, unet_dir, vae_dir = (
        tiny.text2img_folder(),
        tiny.tiny_file("upscale", "unet"),
        tiny.tiny_file("upscale", "vae"),
    )
    spec = dict(
        weights=tiny.digest(text_folder, unet_dir, vae_dir),
        scheduler=configs.X4_UPSCALER_SCHEDULER,
        low_res_scheduler=configs.X4_UPSCALER_LOW_RES_SCHEDULER,
        max_noise_level=configs.X4_UPSCALER_MAX_NOISE_LEVEL,
    )

    def make():
        f32 = dict(dtype=torch.float32)
        return StableDiffusionUpscalePipeline(
            vae=AutoencoderKL.from_pretrained(vae_dir, **f32),
            text_encoder=CLIPTextModel.from_pretrained(text_folder, subfolder="text_encoder", **f32),
            tokenizer=load_tokenizer(),
            unet=UNet2DConditionModel.from_pretrained(unet_dir, **f32),
            **x4_schedulers(),
            safety_checker=None,
            feature_extractor=None,
            watermarker=None,
            max_noise_level=configs.X4_UPSCALER_MAX_NOISE_LEVEL,
        )

    return tiny.cached_build("tiny-upscale", spec, make)


def tiny_controlnet_folder():
    """The folder ``from_pretrained`` loads the `tiny` ControlNet pipeline from (assembled on first use).

    Its ControlNet (``data/tiny/controlnet``, ``python -m training controlnet``) was made with
    ``ControlNetModel.from_unet`` from the `tiny` text-to-image UNet and trained on Canny edge maps of the shapes
    world; the rest of the pipeline is the text-to-image model, frozen while it trained.
    """
    base, controlnet_dir = tiny.text2img_folder(), tiny.tiny_file("controlnet")
    spec = dict(weights=tiny.digest(base, controlnet_dir))

    def make():
        controlnet = ControlNetModel.from_pretrained(controlnet_dir, dtype=torch.float32)
        return _text2img_with(StableDiffusionControlNetPipeline, controlnet=controlnet)

    return tiny.cached_build("tiny-controlnet", spec, make)


# --- tiny: pipelines ---------------------------------------------------------------------------------
def tiny_text2img(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """The `tiny` text-to-image model as a pipeline of class ``cls`` (text-to-image or image-to-image).

    Args:
        cls (`type`): ``StableDiffusionPipeline`` or ``StableDiffusionImg2ImgPipeline`` (same components).
        dtype (`torch.dtype`): weights dtype.
    """
    return cls.from_pretrained(tiny.text2img_folder(), dtype=dtype)


def tiny_inpaint(cls=StableDiffusionInpaintPipeline, dtype: torch.dtype = torch.float32):
    """The trained `tiny` inpainting model (9-channel UNet) as a pipeline of class ``cls``."""
    return cls.from_pretrained(tiny_inpaint_folder(), dtype=dtype)


def tiny_upscale(cls=StableDiffusionUpscalePipeline, dtype: torch.dtype = torch.float32):
    """The trained `tiny` x4 upscaler (16x16 -> 64x64): the real upscaler's architecture and mechanisms.

    Args:
        cls (`type`): ``StableDiffusionUpscalePipeline``.
        dtype (`torch.dtype`): dtype of the text encoder and UNet; the VAE stays float32 (:func:`upscaler_dtypes`).
    """
    return cls.from_pretrained(tiny_upscale_folder(), dtype=upscaler_dtypes(dtype))


def tiny_community(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """The `tiny` community fine-tune, loaded from its ONE ``.safetensors`` file with ``from_single_file`` (offline).

    The file holds only weights; the configs come from the `tiny` text-to-image folder, as SD 1.5's
    repository supplies them for a real fine-tune.
    """
    return cls.from_single_file(
        str(tiny.community_file()), config=str(tiny.text2img_folder()), local_files_only=True, dtype=dtype
    )


def tiny_controlnet(cls=StableDiffusionControlNetPipeline, dtype: torch.dtype = torch.float32):
    """The `tiny` text-to-image model with its trained canny ControlNet, as a pipeline of class ``cls``."""
    return cls.from_pretrained(tiny_controlnet_folder(), dtype=dtype)


# --- sd15-random: full size, random weights -----------------------------------------------------------
def random_text2img(cls=StableDiffusionPipeline, dtype: torch.dtype = torch.float32):
    """SD 1.5's full-size text-to-image pipeline with random weights (~1 B parameters, ~4 GB in fp32)."""
    parts = random_text2img_components(configs.SD15_TEXT_ENCODER, configs.SD15_UNET, configs.SD15_VAE)
    return cast(cls(**parts), dtype)


def random_inpaint(cls=StableDiffusionInpaintPipeline, dtype: torch.dtype = torch.float32):
    """SD 1.5's full-size inpainting architecture (9-channel UNet) with random weights."""
    parts = random_text2img_components(configs.SD15_TEXT_ENCODER, configs.SD15_INPAINT_UNET, configs.SD15_VAE)
    return cast(cls(**parts), dtype)


def random_upscale(cls=StableDiffusionUpscalePipeline, dtype: torch.dtype = torch.float32):
    """The x4 upscaler at full size with random weights (~0.9 B parameters); the VAE stays float32."""
    torch.manual_seed(configs.RANDOM_WEIGHTS_SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(**configs.X4_UPSCALER_TEXT_ENCODER))
    parts = random_upscaler_components(text_encoder, configs.X4_UPSCALER_UNET, configs.X4_UPSCALER_VAE)
    for name in ("text_encoder", "unet"):  # the VAE stays float32 (see upscaler_dtypes)
        if dtype == torch.float16:
            parts[name].half()  # (a model's .to(dtype) also works but logs a note about fp32 modules)
        else:
            cast(parts[name], dtype)
    return cls(**parts)


def random_controlnet(cls=StableDiffusionControlNetPipeline, dtype: torch.dtype = torch.float32):
    """SD 1.5's full-size pipeline with a ControlNet made from its random UNet (``from_unet``: its zero convolutions
    add nothing, so the pictures are the text-to-image ones; for speed and memory, like every `sd15-random` model)."""
    parts = random_text2img_components(configs.SD15_TEXT_ENCODER, configs.SD15_UNET, configs.SD15_VAE)
    parts["controlnet"] = ControlNetModel.from_unet(parts["unet"])
    return cast(cls(**parts), dtype)
