"""Every setting of the `tiny` training, in one place (nanoGPT style: each value commented where it is set).

The models keep Stable Diffusion 1.5's classes and block types; only widths, depths and the
image size shrink. Images are 64x64 (``course_utils.world``), the VAE downsamples 4x, so the
UNets work on 16x16x4 latents.

Stages (``python -m training STAGE``), in the order ``all`` runs them:

    vae       AutoencoderKL; measures its scaling_factor at the end
    text2img  UNet + CLIP text encoder, trained jointly (EMA), on frozen VAE latents
    inpaint   9-channel UNet, initialised from text2img's EMA UNet (extra conv_in channels zero)
    upscale   x4 upscaler UNet (7 input channels, noise-level class labels), 16x16 -> 64x64
    finetune  a "community" fine-tune of the text2img UNet: outlined shapes when the prompt says "outline"
    lora      a LoRA on the text2img UNet that draws outlines (no trigger word needed)
    ti        a textual-inversion embedding "<outline>" for the text2img model

Any field of a stage below can be overridden on the command line: ``--set batch_size=8``.
"""
from dataclasses import dataclass, replace

from course_utils import community as cu_community
from course_utils import configs as cu_configs
from course_utils import upscale as cu_upscale

# --- models -------------------------------------------------------------------------------
IMAGE_SIZE = 64  # pixels; course_utils.world draws 64x64 images
LATENT_SIZE = 16  # IMAGE_SIZE / 4: the VAE has 3 blocks -> 2 downsamplings -> 4x smaller

VAE = dict(cu_configs.TINY_VAE, scaling_factor=1.0)  # 4 latent channels; scaling_factor: measured by the vae stage
TEXT_ENCODER = cu_configs.TINY_TEXT_ENCODER  # hidden 64, 2 layers, CLIP's vocabulary (see course_utils/configs.py)
UNET = cu_configs.TINY_UNET  # (32, 64, 64) channels, 1 layer per block, cross-attention dim 64
INPAINT_UNET = dict(UNET, in_channels=9)  # 4 noisy latents + 1 mask + 4 masked-image latents
UPSCALER_UNET = cu_upscale.TINY_UPSCALER_UNET  # 7 input channels, noise-level class labels; 16x16 -> 64x64
# The upscaler reuses the text2img VAE (already a 3-block, 4x VAE like the real upscaler's), but
# StableDiffusionUpscalePipeline forces scaling_factor = 0.08333: course_utils.upscale.upscaler_vae
# folds the difference into the VAE's latent convolutions, so its scaled latents keep unit std.
UPSCALER_SCALING_FACTOR = cu_upscale.SD15_UPSCALER_VAE["scaling_factor"]

# --- style (the "community" model, its LoRA and its embedding) -------------------------------
STYLE_WORD = cu_community.TINY_STYLE_WORD  # "outline": the fine-tune's trigger word ("a red circle in outline style")
TI_TOKEN = cu_community.TINY_EMBEDDING_TOKEN  # "<outline>": the textual-inversion token (diffusers adds "<outline>_1", ...)
OUTLINE_WIDTH = 5  # pixels: outlined shapes are a ring of this width in the shape's colour (3 was too thin for the 4x VAE: 18 dB vs 20 dB)


@dataclass
class Stage:
    """Settings shared by every stage."""

    steps: int = 1000  # optimiser steps of a full run (--steps overrides)
    batch_size: int = 64  # images per step
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 100  # steps of linear warm-up, then constant: the schedule does not depend on `steps`
    lr_drop_at: int = 0  # from this step on (0 = never) the learning rate is lr * lr_drop: a late, lower-noise phase
    lr_drop: float = 0.2
    lr_later: tuple = ()  # ((step, factor), ...): from each such step on the learning rate is lr * factor (replaces lr_drop)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.0  # 0 = no EMA; else EMA of the trained weights (min(decay, (1+step)/(10+step)))
    seed: int = 0  # seeds initialisation, data order (world seeds) and the noise of every step
    ckpt_every: int = 200  # write a checkpoint every this many steps (and at the end)
    log_every: int = 20  # append a line to log.jsonl every this many steps
    eval_every: int = 0  # run the stage's evaluation every this many steps (0: only at the end)
    data_repeat: int = 0  # 0: new scenes every step; N: cycle through the first N batches (overfitting checks)
    noise_offset: float = 0.0  # std of a random per-image, per-channel constant added to the noise ("offset noise"); 0 = none
    refine_from: int = 0  # noise_offset (and text2img's open_captions, upscale's refine_low_noise_share) apply from this step on


@dataclass
class VAEStage(Stage):
    steps: int = 1900  # ~21 min at ~50 samples/s (2 threads); planning trial: ~9 min -> 29 dB PSNR
    lr_drop_at: int = 1500  # the last 400 steps at lr / 5 (sharper reconstructions: the upscaler's PSNR depends on them)
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-6  # SD's autoencoder: tiny KL, so latents are nearly deterministic
    scale_samples: int = 1024  # images encoded to measure scaling_factor = 1 / std(latents)
    eval_images: int = 256  # images for the PSNR evaluation


@dataclass
class Text2ImgStage(Stage):
    steps: int = 13000  # ~130 min at ~110 samples/s (2 threads); the committed model ran 4000, then was resumed to 7000, 10000, 11000, 13000
    lr_drop_at: int = 3400  # from here on at lr / 5 (the loss fell from 0.0142 to 0.0113 within 600 steps of the drop)
    # Steps 7000-10000 refine the 7,000-step model, whose backgrounds followed the seed rather than the
    # prompt: on 16x16 latents the starting noise's per-channel mean still carries the picture's mean
    # colour at the first timesteps (SD 1.5's schedule never reaches zero signal), so the model learned to read the
    # background from the noise. Offset noise makes that mean unreliable, so the prompt has to decide.
    refine_from: int = 7000
    noise_offset: float = 0.2  # noise-mean std 0.21 instead of 0.0625 (1/16); backgrounds' latent means differ by ~0.5 x sqrt(alpha_bar) = 0.04 at t=961
    open_captions: float = 0.2  # share of captions leaving the shape or colour open ("a red shape", "a circle"): from refine_from on
    lr_later: tuple = ((7000, 0.5), (9000, 0.1), (10000, 0.2))  # refine at lr / 2, 1000 steps at lr / 10, the words phase at lr / 5
    # Steps 10000-13000 teach bare words ("circle", "red", "red circle"), the way people write
    # negative prompts: before, the text encoder's output for the lone word "circle" differed from
    # the empty prompt's by at most 1.0 (for "a red circle" vs "a red square": 10.6), so the
    # negative prompt "circle" removed 7% of circles; after: 6.1, and 67%. Training only the UNet
    # on such captions did not help (13% after 1000 steps): the text encoder has to learn them too.
    words_from: int = 10000
    word_captions: float = 0.25  # share of non-empty captions that are bare words, from words_from on (drawn first: open_captions applies to the rest)
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # UNet and text encoder together
    warmup: int = 200
    ema_decay: float = 0.998  # the EMA weights are exported; 0.998 averages ~500 steps
    min_snr: float = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023): min(SNR, 5) / SNR; 0 = plain MSE
    cache_scenes: int = 40960  # scenes VAE-encoded once (mean and std of the posterior) and reused with fresh captions and latent samples; 0 = encode every step
    eval_prompts: int = 48  # prompts (half seen combinations, half HELD_OUT) scored with world.classify
    eval_steps: int = 20  # DDIM steps per eval image
    eval_guidance: float = 4.0  # planning trial: guidance 3-5 best
    eval_every: int = 1000


@dataclass
class InpaintStage(Stage):
    steps: int = 4000  # starts from the text2img UNet: it only has to learn what the 5 new channels mean (1000 at lr 3e-4 was not enough); the committed model: 2000, then resumed to 3000 and 4000
    batch_size: int = 32
    lr: float = 6e-4
    lr_later: tuple = ((1700, 0.2), (2000, 0.5), (2700, 0.2))  # 1700-2000 at lr / 5; the continuation at lr / 2, from 2700 on at lr / 5
    ema_decay: float = 0.995
    x0_weight_max: float = 20.0  # per-sample loss weight clamp(1/SNR, 1, this); 0 = plain MSE (see train.InpaintStage)
    full_mask: float = 0.25  # share of samples whose whole image is masked (SD inpainting: 25%)
    mask_min: float = 0.2  # random rectangle/ellipse sides, as fractions of the image
    mask_max: float = 0.8


@dataclass
class UpscaleStage(Stage):
    steps: int = 4800  # the committed model: 2400 steps, then resumed to 4800 (26.4 -> 28.7 dB in the first 800 of them)
    batch_size: int = 48
    lr: float = 5e-4
    lr_later: tuple = ((2000, 0.2), (2400, 0.6), (4400, 0.12))  # 2000-2400 at lr / 5; the continuation at 0.6 lr, its last 400 steps at 0.12 lr
    ema_decay: float = 0.998
    max_noise_level: int = cu_upscale.SD15_UPSCALER_MAX_NOISE_LEVEL  # noise_level drawn from 0..350 ...
    low_noise_share: float = 0.5  # ... but this share of samples from 0..low_noise_max: the pipeline's default is 20
    low_noise_max: int = 50
    refine_from: int = 2400  # from this step on ...
    refine_low_noise_share: float = 1.0  # ... every sample's noise_level is drawn from 0..low_noise_max
    low_res: int = 16  # input side, pixels (64 / 4)


@dataclass
class StyleStage(Stage):
    style_share: float = 0.5  # share of outlined images per batch (the rest: plain images, plain captions)
    trigger: str = STYLE_WORD  # word added to captions of outlined images ("" for none)
    noise_offset: float = 0.2  # as text2img's refinement, so fine-tuning keeps backgrounds following the prompt


@dataclass
class FinetuneStage(StyleStage):
    steps: int = 1500  # 500 steps at lr 2e-4 changed the pictures but drew no outlines
    batch_size: int = 32
    lr: float = 3e-4
    ema_decay: float = 0.995


@dataclass
class LoraStage(StyleStage):
    steps: int = 1200
    batch_size: int = 32
    lr: float = 1e-3
    style_share: float = 1.0  # a style LoRA: every image outlined ...
    trigger: str = ""  # ... and no trigger word: loading the LoRA is the trigger
    rank: int = 8  # LoRA rank
    target_modules: tuple = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections of the UNet


@dataclass
class TIStage(StyleStage):
    steps: int = 600
    batch_size: int = 32
    lr: float = 5e-3
    style_share: float = 1.0  # every image outlined, every caption names the token
    trigger: str = TI_TOKEN
    n_vectors: int = 2  # embedding vectors the token stands for
    init_word: str = STYLE_WORD  # vectors start as this word's embedding


STAGES = {
    "vae": VAEStage(seed=1),
    "text2img": Text2ImgStage(seed=2),
    "inpaint": InpaintStage(seed=3),
    "upscale": UpscaleStage(seed=4),
    "finetune": FinetuneStage(seed=5),
    "lora": LoraStage(seed=6),
    "ti": TIStage(seed=7),
}
# What each stage starts from (their final checkpoints must exist).
DEPENDS = {
    "vae": (),
    "text2img": ("vae",),
    "inpaint": ("vae", "text2img"),
    "upscale": ("vae", "text2img"),
    "finetune": ("vae", "text2img"),
    "lora": ("vae", "text2img"),
    "ti": ("vae", "text2img"),
}
DEFAULT_OUT = "training/runs"  # where runs go: <out>/<stage>/{ckpt.pt, log.jsonl, config.json}


def stage_config(name: str, **overrides) -> Stage:
    """The settings of stage ``name`` with ``overrides`` applied (unknown keys are an error)."""
    if name not in STAGES:
        raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    cfg = STAGES[name]
    unknown = set(overrides) - set(cfg.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"stage {name} has no setting(s) {sorted(unknown)}; settings: {sorted(cfg.__dataclass_fields__)}")
    return replace(cfg, **overrides)
