"""Start a runs folder from the committed weights instead of from scratch.

    python -m training restore --out training/runs [--from data/tiny]

Writes finished checkpoints (``<runs>/<stage>/ckpt.pt``) for the stages that later stages start
from - ``vae``, ``text2img``, ``inpaint`` and ``upscale`` - built from the fp16 safetensors in
``data/tiny``. Then any stage can be retrained (``python -m training lora --out <runs>``) or
continued past its last step (``python -m training upscale --steps 6000 --resume --out <runs>``)
without repeating the hours before it.

What is lost compared with the original run's checkpoint: the weights were rounded to fp16, only
the EMA weights were exported (they become both the weights and the EMA here), and the
optimizer's moments and the random-number states are gone (a resumed run starts a fresh AdamW).
So a continued run is close to, not bit-identical with, an uninterrupted one. Exporting restored
checkpoints gives back the same fp16 tensors, except ``upscale/vae``, which ``export`` recomputes from
the rounded VAE (``upscaler_vae``): within one fp16 step of the committed file, which can be kept.
"""

import json
from pathlib import Path

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from . import config
from .checkpoints import CKPT, save_checkpoint
from .config import TrainingError

STAGES = ("vae", "text2img", "inpaint", "upscale")  # what `restore` writes: the stages others start from


def _fp32(module) -> dict:
    return {k: v.detach().float().clone() for k, v in module.state_dict().items()}


def restore(to_runs=config.DEFAULT_OUT, src="data/tiny", overwrite: bool = False) -> dict:
    """Write finished checkpoints of ``STAGES`` into ``to_runs`` from the exported weights in ``src``.

    Args:
        to_runs (`str`): the runs folder to create (``<to_runs>/<stage>/ckpt.pt``).
        src (`str`): the exported models (``python -m training export``'s ``--to``).
        overwrite (`bool`): replace existing checkpoints; without it an existing one is an error.

    Returns:
        `dict`: ``{stage: step}`` for each checkpoint written.
    """
    src, runs = Path(src), Path(to_runs)
    results = json.loads((src / "training_results.json").read_text())["results"]
    vae = AutoencoderKL.from_pretrained(src / "text2img" / "vae")
    te = CLIPTextModel.from_pretrained(src / "text2img" / "text_encoder")
    unet = UNet2DConditionModel.from_pretrained(src / "text2img" / "unet")
    modules = {
        "vae": dict(vae=_fp32(vae)),
        "text2img": dict(text_encoder=_fp32(te), unet=_fp32(unet)),
        "inpaint": dict(unet=_fp32(UNet2DConditionModel.from_pretrained(src / "inpaint" / "unet"))),
        "upscale": dict(unet=_fp32(UNet2DConditionModel.from_pretrained(src / "upscale" / "unet"))),
    }
    written = {}
    for stage in STAGES:
        path = runs / stage / CKPT
        if path.exists() and not overwrite:
            raise TrainingError(f"{path} exists: remove it (or pass --overwrite) to restore over it")
        path.parent.mkdir(parents=True, exist_ok=True)
        result = results.get(stage, {})
        step = int(result.get("step", config.STAGES[stage].steps))
        extra = {k: v for k, v in result.items() if k != "step"}
        if stage == "vae":
            extra["scaling_factor"] = float(vae.config.scaling_factor)  # what trained_vae() reads
        ema = {} if stage == "vae" else {k: {n: t.clone() for n, t in v.items()} for k, v in modules[stage].items()}
        save_checkpoint(
            path,
            dict(
                step=step,
                done=True,
                stage=stage,
                config={},
                modules=modules[stage],
                ema=ema,
                extra=extra,
                restored_from=str(src),
            ),
        )
        (path.parent / "result.json").write_text(
            json.dumps(result, indent=2)
        )  # what export copies into training_results.json
        written[stage] = step
    return written
