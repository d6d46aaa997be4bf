"""The `tiny` models' checkpoints: new and trained models, what a stage starts from, the EMA copy, atomic saves.

A stage's checkpoint is ``<out>/<stage>/ckpt.pt`` (:data:`CKPT`): its modules' weights, EMA shadow, optimiser and
loss-scaler state, random-number states and settings. :func:`load_ckpt` reads a finished one, :func:`weights`
its (EMA) weights, and :func:`trained_vae` / :func:`trained_text2img` build the models later stages start from.
"""

import copy
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from course_utils.models import configs

from .config import TrainingError

CKPT = "ckpt.pt"


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


def save_checkpoint(path: Path, state: dict):
    """Write a checkpoint atomically: to ``path``.tmp first, then renamed (restore.py writes them too)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: an interrupted save never leaves a broken checkpoint
