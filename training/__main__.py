"""Command line: ``python -m training {vae,text2img,inpaint,upscale,finetune,lora,ti,all,export,restore} ...``."""
import argparse
import ast
import sys

import torch

from . import config


def _value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    p.add_argument("stage", choices=[*config.STAGES, "all", "export", "restore"])
    p.add_argument("--steps", type=int, help="stop after this many steps (default: the stage's steps in config.py)")
    p.add_argument("--out", default=config.DEFAULT_OUT, help="runs folder (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/<stage>/ckpt.pt (all: skip finished stages)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a stage setting, e.g. batch_size=8")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--to", default="data/tiny", help="export: target folder (default %(default)s)")
    p.add_argument("--from", dest="src", default="data/tiny", help="restore: the exported models to start --out from (default %(default)s)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    overrides = {}
    for item in a.set:
        key, _, val = item.partition("=")
        overrides[key] = _value(val)
    if a.stage == "restore":
        from .restore import restore

        print(restore(a.out, a.src))
        return
    if a.stage == "export":
        from .export import export

        export(a.out, a.to)
        return
    from .train import train

    stages = list(config.STAGES) if a.stage == "all" else [a.stage]
    for name in stages:
        fields = config.STAGES[name].__dataclass_fields__
        mine = {k: v for k, v in overrides.items() if a.stage != "all" or k in fields}  # all: each stage takes its keys
        train(name, out=a.out, steps=a.steps, resume=a.resume, overrides=mine, quiet=a.quiet)


if __name__ == "__main__":
    sys.exit(main())
