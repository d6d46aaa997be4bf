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

from course_utils import configs as cu_configs
from course_utils import upscale as cu_upscale

# --- models -------------------------------------------------------------------------------
IMAGE_SIZE = 64  # pixels; course_utils.world draws 64x64 images
LATENT_SIZE = 16  # IMAGE_SIZE / 4: the VAE has 3 blocks -> 2 downsamplings -> 4x smaller

VAE = dict(
    sample_size=IMAGE_SIZE,
    in_channels=3,
    out_channels=3,
    latent_channels=4,  # 4 latent channels, as SD 1.5
    block_out_channels=(32, 64, 64),  # 3 blocks -> 4x downsampling: 64x64x3 -> 16x16x4
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,  # SD 1.5: 2
    norm_num_groups=32,
    scaling_factor=1.0,  # placeholder: the vae stage measures 1/std of the latents and writes it here
)
TEXT_ENCODER = dict(
    cu_configs.SD15_TEXT_ENCODER,  # CLIP's 49408-token vocabulary and 77 positions: any prompt tokenizes as in SD 1.5
    hidden_size=64,  # text embeddings [1, 77, 64]
    intermediate_size=256,  # 4 x hidden, as CLIP
    num_hidden_layers=2,  # SD 1.5: 12
    num_attention_heads=4,
    projection_dim=64,
)
UNET = dict(
    sample_size=LATENT_SIZE,  # 16x16 latents -> 64x64 images by default
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),  # 3 levels: 16x16, 8x8, 4x4
    layers_per_block=1,  # SD 1.5: 2
    # SD 1.5's pattern (cross-attention blocks, a plain block at the lowest resolution), one level fewer
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_ENCODER["hidden_size"],  # 64: must equal the text encoder's width
    attention_head_dim=4,  # diffusers' legacy name: the number of heads (SD 1.5: 8)
)
INPAINT_UNET = dict(UNET, in_channels=9)  # 4 noisy latents + 1 mask + 4 masked-image latents
UPSCALER_UNET = dict(
    cu_upscale.TINY_UPSCALER_UNET,  # the real x4 upscaler's block types, class embeddings, linear projections
    sample_size=LATENT_SIZE,  # 16x16 latents = the 16x16 low-res input -> 64x64 output
    block_out_channels=(32, 32, 64, 64),  # 16x16, 8x8, 4x4, 2x2
    norm_num_groups=32,
    cross_attention_dim=TEXT_ENCODER["hidden_size"],  # the text2img text encoder, shared
)
# The upscaler reuses the text2img VAE's weights (it is already a 3-block, 4x VAE like the real
# upscaler's) but StableDiffusionUpscalePipeline forces scaling_factor = 0.08333, so its UNet is
# trained on latents scaled by that constant.
UPSCALER_SCALING_FACTOR = cu_upscale.SD15_UPSCALER_VAE["scaling_factor"]

# --- style (the "community" model, its LoRA and its embedding) -------------------------------
STYLE_WORD = "outline"  # the trigger word of the fine-tune: "a red circle in outline style"
TI_TOKEN = "<outline>"  # the textual-inversion token (diffusers adds "<outline>_1", ... for extra vectors)
OUTLINE_WIDTH = 3  # pixels: outlined shapes are a ring of this width in the shape's colour


@dataclass
class Stage:
    """Settings shared by every stage."""

    steps: int = 1000  # optimiser steps of a full run (--steps overrides)
    batch_size: int = 64  # images per step
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 100  # steps of linear warm-up, then constant: the schedule does not depend on `steps`
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.0  # 0 = no EMA; else EMA of the trained weights (min(decay, (1+step)/(10+step)))
    seed: int = 0  # seeds initialisation, data order (world seeds) and the noise of every step
    ckpt_every: int = 200  # write a checkpoint every this many steps (and at the end)
    log_every: int = 20  # append a line to log.jsonl every this many steps
    eval_every: int = 0  # run the stage's evaluation every this many steps (0: only at the end)
    data_repeat: int = 0  # 0: new scenes every step; N: cycle through the first N batches (overfitting checks)


@dataclass
class VAEStage(Stage):
    steps: int = 1500  # ~21 min at ~38 samples/s (2 threads); planning trial: ~9 min -> 29 dB PSNR
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-6  # SD's autoencoder: tiny KL, so latents are nearly deterministic
    scale_samples: int = 1024  # images encoded to measure scaling_factor = 1 / std(latents)
    eval_images: int = 256  # images for the PSNR evaluation


@dataclass
class Text2ImgStage(Stage):
    steps: int = 4000  # ~44 min at ~98 samples/s (2 threads). Planning trial: 22% -> 82% between 1,000 and 2,000 steps; 2,900 steps gave 94% colour
    batch_size: int = 64  # ~140 samples/s on 2 cores in the planning trial
    lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999  # the EMA weights are exported (planning trial: EMA helped)
    eval_prompts: int = 48  # prompts (half seen combinations, half HELD_OUT) scored with world.classify
    eval_steps: int = 20  # DDIM steps per eval image
    eval_guidance: float = 4.0  # planning trial: guidance 3-5 best
    eval_every: int = 1000


@dataclass
class InpaintStage(Stage):
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-4
    ema_decay: float = 0.999
    full_mask: float = 0.25  # share of samples whose whole image is masked (SD inpainting: 25%)
    mask_min: float = 0.2  # random rectangle/ellipse sides, as fractions of the image
    mask_max: float = 0.8


@dataclass
class UpscaleStage(Stage):
    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    ema_decay: float = 0.999
    max_noise_level: int = cu_upscale.SD15_UPSCALER_MAX_NOISE_LEVEL  # noise_level drawn from 0..350
    low_res: int = 16  # input side, pixels (64 / 4)


@dataclass
class StyleStage(Stage):
    style_share: float = 0.5  # share of outlined images per batch (the rest: plain images, plain captions)
    trigger: str = STYLE_WORD  # word added to captions of outlined images ("" for none)


@dataclass
class FinetuneStage(StyleStage):
    steps: int = 800
    lr: float = 2e-4
    ema_decay: float = 0.995


@dataclass
class LoraStage(StyleStage):
    steps: int = 600
    lr: float = 1e-3
    style_share: float = 1.0  # a style LoRA: every image outlined ...
    trigger: str = ""  # ... and no trigger word: loading the LoRA is the trigger
    rank: int = 4  # LoRA rank
    target_modules: tuple = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections of the UNet


@dataclass
class TIStage(StyleStage):
    steps: int = 600
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
