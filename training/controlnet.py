"""The ControlNet stage: a trainable copy of the text-to-image UNet's encoder that reads a Canny edge map.

``ControlNetModel.from_unet`` copies the frozen UNet's ``conv_in``, time embedding, down blocks and middle block, adds
a small convolutional embedding for the condition and a zero-initialised 1x1 convolution after every block it feeds
back: at step 0 every residual it adds to the UNet is exactly zero, so training starts from the base model. Only the
copy trains; the UNet, text encoder and VAE stay frozen; the loss is the text-to-image loss (predict the noise), with
the ControlNet's residuals added to the UNet's skip connections and middle block, as
``StableDiffusionControlNetPipeline`` adds them when sampling.

The condition is ``course_utils.edges.canny`` of the scene (white edges on black, 3 channels, 64x64, in [0, 1] as
the pipeline's control-image processor gives it). Half of the captions are replaced with "" (the ControlNet paper's
50%, Zhang et al. 2023, arXiv:2302.05543): the copy must then find the picture's layout in the edges alone, and the
unconditional half of classifier-free guidance (an empty prompt, with the same condition) learns it too.
"""

import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

from course_utils import edges, latents, scores, world
from course_utils.images import to_tensor

from . import data
from .checkpoints import ddpm, save_checkpoint, trained_text2img, trained_vae
from .stages import DiffusionStage, sampling_pipeline


class ControlNetStage(DiffusionStage):
    """``ControlNetModel.from_unet(text2img's EMA UNet)``; everything else frozen; edges of cached scenes."""

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        te, unet = trained_text2img(out)
        self.text_encoder = te.requires_grad_(False).eval()
        self.unet = unet.requires_grad_(False).eval()
        self.controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cfg.embedding_channels)
        self.trains(dict(controlnet=self.controlnet))
        self.cache = condition_cache(self.vae, cfg.cache_scenes, cfg.seed, Path(out) / "controlnet")

    def loss(self, step, gen):
        c = self.cfg
        idx = torch.randint(0, len(self.cache["labels"]), (c.batch_size,), generator=gen)
        lat = latents.draw(self.cache, idx, self.vae.config.scaling_factor, gen)
        cond = self.cache["edges"][idx].float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)  # [B, 3, 64, 64] in [0, 1]
        rng = random.Random(f"captions-{c.seed}-{step}")
        captions = [
            "" if rng.random() < c.empty_prompts else data.caption(*self.cache["labels"][i], rng) for i in idx.tolist()
        ]
        noisy, noise, t = self.noised(lat, gen)
        text = self.text(data.tokenize(captions))
        down, mid = self.controlnet(noisy, t, text, controlnet_cond=cond, return_dict=False)
        pred = self.unet(noisy, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        return F.mse_loss(pred, noise), {}

    @torch.no_grad()
    def evaluate(self, run):
        """``course_utils.scores.control_scores`` on ``eval_per_shape`` held-out conditions of each shape."""
        c = self.cfg
        was = self.controlnet.training
        pipe = controlnet_pipeline(self.vae, self.text_encoder, self.unet, self.controlnet.eval())
        found = scores.control_scores(
            pipe,
            scores.control_scenes(c.eval_per_shape),
            height=world.SIZE,
            width=world.SIZE,
            num_inference_steps=c.eval_steps,
            guidance_scale=c.eval_guidance,
        )
        self.controlnet.train(was)
        return found


@torch.no_grad()
def condition_cache(vae, n: int, seed: int, folder: Path, chunk: int = 256) -> dict:
    """``n`` training scenes, VAE-encoded once (``course_utils.latents.encode``: ``mean``, ``std`` ``[n, 4, 16, 16]``)
    with their ``edges`` (``[n, 64, 64]`` uint8, 0 or 255: ``course_utils.edges.canny``) and ``labels``.

    Saved as ``<folder>/conditions.pt`` so a resumed run does not encode again.
    """
    path = Path(folder) / "conditions.pt"
    if path.exists():
        cache = torch.load(path, weights_only=False)
        if len(cache["labels"]) == n:
            return cache
    parts = dict(mean=[], std=[], edges=[])
    labels = []
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        samples = [world.sample(data.world_seed(seed + 100, start // chunk, i, chunk), "train") for i in range(size)]
        images = [s.image for s in samples]
        encoded = latents.encode(vae, to_tensor(images))
        parts["mean"].append(encoded["mean"])
        parts["std"].append(encoded["std"])
        parts["edges"].append(torch.from_numpy(edges.canny_batch(images)))
        labels += [(s.color, s.shape, s.background) for s in samples]
    cache = {k: torch.cat(v) for k, v in parts.items()}
    cache["labels"] = labels
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, cache)
    share = float(np.mean(cache["edges"].numpy() > 0))
    print(f"[controlnet] encoded {n} scenes ({share:.1%} edge pixels) in {time.perf_counter() - t0:.0f} s", flush=True)
    return cache


def controlnet_pipeline(vae, text_encoder, unet, controlnet) -> StableDiffusionControlNetPipeline:
    """The models as lesson 11 samples with them (PNDM, SD 1.5's schedule), quiet."""
    return sampling_pipeline(StableDiffusionControlNetPipeline, vae, text_encoder, unet, controlnet=controlnet)
