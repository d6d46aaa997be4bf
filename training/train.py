"""The training loop shared by every stage, and the stages themselves.

Every stage is a :class:`Stage`: ``modules`` (everything saved in the checkpoint), ``params``
(what the optimiser updates), ``ema_modules`` (what gets an EMA copy), ``loss(step, generator)``,
``after_step()``, ``evaluate(run)`` and ``checkpoint_extra()``. The loop calls all of them for
every stage and adds AdamW, warm-up, gradient clipping, EMA, checkpoints, logs and resume.

Reproducibility: initial weights come from ``torch.manual_seed(cfg.seed)``; the batch of a step
depends only on (seed, step) (see ``data.py``); the noise, timesteps and latent samples of a step
come from a generator seeded with (seed, step). So a run resumed from a checkpoint repeats the
uninterrupted run exactly (same thread count: float sums may differ between thread counts).
"""

import copy
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from course_utils import precision, scores, world
from course_utils.device import fast_layout
from course_utils.images import to_tensor
from course_utils.models import builders, configs
from course_utils.models.surgery import inpaint_unet_from, upscaler_vae

from . import config, data
from .config import TrainingError

CKPT = "ckpt.pt"


# --- models -------------------------------------------------------------------------------------
def new_vae(scaling_factor: float = 1.0) -> AutoencoderKL:
    return AutoencoderKL(**dict(configs.TINY_VAE, scaling_factor=float(scaling_factor)))


def new_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(**configs.TINY_TEXT_ENCODER))


def ddpm(cfg: dict = configs.SD15_SCHEDULER) -> DDPMScheduler:
    """The training noise schedule (SD 1.5's: scaled-linear betas 0.00085 -> 0.012 over 1000 steps)."""
    return DDPMScheduler.from_config(cfg)


def load_ckpt(out, stage: str) -> dict:
    """The finished checkpoint of ``stage`` (a stage this one starts from)."""
    path = Path(out) / stage / CKPT
    if not path.exists():
        raise TrainingError(f"{path} not found: run `python -m training {stage}` first")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if not ck.get("done"):
        raise TrainingError(
            f"{path} is at step {ck['step']} of an unfinished run: `python -m training {stage} --resume`"
        )
    return ck


def weights(ck: dict, name: str) -> dict:
    """A module's weights from a checkpoint, the EMA ones where the stage kept an EMA."""
    return ck["ema"].get(name) or ck["modules"][name]


def trained_vae(out) -> AutoencoderKL:
    ck = load_ckpt(out, "vae")
    vae = new_vae(ck["extra"]["scaling_factor"])
    vae.load_state_dict(weights(ck, "vae"))
    return vae.requires_grad_(False).eval()


def trained_text2img(out):
    """(text_encoder, unet) of the text2img stage, EMA weights."""
    ck = load_ckpt(out, "text2img")
    te, unet = new_text_encoder(), UNet2DConditionModel(**configs.TINY_UNET)
    te.load_state_dict(weights(ck, "text_encoder"))
    unet.load_state_dict(weights(ck, "unet"))
    return te, unet


class EMA:
    """Exponential moving average of a module's float parameters (decay warms up: (1+n)/(10+n))."""

    def __init__(self, decay: float):
        self.decay, self.shadow = decay, {}

    def init(self, name, module):
        self.shadow[name] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, step: int, modules: dict):
        d = min(self.decay, (1 + step) / (10 + step))
        for name, module in modules.items():
            for k, v in module.state_dict().items():
                s = self.shadow[name][k]
                if v.dtype.is_floating_point:
                    s.mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    s.copy_(v)


def with_weights(module, state):
    m = copy.deepcopy(module)
    m.load_state_dict(state)
    return m.eval()


# --- stages ---------------------------------------------------------------------------------------
class Stage:
    """What the loop needs of a stage; each stage sets the attributes in ``__init__`` and overrides ``loss``.

    Attributes:
        modules (`dict[str, torch.nn.Module]`): everything saved in the checkpoint (and restored on resume).
        params (`list[torch.nn.Parameter]`): what the optimiser updates.
        ema_modules (`dict[str, torch.nn.Module]`): what gets an EMA copy (when ``ema_decay`` > 0); empty: none.
    """

    modules: dict
    params: list
    ema_modules: dict
    # models kept wholly in float32 under mixed precision, as diffusers' scripts keep a model whose parameter trains
    # as one tensor with frozen parts (textual inversion: the token table; its other layers would mix dtypes)
    keep_float32: tuple = ()

    def __init__(self, cfg, out):
        self.cfg = cfg  # the stage's settings (config.STAGES); ``out``: the runs folder it starts from

    def loss(self, step: int, gen: torch.Generator):
        """``(loss, info)`` of one step: the batch depends only on (seed, step), the noise only on ``gen``."""
        raise NotImplementedError

    def after_step(self):
        """Called after every optimiser step (e.g. to undo updates of frozen rows)."""

    def evaluate(self, run) -> dict:
        """Measurements, every ``eval_every`` steps and at the end (the end's go into the checkpoint's ``extra``)."""
        return {}

    def checkpoint_extra(self) -> dict:
        """What the final checkpoint's ``extra`` holds besides the measurements (e.g. tensors export needs)."""
        return {}


class VAEStage(Stage):
    """AutoencoderKL: reconstruction (MSE) + a tiny KL term; then scaling_factor = 1 / std(latents)."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae = new_vae()
        self.modules = dict(vae=self.vae)
        self.params = list(self.vae.parameters())
        self.ema_modules = {}

    def loss(self, step, gen):
        x = data.batch(self.cfg.seed, step, self.cfg.batch_size, tokens=False)["pixels"]
        post = self.vae.encode(x).latent_dist
        rec = self.vae.decode(post.sample(gen)).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        return mse + self.cfg.kl_weight * kl, dict(mse=mse.item())

    @torch.no_grad()
    def evaluate(self, run):
        """Measure ``scaling_factor`` (and set it in the VAE's config) and the reconstruction PSNR."""
        vae = self.vae.eval()
        n, bs = self.cfg.scale_samples, 64
        gen = torch.Generator().manual_seed(self.cfg.seed)
        lat = []
        for i in range(0, n, bs):
            x = data.batch(self.cfg.seed + 500, i // bs, min(bs, n - i), tokens=False)["pixels"]
            lat.append(vae.encode(x).latent_dist.sample(gen))
        std = torch.cat(lat).std().item()
        sf = 1.0 / std
        vae.register_to_config(scaling_factor=sf)
        x = data.batch(self.cfg.seed + 600, 0, self.cfg.eval_images, tokens=False)["pixels"]
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).mean().item()  # on [0, 1] pixels
        return dict(scaling_factor=sf, latent_std=std, psnr_db=10 * math.log10(1 / mse))


class _Diffusion(Stage):
    """Helpers shared by the UNet stages."""

    def encode(self, pixels, gen):
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.sample(gen) * self.vae.config.scaling_factor

    def noised(self, lat, gen):
        """``(noisy, noise, t)``: ``lat`` noised at random timesteps; with ``cfg.noise_offset`` > 0 the noise
        gets a per-image, per-channel constant of that std (offset noise)."""
        noise = torch.randn(lat.shape, generator=gen)
        t = torch.randint(0, self.sched.config.num_train_timesteps, (lat.shape[0],), generator=gen)
        if self.cfg.noise_offset:  # drawn after t: without offset noise a step's random numbers are the same
            noise = noise + self.cfg.noise_offset * torch.randn((*lat.shape[:2], 1, 1), generator=gen)
        return self.sched.add_noise(lat, noise, t), noise, t

    def text(self, ids):
        if any(p.requires_grad for p in self.text_encoder.parameters()):
            return self.text_encoder(ids)[0]
        with torch.no_grad():
            return self.text_encoder(ids)[0]


class Text2ImgStage(_Diffusion):
    """UNet2DConditionModel + CLIPTextModel, jointly, epsilon prediction on SD 1.5's schedule."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        self.text_encoder, self.unet = new_text_encoder(), UNet2DConditionModel(**configs.TINY_UNET)
        self.modules = dict(text_encoder=self.text_encoder, unet=self.unet)
        self.params = list(self.text_encoder.parameters()) + list(self.unet.parameters())
        self.ema_modules = dict(self.modules)
        self.cache = (
            latent_cache(self.vae, cfg.cache_scenes, cfg.seed, Path(out) / "text2img") if cfg.cache_scenes else None
        )

    def loss(self, step, gen):
        c = self.cfg
        if self.cache is None:
            b = data.batch(c.seed, step, c.batch_size)
            lat, ids = self.encode(b["pixels"], gen), b["input_ids"]
        else:  # cached scenes: a fresh latent sample and a fresh caption each time a scene is used
            idx = torch.randint(0, len(self.cache["labels"]), (c.batch_size,), generator=gen)
            mean, std = self.cache["mean"][idx], self.cache["std"][idx]
            lat = (mean + std * torch.randn(mean.shape, generator=gen)) * self.vae.config.scaling_factor
            rng = random.Random(f"captions-{c.seed}-{step}")
            ids = data.tokenize(
                [data.caption(*self.cache["labels"][i], rng, c.open_captions, c.word_captions) for i in idx.tolist()]
            )
        noisy, noise, t = self.noised(lat, gen)
        pred = self.unet(noisy, t, self.text(ids)).sample
        per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        if c.min_snr:  # Min-SNR-gamma: weight min(SNR, gamma) / SNR per sample
            ac = self.sched.alphas_cumprod[t]
            snr = ac / (1 - ac)
            per = per * snr.clamp(max=c.min_snr) / snr
        return per.mean(), {}

    @torch.no_grad()
    def evaluate(self, run):
        """``course_utils.scores.text2img_scores`` of the EMA weights (``eval_seeds`` images per prompt)."""
        c = self.cfg
        te = with_weights(self.text_encoder, run.ema.shadow["text_encoder"])
        unet = with_weights(self.unet, run.ema.shadow["unet"])
        pipe = text2img_pipeline(self.vae, te, unet)
        return scores.text2img_scores(
            pipe,
            range(c.eval_seeds),
            height=world.SIZE,
            width=world.SIZE,
            num_inference_steps=c.eval_steps,
            guidance_scale=c.eval_guidance,
        )


@torch.no_grad()
def latent_cache(vae, n: int, seed: int, folder: Path, chunk: int = 256) -> dict:
    """Encode ``n`` world scenes once: posterior ``mean`` and ``std`` ``[n, 4, 16, 16]`` and their ``labels``.

    Saved as ``<folder>/latents.pt`` so a resumed run does not encode again (the VAE encode costs
    more than a UNet step at this size).
    """
    path = Path(folder) / "latents.pt"
    if path.exists():
        cache = torch.load(path, weights_only=False)
        if len(cache["labels"]) == n:
            return cache
    means, stds, labels = [], [], []
    t0 = time.perf_counter()
    for i in range(0, n, chunk):
        b = data.batch(seed + 100, i // chunk, min(chunk, n - i), tokens=False)
        dist = vae.encode(b["pixels"]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        labels += b["labels"]
    cache = dict(mean=torch.cat(means), std=torch.cat(stds), labels=labels)
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, cache)
    print(f"[text2img] encoded {n} scenes in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return cache


def text2img_pipeline(vae, text_encoder, unet) -> StableDiffusionPipeline:
    """The models as the exported pipeline (PNDM, SD 1.5's schedule), quiet."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=data.tokenizer(),
        unet=unet,
        scheduler=builders.pndm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return fast_layout(
        pipe, "cpu", vae.dtype
    )  # (mixed_precision="fp16" on a CPU: channels-last, see device.fast_layout)


class InpaintStage(_Diffusion):
    """9-channel UNet from text2img's EMA UNet (new conv_in channels zero), random masks; text encoder frozen."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        te, unet = trained_text2img(out)
        self.text_encoder = te.requires_grad_(False).eval()
        self.unet = inpaint_unet_from(unet)
        self.modules = dict(unet=self.unet)
        self.params = list(self.unet.parameters())
        self.ema_modules = dict(self.modules)

    def loss(self, step, gen):
        c = self.cfg
        b = data.batch(c.seed, step, c.batch_size)
        mask = data.random_masks(c.seed, step, c.batch_size, c.full_mask, c.mask_min, c.mask_max)
        masked = b["pixels"] * (mask < 0.5)  # as StableDiffusionInpaintPipeline: the hole becomes 0 (grey)
        lat, masked_lat = self.encode(b["pixels"], gen), self.encode(masked, gen)
        small = F.interpolate(mask, size=lat.shape[-2:])  # nearest, as the pipeline
        noisy, noise, t = self.noised(lat, gen)
        pred = self.unet(torch.cat([noisy, small, masked_lat], 1), t, self.text(b["input_ids"])).sample
        per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        if c.x0_weight_max:
            # The squared error of the implied clean latents is the epsilon one / SNR. Plain epsilon-MSE
            # hardly penalises it at high noise, exactly where copying the unmasked part of the
            # masked image would help most: with only that loss (2,000 steps) the model kept
            # repainting the whole picture. Weighting by 1/SNR (clamped) makes those errors count.
            ac = self.sched.alphas_cumprod[t]
            per = per * ((1 - ac) / ac).clamp(1.0, c.x0_weight_max)
        return per.mean(), {}


class UpscaleStage(_Diffusion):
    """x4 upscaler UNet: v-prediction on the rescaled VAE's latents (x 0.08333), conditioned on the noised 16x16 image."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae = upscaler_vae(trained_vae(out))  # scaling_factor 0.08333, which the upscale pipeline insists on
        self.sched = ddpm(configs.X4_UPSCALER_SCHEDULER)
        self.low_res_sched = ddpm(configs.X4_UPSCALER_LOW_RES_SCHEDULER)
        te, _ = trained_text2img(out)
        self.text_encoder = te.requires_grad_(False).eval()
        self.unet = UNet2DConditionModel(**configs.TINY_UPSCALER_UNET)
        self.modules = dict(unet=self.unet)
        self.params = list(self.unet.parameters())
        self.ema_modules = dict(self.modules)

    def loss(self, step, gen):
        c = self.cfg
        b = data.batch(c.seed, step, c.batch_size)
        lat = self.encode(b["pixels"], gen)  # x 0.08333, the rescaled VAE's scaling_factor
        small = data.low_res(b["pixels"], world.SIZE // c.low_res)
        level = torch.randint(0, c.max_noise_level + 1, (lat.shape[0],), generator=gen)
        low = torch.rand(lat.shape[0], generator=gen) < c.low_noise_share
        level[low] = torch.randint(0, c.low_noise_max + 1, (int(low.sum()),), generator=gen)
        small = self.low_res_sched.add_noise(small, torch.randn(small.shape, generator=gen), level)
        noisy, noise, t = self.noised(lat, gen)
        pred = self.unet(torch.cat([noisy, small], 1), t, self.text(b["input_ids"]), class_labels=level).sample
        return F.mse_loss(pred, self.sched.get_velocity(lat, noise, t)), {}


class FinetuneStage(_Diffusion):
    """The "community" fine-tune: text2img's UNet learns outlined shapes for captions with the trigger word."""

    name = "finetune"  # the stage's folder (its latent cache goes there)
    scores_other_word = True  # its evaluation also asks for another word in the trigger's place (not the LoRA, TI)

    def unet_from(self, cfg) -> str:
        """The stage whose UNet this one starts from: text2img's here (TIStage: its settings say)."""
        return "text2img"

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        te, self.unet = trained_text2img(out)
        if self.unet_from(cfg) == "finetune":  # TI for the community model: its (EMA) weights
            ck = load_ckpt(out, "finetune")
            self.unet.load_state_dict(weights(ck, "unet"))
            if "text_encoder" in ck["modules"]:
                te.load_state_dict(weights(ck, "text_encoder"))
        self.text_encoder = te.requires_grad_(False).eval()
        self.tokenizer = data.tokenizer()
        self.setup()
        self.cache = (
            style_cache(self.vae, cfg.cache_scenes, cfg.seed, Path(out) / self.name) if cfg.cache_scenes else None
        )

    def setup(self):
        """What is trained (LoRA and TI train other parameters of the same models)."""
        self.modules = dict(unet=self.unet)
        if self.cfg.train_text_encoder:
            self.modules["text_encoder"] = self.text_encoder.requires_grad_(True).train()
        self.params = [p for m in self.modules.values() for p in m.parameters()]
        self.ema_modules = dict(self.modules)

    def trigger(self) -> str:
        return self.cfg.trigger

    def styled(self, caption: str) -> str:
        """An outlined picture's caption: ``"outline style, a red circle"`` (the LoRA's: the caption itself)."""
        return data.with_trigger(caption, self.trigger())

    def loss(self, step, gen):
        c = self.cfg
        if self.cache is None:
            b = data.style_batch(c.seed, step, c.batch_size, c.style_share, self.styled, tok=self.tokenizer)
            lat, ids = self.encode(b["pixels"], gen), b["input_ids"]
        else:  # cached scenes: plain or outlined, a fresh latent sample and a fresh caption each time
            idx = torch.randint(0, len(self.cache["labels"]), (c.batch_size,), generator=gen)
            styled = torch.rand(c.batch_size, generator=gen) < c.style_share
            pick = styled[:, None, None, None]
            mean = torch.where(pick, self.cache["styled_mean"][idx], self.cache["mean"][idx])
            std = torch.where(pick, self.cache["styled_std"][idx], self.cache["std"][idx])
            lat = (mean + std * torch.randn(mean.shape, generator=gen)) * self.vae.config.scaling_factor
            rng = random.Random(f"style-captions-{c.seed}-{step}")
            captions = [data.caption(*self.cache["labels"][i], rng) for i in idx.tolist()]
            captions = [self.styled(t) if s else t for t, s in zip(captions, styled.tolist())]
            ids = data.tokenize(captions, self.tokenizer)
        noisy, noise, t = self.noised(lat, gen)
        pred = self.unet(noisy, t, self.text(ids)).sample
        if c.loss_guidance:  # as the pipeline samples: classifier-free guidance with the empty prompt
            with torch.no_grad():
                empty = self.text_encoder(data.tokenize([""] * len(ids), self.tokenizer))[0]
                uncond = self.unet(noisy, t, empty).sample
            pred = uncond + c.loss_guidance * (pred - uncond)
        return F.mse_loss(pred, noise), {}

    def pipeline(self, run) -> StableDiffusionPipeline:
        """The pipeline the stage's evaluation samples from (the EMA UNet)."""
        ema = run.ema.shadow
        unet = with_weights(self.unet, ema["unet"]) if "unet" in ema else self.unet.eval()
        te = with_weights(self.text_encoder, ema["text_encoder"]) if "text_encoder" in ema else self.text_encoder.eval()
        return text2img_pipeline(self.vae, te, unet)

    @torch.no_grad()
    def evaluate(self, run):
        """Share of outlined shapes (``course_utils.scores.outline_share``) over ``eval_seeds`` seeds of its
        6 prompts: with the trigger (``style``) and, where there is one, without it (``style_plain``); the
        fine-tune also with another word in the trigger's place (``style_other_word``)."""
        from course_utils.scores import STYLE_PROMPTS, outline_share

        c = self.cfg
        pipe = self.pipeline(run)
        pipe.tokenizer = self.tokenizer
        settings = dict(
            height=world.SIZE, width=world.SIZE, num_inference_steps=c.eval_steps, guidance_scale=c.eval_guidance
        )
        seeds = range(c.eval_seeds)
        out = dict(style=outline_share(pipe, [self.styled(p) for p in STYLE_PROMPTS], seeds, **settings))
        if self.trigger():
            out["style_plain"] = outline_share(pipe, STYLE_PROMPTS, seeds, **settings)
        if self.scores_other_word:  # another word in the trigger's place ("watercolor style, ...")
            out["style_other_word"] = outline_share(
                pipe, [data.with_trigger(p, data.OTHER_WORD) for p in STYLE_PROMPTS], seeds, **settings
            )
        for m in self.modules.values():
            m.train()
        return out


@torch.no_grad()
def style_cache(vae, n: int, seed: int, folder: Path, chunk: int = 256) -> dict:
    """Encode ``n`` world scenes once, plain and outlined (``data.styled_sample``): posterior ``mean``/``std``
    and ``styled_mean``/``styled_std`` ``[n, 4, 16, 16]``, and their ``labels``.

    Saved as ``<folder>/latents.pt``, so a resumed run does not encode again. The outlined scene of a
    seed has the plain one's colours and shape (its own size and place).
    """
    path = Path(folder) / "latents.pt"
    if path.exists():
        cache = torch.load(path, weights_only=False)
        if len(cache["labels"]) == n and cache.get("outline") == (config.OUTLINE_WIDTH, config.OUTLINE_RADIUS):
            return cache
    parts = dict(mean=[], std=[], styled_mean=[], styled_std=[])
    labels = []
    t0 = time.perf_counter()
    for i in range(0, n, chunk):
        seeds = [data.world_seed(seed + 100, i // chunk, j, chunk) for j in range(min(chunk, n - i))]
        plain = [world.sample(s, "train") for s in seeds]
        for key, images in (("", [p.image for p in plain]), ("styled_", [data.styled_sample(s)[0] for s in seeds])):
            dist = vae.encode(to_tensor(images)).latent_dist
            parts[key + "mean"].append(dist.mean)
            parts[key + "std"].append(dist.std)
        labels += [(p.color, p.shape, p.background) for p in plain]
    cache = dict(
        {k: torch.cat(v) for k, v in parts.items()},
        labels=labels,
        outline=(config.OUTLINE_WIDTH, config.OUTLINE_RADIUS),
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, cache)
    print(f"[style] encoded {n} scenes, plain and outlined, in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return cache


class LoraStage(FinetuneStage):
    """A LoRA (peft, rank ``cfg.rank``) on the UNet's ``cfg.target_modules``; everything else frozen."""

    name = "lora"
    scores_other_word = False

    def setup(self):
        from peft import LoraConfig

        self.unet.requires_grad_(False)
        self.unet.add_adapter(
            LoraConfig(
                r=self.cfg.rank,
                lora_alpha=self.cfg.rank,
                init_lora_weights="gaussian",
                target_modules=list(self.cfg.target_modules),
            )
        )
        self.modules = dict(unet=self.unet)
        self.params = [p for n, p in self.unet.named_parameters() if "lora_" in n]
        self.ema_modules = {}

    def pipeline(self, run):
        return text2img_pipeline(self.vae, self.text_encoder, self.unet.eval())


class TIStage(FinetuneStage):
    """Textual inversion: only the embedding rows of ``<outline>``, ``<outline>_1``, ... are learned."""

    name = "ti"
    keep_float32 = ("text_encoder",)  # as diffusers' textual_inversion.py: the text encoder stays float32
    scores_other_word = False

    def unet_from(self, cfg) -> str:
        """``cfg.unet_from``: ``"finetune"`` trains the embedding for the community model (its EMA weights)."""
        return cfg.unet_from

    def setup(self):
        c = self.cfg
        self.tokenizer = copy.deepcopy(self.tokenizer)
        self.tokens = [c.trigger] + [f"{c.trigger}_{i}" for i in range(1, c.n_vectors)]
        self.tokenizer.add_tokens(self.tokens)
        self.ids = self.tokenizer.convert_tokens_to_ids(self.tokens)
        init = self.tokenizer(c.init_word, add_special_tokens=False).input_ids[0]
        self.unet.requires_grad_(False)
        te = self.text_encoder
        te.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        emb = te.get_input_embeddings().weight
        with torch.no_grad():
            emb[self.ids] = emb[init].clone()
        te.requires_grad_(False)
        emb.requires_grad_(True)
        self.frozen = emb.detach().clone()
        self.modules = dict(text_encoder=te)
        self.params = [emb]
        self.ema_modules = {}

    def trigger(self) -> str:
        return " ".join(self.tokens)  # every vector in every caption

    def styled(self, caption: str) -> str:
        """``"<outline> <outline>_1, a red circle"`` (``data.with_embedding``)."""
        return data.with_embedding(caption, self.trigger())

    def pipeline(self, run):
        return text2img_pipeline(self.vae, self.text_encoder.eval(), self.unet.eval())

    @torch.no_grad()
    def after_step(self):
        emb = self.text_encoder.get_input_embeddings().weight
        keep = torch.ones(emb.shape[0], dtype=torch.bool)
        keep[self.ids] = False
        emb[keep] = self.frozen[keep]  # only the new tokens' rows change

    def checkpoint_extra(self):
        vectors = self.text_encoder.get_input_embeddings().weight[self.ids].detach().clone()
        return dict(tokens=self.tokens, vectors=vectors)


IMPL = dict(
    vae=VAEStage,
    text2img=Text2ImgStage,
    inpaint=InpaintStage,
    upscale=UpscaleStage,
    finetune=FinetuneStage,
    lora=LoraStage,
    ti=TIStage,
)


# --- the loop ------------------------------------------------------------------------------------
class Run:
    def __init__(self, name, cfg, out):
        self.name, self.cfg, self.dir = name, cfg, Path(out) / name
        self.ema = EMA(cfg.ema_decay)


HALF = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # Settings.mixed_precision -> dtype


def half_precision(stage: Stage, dtype: torch.dtype) -> None:
    """Prepare ``stage`` for mixed precision as diffusers' training scripts do: every model it holds in ``dtype``
    except the parameters it trains (``stage.params``), which stay float32 (``cast_training_params``'s rule), and
    the models named in ``stage.keep_float32``."""
    if dtype == torch.float32:
        return
    trained = {id(p) for p in stage.params}
    whole = {id(getattr(stage, name)) for name in stage.keep_float32}
    models = {id(m): m for m in vars(stage).values() if isinstance(m, torch.nn.Module)}
    for key, model in models.items():
        for param in model.parameters():
            param.data = param.data.to(torch.float32 if id(param) in trained or key in whole else dtype)


def learning_rate(cfg, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then ``lr``; from ``lr_drop_at`` on (if set) ``lr * lr_drop``."""
    if cfg.lr_drop_at and step >= cfg.lr_drop_at:
        return cfg.lr * cfg.lr_drop
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def save_checkpoint(path: Path, state: dict):
    """Write a checkpoint atomically: to ``path``.tmp first, then renamed (restore.py writes them too)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken checkpoint


def train(
    name: str,
    out=config.DEFAULT_OUT,
    steps: int | None = None,
    resume: bool = False,
    overrides: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Train stage ``name`` into ``<out>/<name>/``; returns the final checkpoint's ``extra`` (measurements).

    Args:
        name (`str`): a key of ``config.STAGES``.
        out (`str`): the runs folder.
        steps (`int`, *optional*): stop after this many steps (default: the stage's ``steps``).
        resume (`bool`): continue from ``<out>/<name>/ckpt.pt``; without it an existing checkpoint is an error.
        overrides (`dict`, *optional*): stage settings to change, e.g. ``dict(batch_size=8)``.
    """
    cfg = config.stage_config(name, **(overrides or {}))
    total = steps if steps is not None else cfg.steps
    run = Run(name, cfg, out)
    run.dir.mkdir(parents=True, exist_ok=True)
    path = run.dir / CKPT
    ck = None
    if path.exists():
        if not resume:
            raise TrainingError(f"{path} exists: pass --resume to continue it, or remove {run.dir} to start again")
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck["step"] >= total and ck.get("done"):
            if not quiet:
                print(f"[{name}] already trained to step {ck['step']} (>= {total}); nothing to do")
            return ck["extra"]

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    stage = IMPL[name](cfg, out)
    if cfg.mixed_precision not in HALF:
        raise ValueError(f"mixed_precision={cfg.mixed_precision!r}: expected one of {tuple(HALF)}")
    half = HALF[cfg.mixed_precision]
    half_precision(stage, half)
    scaler = precision.grad_scaler("cpu", half)  # float16 only; otherwise it passes everything through
    opt = torch.optim.AdamW(stage.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for m in stage.modules.values():
        m.train()
    if cfg.ema_decay:
        for k, m in stage.ema_modules.items():
            run.ema.init(k, m)
    start = 0
    if ck is not None:
        for k, m in stage.modules.items():
            m.load_state_dict(ck["modules"][k])
        run.ema.shadow = ck["ema"]
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
            if "scaler" in ck:
                scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng"]["torch"])
            random.setstate(ck["rng"]["python"])
            np.random.set_state(ck["rng"]["numpy"])
        # else: a checkpoint written by `restore` (exported weights only): a fresh AdamW, the seeds' RNG states
        start = ck["step"]
        if not quiet:
            print(
                f"[{name}] resuming at step {start}"
                + ("" if "optimizer" in ck else f" from weights restored from {ck.get('restored_from')}")
            )
    (run.dir / "config.json").write_text(
        json.dumps(
            dict(stage=name, steps=total, settings=asdict(cfg), threads=torch.get_num_threads()), indent=2, default=str
        )
    )

    def save(step, done=False, extra=None):
        save_checkpoint(
            path,
            dict(
                step=step,
                done=done,
                stage=name,
                config=asdict(cfg),
                modules={k: m.state_dict() for k, m in stage.modules.items()},
                ema=run.ema.shadow,
                optimizer=opt.state_dict(),
                scaler=scaler.state_dict(),
                extra=extra or {},
                rng=dict(torch=torch.get_rng_state(), python=random.getstate(), numpy=np.random.get_state()),
            ),
        )

    with open(run.dir / "log.jsonl", "a") as log:  # one JSON row per logged step, eval and the final result
        t0, seen = time.perf_counter(), 0
        for step in range(start, total):
            lr = learning_rate(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            with precision.autocast("cpu", half):  # (off in float32)
                loss, info = stage.loss(step % cfg.data_repeat if cfg.data_repeat else step, gen)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # float16: the loss times the scale; otherwise loss.backward()
            gnorm = precision.optimizer_step(opt, scaler, stage.params, cfg.grad_clip or None)
            gnorm = torch.tensor(0.0) if gnorm is None else gnorm
            stage.after_step()
            if cfg.ema_decay:
                run.ema.update(step, stage.ema_modules)
            seen += cfg.batch_size
            if not math.isfinite(loss.item()):
                raise TrainingError(f"[{name}] loss is {loss.item()} at step {step}: lower --set lr=...")
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                dt = time.perf_counter() - t0
                row = dict(
                    step=step + 1,
                    loss=round(loss.item(), 6),
                    lr=lr,
                    grad_norm=round(float(gnorm), 4),
                    samples_per_s=round(seen / dt, 2),
                    **info,
                )
                log.write(json.dumps(row) + "\n")
                log.flush()
                if not quiet:
                    print(f"[{name}] " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                t0, seen = time.perf_counter(), 0
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < total:
                with precision.autocast("cpu", half):
                    ev = stage.evaluate(run)
                log.write(json.dumps(dict(step=step + 1, eval=ev)) + "\n")
                log.flush()
                if not quiet:
                    print(f"[{name}] eval {ev}", flush=True)
                t0 = time.perf_counter()
            if (step + 1) % cfg.ckpt_every == 0 and step + 1 < total:
                save(step + 1)
        with precision.autocast("cpu", half):
            extra = {**stage.evaluate(run), **stage.checkpoint_extra()}
        save(total, done=True, extra=extra)
        shown = {k: v for k, v in extra.items() if not torch.is_tensor(v)}  # result.json: what JSON can hold
        log.write(json.dumps(dict(step=total, final=shown)) + "\n")
    (run.dir / "result.json").write_text(json.dumps(dict(step=total, **shown), indent=2, default=str))
    if not quiet:
        print(f"[{name}] done at step {total}: {shown}")
    return extra
