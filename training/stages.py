"""The stages that make `tiny`'s base models: the VAE, text-to-image, inpainting and the upscaler.

Every stage is a :class:`Stage`: ``modules`` (everything saved in the checkpoint), ``params`` (what the optimiser
updates), ``ema_modules`` (what gets an EMA copy), ``loss(step, generator)``, ``after_step()``, ``evaluate(run)``
and ``checkpoint_extra()``. The style stages (fine-tune, LoRA, textual inversion) are in :mod:`.styles`; the loop
that runs any of them is :func:`training.train.train`.
"""

import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from course_utils import latents, scores, world
from course_utils.device import fast_layout
from course_utils.models import builders, configs
from course_utils.models.surgery import inpaint_unet_from, upscaler_vae

from . import data
from .checkpoints import (
    ddpm,
    new_text_encoder,
    new_vae,
    save_checkpoint,
    trained_text2img,
    trained_vae,
    with_weights,
)


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

    def trains(self, modules: dict, params: list | None = None, ema: bool = True) -> None:
        """Set what this stage saves, trains and averages.

        Args:
            modules (`dict[str, torch.nn.Module]`): everything saved in the checkpoint.
            params (`list[torch.nn.Parameter]`, *optional*): what the optimiser updates; default every parameter of
                ``modules``, in their order.
            ema (`bool`, defaults to `True`): keep an EMA copy of ``modules`` (when ``ema_decay`` > 0).
        """
        self.modules = modules
        self.params = [p for m in modules.values() for p in m.parameters()] if params is None else params
        self.ema_modules = dict(modules) if ema else {}

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
        self.trains(dict(vae=self.vae), ema=False)

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


class DiffusionStage(Stage):
    """Helpers shared by the UNet stages."""

    # Simplified from course_utils.by_hand.encode
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


class Text2ImgStage(DiffusionStage):
    """UNet2DConditionModel + CLIPTextModel, jointly, epsilon prediction on SD 1.5's schedule."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        self.text_encoder, self.unet = new_text_encoder(), UNet2DConditionModel(**configs.TINY_UNET)
        self.trains(dict(text_encoder=self.text_encoder, unet=self.unet))
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
            lat = latents.draw(self.cache, idx, self.vae.config.scaling_factor, gen)
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
    """Encode ``n`` world scenes once (``course_utils.latents.encode``): posterior ``mean`` and ``std``
    ``[n, 4, 16, 16]`` and their ``labels``; ``latents.draw`` draws a step's latents from it.

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
        part = latents.encode(vae, b["pixels"])
        means.append(part["mean"])
        stds.append(part["std"])
        labels += b["labels"]
    cache = dict(mean=torch.cat(means), std=torch.cat(stds), labels=labels)
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, cache)
    print(f"[text2img] encoded {n} scenes in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return cache


def sampling_pipeline(pipeline_class, vae, text_encoder, unet, **more):
    """The trained models as a quiet pipeline of ``pipeline_class`` with the exported scheduler (PNDM, SD 1.5's
    schedule) and no safety checker; ``more``: further models (e.g. ``controlnet=``)."""
    pipe = pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=data.tokenizer(),
        unet=unet,
        scheduler=builders.pndm_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **more,
    )
    pipe.set_progress_bar_config(disable=True)
    return fast_layout(
        pipe, "cpu", vae.dtype
    )  # (mixed_precision="fp16" on a CPU: channels-last, see device.fast_layout)


def text2img_pipeline(vae, text_encoder, unet) -> StableDiffusionPipeline:
    """The models as the exported pipeline (PNDM, SD 1.5's schedule), quiet."""
    return sampling_pipeline(StableDiffusionPipeline, vae, text_encoder, unet)


class InpaintStage(DiffusionStage):
    """9-channel UNet from text2img's EMA UNet (new conv_in channels zero), random masks; text encoder frozen."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        te, unet = trained_text2img(out)
        self.text_encoder = te.requires_grad_(False).eval()
        self.unet = inpaint_unet_from(unet)
        self.trains(dict(unet=self.unet))

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


class UpscaleStage(DiffusionStage):
    """x4 upscaler UNet: v-prediction on the rescaled VAE's latents (x 0.08333), conditioned on the noised 16x16 image."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae = upscaler_vae(trained_vae(out))  # scaling_factor 0.08333, which the upscale pipeline insists on
        self.sched = ddpm(configs.X4_UPSCALER_SCHEDULER)
        self.low_res_sched = ddpm(configs.X4_UPSCALER_LOW_RES_SCHEDULER)
        te, _ = trained_text2img(out)
        self.text_encoder = te.requires_grad_(False).eval()
        self.unet = UNet2DConditionModel(**configs.TINY_UPSCALER_UNET)
        self.trains(dict(unet=self.unet))

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
