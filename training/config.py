"""The training recipe of the `tiny` models: every setting of a from-scratch run, in one place.

The architectures are the model layer's (``course_utils.models.configs``: ``TINY_VAE``,
``TINY_TEXT_ENCODER``, ``TINY_UNET``, ``TINY_INPAINT_UNET``, ``TINY_UPSCALER_UNET``): SD 1.5's
classes and block types, only smaller. Images are 64x64 (``course_utils.world``), the VAE
downsamples 4x, so the UNets work on 16x16x4 latents.

Stages (``python -m training STAGE``), in the order ``all`` runs them:

    vae       AutoencoderKL; measures its scaling_factor at the end
    text2img  UNet + CLIP text encoder, trained jointly (EMA), on frozen VAE latents
    inpaint   9-channel UNet, initialised from text2img's EMA UNet (extra conv_in channels zero)
    upscale   x4 upscaler UNet (7 input channels, noise-level class labels), 16x16 -> 64x64
    finetune  a "community" fine-tune of the text2img UNet: outlined shapes when the prompt says "outline"
    lora      a LoRA on the text2img UNet that draws outlines (no trigger word needed)
    ti        a textual-inversion embedding "<outline>" for the text2img model
    controlnet  a ControlNet for the text2img model that reads a Canny edge map (lesson 11)

Any setting can be changed for one run: ``--set batch_size=8`` on the command line, or a file of
settings, ``--overrides FILE`` (:func:`load_overrides`).

The committed weights in ``data/tiny`` were NOT made by one run of this recipe: they grew over
four sessions, each resuming the last with changed settings. Those runs, one override file per
run, are in ``training/runs_that_made_data_tiny/``; what each changed and what it scored is in
``docs/training.md``. This recipe is what those runs amount to as one run from scratch (every
data setting from step 0, one learning-rate drop); at full length it has not been run.
"""

import dataclasses
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from course_utils.models import configs, profiles, tiny

OUTLINE_WIDTH = 5  # pixels: outlined shapes are a ring of this width in the shape's colour (3 was too thin for the 4x VAE: 18 dB vs 20 dB)
# Half-widths (pixels) of outlined shapes, drawn uniformly; plain shapes have 10-22 (world.sample). The tiny VAE
# fills in part of a small ring's inside: of 96 VAE reconstructions of 5 px outlines at r 10-22, 64% still read as
# hollow (world.classify, hollow > 0.15), at r 18-26 94% (docs/training.md, "Issue 16: the style models retrained").
OUTLINE_RADIUS = (18.0, 26.0)
DEFAULT_OUT = "training/runs"  # where runs go: <out>/<stage>/{ckpt.pt, log.jsonl, config.json, result.json}
HISTORY_DIR = Path(__file__).resolve().parent / "runs_that_made_data_tiny"  # the override files of the committed runs


class TrainingError(Exception):
    """A run cannot start or go on (an unknown setting, a missing checkpoint, a loss that is not finite): the message
    says what to do. ``python -m training`` turns it into its exit message."""


@dataclass
class Settings:
    """Settings shared by every stage."""

    steps: int = 1000  # optimiser steps of a full run (--steps overrides)
    batch_size: int = 64  # images per step
    lr: float = 5e-4  # peak learning rate (AdamW)
    warmup: int = 100  # steps of linear warm-up, then constant: the schedule does not depend on `steps`
    lr_drop_at: int = 0  # from this step on (0 = never) the learning rate is lr * lr_drop: a late, lower-noise phase
    lr_drop: float = 0.2
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.0  # 0 = no EMA; else EMA of the trained weights (min(decay, (1+step)/(10+step)))
    seed: int = 0  # seeds initialisation, data order (world seeds) and the noise of every step
    ckpt_every: int = 200  # write a checkpoint every this many steps (and at the end)
    log_every: int = 20  # append a line to log.jsonl every this many steps
    eval_every: int = 0  # run the stage's evaluation every this many steps (0: only at the end)
    data_repeat: int = 0  # 0: new scenes every step; N: cycle through the first N batches (overfitting checks)
    noise_offset: float = (
        0.0  # std of a random per-image, per-channel constant added to the noise ("offset noise"); 0 = none
    )
    # "no": everything in float32 (how data/tiny was made, on a CPU). "fp16" / "bf16": as diffusers' training scripts'
    # --mixed_precision: frozen models in half precision, trained weights in float32, autocast, a GradScaler for fp16
    mixed_precision: str = "no"


@dataclass
class VAESettings(Settings):
    steps: int = 1900  # ~30 min at ~50 samples/s (2 threads); a 9-minute trial reached 29 dB PSNR
    lr_drop_at: int = (
        1500  # the last 400 steps at lr / 5 (sharper reconstructions: the upscaler's PSNR depends on them)
    )
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-6  # SD's autoencoder: tiny KL, so latents are nearly deterministic
    scale_samples: int = 1024  # images encoded to measure scaling_factor = 1 / std(latents)
    eval_images: int = 256  # images for the PSNR evaluation


@dataclass
class Text2ImgSettings(Settings):
    steps: int = 13000  # ~130 min at ~110 samples/s (2 threads)
    batch_size: int = 64
    lr: float = 1e-3  # UNet and text encoder together
    warmup: int = 200
    lr_drop_at: int = 3400  # from here on at lr / 5 (the loss fell from 0.0142 to 0.0113 within 600 steps of the drop)
    ema_decay: float = 0.998  # the EMA weights are exported; 0.998 averages ~500 steps
    min_snr: float = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023): min(SNR, 5) / SNR; 0 = plain MSE
    # Offset noise: on 16x16 latents the starting noise's per-channel mean (std 1/16) still carries the
    # picture's mean colour at the first timesteps (SD 1.5's schedule never reaches zero signal), so
    # without it the model reads the background from the noise instead of the prompt (43% right; 100% with it).
    noise_offset: float = 0.2  # noise-mean std 0.21 instead of 0.0625; backgrounds' latent means differ by ~0.5 x sqrt(alpha_bar) = 0.04 at t=961
    word_captions: float = (
        0.25  # share of non-empty captions that are bare words ("circle", "red", "red circle"), drawn first:
    )
    # the way people write negative prompts; without them "circle" as a negative prompt removed 7% of circles (67% with)
    open_captions: float = (
        0.2  # share of the other captions leaving the shape or colour open ("a red shape", "a circle")
    )
    cache_scenes: int = 40960  # scenes VAE-encoded once (mean and std of the posterior) and reused with fresh captions and latent samples; 0 = encode every step
    eval_every: int = 1000
    eval_seeds: int = 2  # images per prompt of course_utils.scores (20 prompts: 12 seen combinations, 8 held out)
    eval_steps: int = profiles.DEFAULTS["tiny"][
        "num_inference_steps"
    ]  # sampler steps per image (PNDM, as the exported pipeline)
    eval_guidance: float = profiles.DEFAULTS["tiny"]["guidance_scale"]  # the model card's guidance


@dataclass
class InpaintSettings(Settings):
    steps: int = 4000  # starts from the text2img UNet: it only has to learn what the 5 new channels mean (1000 at lr 3e-4 was not enough)
    batch_size: int = 32
    lr: float = 6e-4
    lr_drop_at: int = 2700  # the last 1,300 steps at lr / 5, as the committed model's
    ema_decay: float = 0.995
    x0_weight_max: float = 20.0  # per-sample loss weight clamp(1/SNR, 1, this); 0 = plain MSE (see stages.InpaintStage)
    full_mask: float = 0.25  # share of samples whose whole image is masked (SD inpainting: 25%)
    mask_min: float = 0.2  # random rectangle/ellipse sides, as fractions of the image
    mask_max: float = 0.8


@dataclass
class UpscaleSettings(Settings):
    steps: int = 4800
    batch_size: int = 48
    lr: float = 5e-4
    lr_drop_at: int = 4400  # the last 400 steps at lr / 5
    ema_decay: float = 0.998
    max_noise_level: int = configs.X4_UPSCALER_MAX_NOISE_LEVEL  # noise_level drawn from 0..350 ...
    low_noise_share: float = 0.5  # ... but this share of samples from 0..low_noise_max (the pipeline's default is 20);
    # 1.0 for the committed model's last 2,400 steps (+3.5 dB), but lesson 6 also shows levels 100 and 350
    low_noise_max: int = 50
    low_res: int = 16  # input side, pixels (64 / 4)


@dataclass
class StyleSettings(Settings):
    style_share: float = 0.5  # share of outlined images per batch (the rest: plain images, plain captions)
    trigger: str = (
        tiny.STYLE_WORD
    )  # word put in front of captions of outlined images ("" for none): "outline style, a red circle"
    noise_offset: float = 0.2  # as text2img, so fine-tuning keeps backgrounds following the prompt
    cache_scenes: int = 4096  # scenes VAE-encoded once, each both plain and outlined, reused with fresh captions; 0 = render and encode every step
    eval_seeds: int = (
        4  # images per prompt of the stage's own evaluation (course_utils.scores.STYLE_PROMPTS: 6 prompts)
    )
    eval_steps: int = profiles.DEFAULTS["tiny"][
        "num_inference_steps"
    ]  # sampler steps per image (PNDM, as the exported pipeline)
    eval_guidance: float = profiles.DEFAULTS["tiny"]["guidance_scale"]  # the model card's guidance
    # > 0: the loss is on the prediction the pipeline samples with, uncond + g * (cond - uncond), the empty
    # caption's prediction as uncond (no gradient), instead of on cond alone (0: the usual loss)
    loss_guidance: float = 0.0


@dataclass
class FinetuneSettings(StyleSettings):
    # with the trigger word in front: 50% outlines (24 probe images) after 1,000 steps, 71% after 1,500, 87.5% after 2,000;
    # plain prompts 0% throughout (with the word at the end: 22% with it, 22% without; docs/training.md)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    ema_decay: float = 0.995
    train_text_encoder: bool = (
        False  # True: the text encoder learns too (tried for issue 16: no better, docs/training.md)
    )


@dataclass
class LoraSettings(StyleSettings):
    steps: int = 1000  # 400 steps drew 67% of 24 probe images as outlines (200: 42%)
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 20
    lr_drop_at: int = 800  # the last 200 steps at lr / 5
    style_share: float = 1.0  # a style LoRA: every image outlined ...
    trigger: str = ""  # ... and no trigger word: loading the LoRA is the trigger
    rank: int = 8  # LoRA rank
    # the attention projections and the ResNet blocks' 3x3 convolutions: on attention alone the LoRA learned
    # little (18% outlines after 1,200 steps; docs/training.md)
    target_modules: tuple = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


@dataclass
class TISettings(StyleSettings):
    steps: int = (
        300  # for the community model: 58% outlines (24 probe images) after 100 steps, 75% after 200, 67% after 300
    )
    batch_size: int = 32
    lr: float = 1.5e-3  # 5e-3 wandered: 54% / 33% / 42% / 38% at 100 / 200 / 300 / 400 steps
    style_share: float = (
        1.0  # every image outlined, every caption starts with the token: "<outline> <outline>_1, a red circle"
    )
    cache_scenes: int = 2048  # only 2 x 64 numbers learn: fewer scenes than the UNet stages need
    trigger: str = tiny.EMBEDDING_TOKEN  # "<outline>" (diffusers adds "<outline>_1", ... for the further vectors)
    n_vectors: int = 2  # embedding vectors the token stands for
    init_word: str = tiny.STYLE_WORD  # vectors start as this word's embedding
    # whose UNet (and text encoder) the embedding is trained for: "finetune" (the community model, trained first) or
    # "text2img" (the base model). An embedding can only steer a frozen network toward what it can already draw: for
    # the base model, which never drew an outline, 8 vectors at lr 2e-2 drew none after 150 steps.
    unet_from: str = "finetune"


@dataclass
class ControlNetSettings(Settings):
    steps: int = 2000
    batch_size: int = 32
    lr: float = (
        1e-3  # the zero convolutions must grow from 0 before the copy learns anything: a high rate for a small model
    )
    warmup: int = 50
    lr_drop_at: int = 1500  # the last 500 steps at lr / 5
    noise_offset: float = 0.2  # as text2img: the frozen UNet was trained with it
    # channels of the condition embedding's convolutions: one stride-2 convolution between each pair, so
    # len - 1 = log2 of the VAE's downsampling (tiny: 64 -> 16 needs two; SD 1.5's (16, 32, 96, 256): 512 -> 64, three)
    embedding_channels: tuple = (16, 32, 64)
    empty_prompts: float = 0.5  # share of captions replaced with "" (the ControlNet paper's 50%)
    cache_scenes: int = (
        8192  # scenes VAE-encoded once with their edge maps, reused with fresh captions and latent draws
    )
    eval_every: int = 250  # the in-run score: how the share of pictures that follow their condition grows
    eval_per_shape: int = 8  # held-out conditions per shape of the in-run score (scores.control_scenes)
    eval_steps: int = profiles.DEFAULTS["tiny"]["num_inference_steps"]  # sampler steps per picture (PNDM)
    eval_guidance: float = profiles.DEFAULTS["tiny"]["guidance_scale"]  # the model card's guidance


STAGES = {  # stage name -> its settings, in the order `all` runs them (each starts from the ones before)
    "vae": VAESettings(seed=1),
    "text2img": Text2ImgSettings(seed=2),
    "inpaint": InpaintSettings(seed=3),
    "upscale": UpscaleSettings(seed=4),
    "finetune": FinetuneSettings(seed=5),
    "lora": LoraSettings(seed=6),
    "ti": TISettings(seed=7),
    "controlnet": ControlNetSettings(seed=8),
}


def _check_stage(name: str):
    if name not in STAGES:
        raise TrainingError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def _typed(name: str, field: dataclasses.Field, value):
    """``value`` as the type of setting ``field`` (an int where a float is expected becomes a float, a list a tuple)."""
    kind = field.type
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif kind is tuple and isinstance(value, list):
        value = tuple(value)
    if type(value) is not kind:
        raise TrainingError(
            f"stage {name}: setting {field.name} must be {kind.__name__}, not {value!r} ({type(value).__name__})"
        )
    return value


def stage_config(name: str, **overrides) -> Settings:
    """The settings of stage ``name`` with ``overrides`` applied (unknown keys and wrong types are an error)."""
    _check_stage(name)
    cfg = STAGES[name]
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise TrainingError(f"stage {name} has no setting(s) {sorted(unknown)}; settings: {sorted(fields)}")
    return replace(cfg, **{k: _typed(name, fields[k], v) for k, v in overrides.items()})


def load_overrides(path, stage: str | None = None) -> dict:
    """Read an override file: the settings one run changed (``training/runs_that_made_data_tiny/*.toml``).

    The file names its ``stage``, the step it continues from (``from_step``, 0 = from scratch) and
    a ``[settings]`` table, e.g.::

        stage = "text2img"
        from_step = 7000
        [settings]
        steps = 9000
        lr_drop = 0.5

    Args:
        path (`str` or `Path`): the ``.toml`` file.
        stage (`str`, *optional*): the stage it is applied to; another ``stage`` in the file is an error.

    Returns:
        `dict`: ``stage``, ``from_step`` and ``settings`` (checked against the stage's settings).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise TrainingError(f"{path}: {e}") from None
    extra = set(data) - {"stage", "from_step", "settings"}
    if extra or "stage" not in data:
        raise TrainingError(f"{path}: expected the keys stage, from_step and a [settings] table, got {sorted(data)}")
    if stage is not None and data["stage"] != stage:
        raise TrainingError(f"{path} is for stage {data['stage']!r}, not {stage!r}")
    settings = dict(data.get("settings", {}))
    stage_config(data["stage"], **settings)  # unknown names or wrong types: an error now, not after hours
    return dict(stage=data["stage"], from_step=int(data.get("from_step", 0)), settings=settings)
