"""Command line: ``python -m training {vae,text2img,inpaint,upscale,finetune,lora,ti,all,export,restore,diagnose} ...``.

Settings come from the recipe (``training/config.py``), then an override file (``--overrides``),
then ``--set KEY=VALUE`` (repeatable).
"""

import argparse
import ast
from pathlib import Path

import torch

from . import config

COMMANDS = ("all", "export", "restore", "diagnose")


def _value(text: str):
    """A Python literal (``8``, ``1e-3``, ``('to_q',)``, ``True``), else the text itself (``outline``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items, stages) -> dict:
    """``["batch_size=8", "lr=1e-3"]`` -> ``{"batch_size": 8, "lr": 0.001}``, typed as the settings of ``stages``.

    Every key must be a setting of at least one of ``stages``, and its value of that setting's type
    (an int is accepted for a float, a list for a tuple); anything else is a ``config.TrainingError`` saying which.
    """
    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise config.TrainingError(f"--set takes KEY=VALUE, e.g. --set batch_size=8; got {item!r}")
        owners = [s for s in stages if key in config.STAGES[s].__dataclass_fields__]
        if not owners:
            raise config.TrainingError(
                f"--set {key}: no such setting in stage(s) {', '.join(stages)}; "
                f"settings: {sorted(set().union(*(config.STAGES[s].__dataclass_fields__ for s in stages)))}"
            )
        value = _value(text)
        for s in owners:  # checks the type; returns it converted (1 -> 1.0 for a float setting)
            value = getattr(config.stage_config(s, **{key: value}), key)
        out[key] = value
    return out


def _check_start(out, stage: str, from_step: int, resume: bool):
    """An override file that continues a run at ``from_step`` needs ``--resume`` and a checkpoint at that step."""
    if not from_step:
        return
    path = Path(out) / stage / "ckpt.pt"
    if not resume or not path.exists():
        raise config.TrainingError(
            f"this override file continues {stage} at step {from_step}: pass --resume, with {path} at that step"
        )
    step = torch.load(path, map_location="cpu", weights_only=False)["step"]
    if step != from_step:
        raise config.TrainingError(
            f"this override file continues {stage} at step {from_step}, but {path} is at step {step}"
        )


def main(argv=None):
    """``python -m training ...``: a :class:`config.TrainingError` becomes the exit message (no traceback)."""
    try:
        return _main(argv)
    except config.TrainingError as err:
        raise SystemExit(str(err)) from None


def _main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("stage", choices=[*config.STAGES, *COMMANDS])
    p.add_argument(
        "--steps", type=int, help="stop after this many steps (default: the stage's steps); diagnose: sampler steps"
    )
    p.add_argument("--out", default=config.DEFAULT_OUT, help="runs folder (default %(default)s)")
    p.add_argument(
        "--resume", action="store_true", help="continue from <out>/<stage>/ckpt.pt (all: skip finished stages)"
    )
    p.add_argument(
        "--overrides",
        metavar="FILE",
        help="a .toml file of settings for this stage, e.g. training/runs_that_made_data_tiny/*.toml",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. batch_size=8 (after --overrides)",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--to", default="data/tiny", help="export: target folder (default %(default)s)")
    p.add_argument(
        "--stages",
        help="export: only these stages, comma-separated, e.g. finetune,lora,ti (default: every finished one)",
    )
    p.add_argument(
        "--from",
        dest="src",
        default="data/tiny",
        help="restore: the exported models to start --out from (default %(default)s)",
    )
    p.add_argument("--ckpt", help="diagnose: a text2img checkpoint to use instead of data/tiny's weights")
    p.add_argument("--seeds", default="0-19", help="diagnose: seeds, FIRST-LAST (default %(default)s)")
    p.add_argument("--guidance", type=float, nargs="+", help="diagnose: guidance scales (default: the model card's)")
    p.add_argument("--full", action="store_true", help="diagnose: also the text-to-image and negative-prompt scores")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.stage == "restore":
        from .restore import restore

        print(restore(a.out, a.src))
        return
    if a.stage == "export":
        from .export import export

        export(a.out, a.to, a.stages.split(",") if a.stages else None)
        return
    if a.stage == "diagnose":
        from .diagnose import diagnose, seed_range

        return diagnose(a.ckpt, seed_range(a.seeds), a.guidance, a.full, a.steps, a.quiet)
    from .train import train

    stages = list(config.STAGES) if a.stage == "all" else [a.stage]
    settings = {}
    if a.overrides:
        if a.stage == "all":
            raise config.TrainingError("--overrides applies to one stage, not all")
        loaded = config.load_overrides(a.overrides, a.stage)
        _check_start(a.out, a.stage, loaded["from_step"], a.resume)
        settings.update(loaded["settings"])
    settings.update(parse_sets(a.set, stages))
    for name in stages:
        fields = config.STAGES[name].__dataclass_fields__
        mine = {k: v for k, v in settings.items() if k in fields}  # all: each stage takes its keys
        train(name, out=a.out, steps=a.steps, resume=a.resume, overrides=mine, quiet=a.quiet)


if __name__ == "__main__":
    main()
