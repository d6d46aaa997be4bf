"""The training loop shared by every stage: ``python -m training <stage>`` runs :func:`train`.

The stages are in :mod:`.stages` (VAE, text-to-image, inpainting, upscaler) and :mod:`.styles` (fine-tune, LoRA,
textual inversion), their checkpoints in :mod:`.checkpoints`. The loop calls every stage's ``loss``,
``after_step``, ``evaluate`` and ``checkpoint_extra`` and adds AdamW, warm-up, gradient clipping, EMA, mixed
precision, checkpoints, logs and resume.

Reproducibility: initial weights come from ``torch.manual_seed(cfg.seed)``; the batch of a step
depends only on (seed, step) (see ``data.py``); the noise, timesteps and latent samples of a step
come from a generator seeded with (seed, step). So a run resumed from a checkpoint repeats the
uninterrupted run exactly (same thread count: float sums may differ between thread counts).
"""

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from course_utils import precision

from . import config
from .checkpoints import CKPT, EMA, save_checkpoint
from .config import TrainingError
from .controlnet import ControlNetStage
from .stages import InpaintStage, Stage, Text2ImgStage, UpscaleStage, VAEStage
from .styles import FinetuneStage, LoraStage, TIStage

IMPL = dict(
    vae=VAEStage,
    text2img=Text2ImgStage,
    inpaint=InpaintStage,
    upscale=UpscaleStage,
    finetune=FinetuneStage,
    lora=LoraStage,
    ti=TIStage,
    controlnet=ControlNetStage,
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
