"""Negative-prompt diagnosis: per prompt, shape removal; bare words alone. Optional ckpt to swap in."""
import sys, json, collections, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository root
from course_utils import evaluate as ev, world
from course_utils.registry import DEFAULTS, load_pipeline
from training.train import weights  # a checkpoint's EMA weights
import argparse
p = argparse.ArgumentParser(); p.add_argument("--ckpt"); p.add_argument("--seeds", default="0-19"); p.add_argument("--g", type=float, nargs="*")
p.add_argument("--threads", type=int, default=1); p.add_argument("--full", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
lo, hi = map(int, a.seeds.split("-")); seeds = list(range(lo, hi + 1))
pipe = load_pipeline("text2img", profile="tiny", device="cpu"); pipe.set_progress_bar_config(disable=True)
if a.ckpt:
    ck = torch.load(a.ckpt, map_location="cpu", weights_only=False)
    pipe.text_encoder.load_state_dict(weights(ck, "text_encoder"))
    pipe.unet.load_state_dict(weights(ck, "unet"))
    print("ckpt step", ck["step"])
settings = dict(DEFAULTS["tiny"])
for g in (a.g or [settings["guidance_scale"]]):
    s = dict(settings, guidance_scale=g)
    out = {"g": g}
    for prompt in ev.OPEN_SHAPE:
        before = [world.classify(im)["shape"] for im in ev.generate(pipe, prompt, seeds, **s)]
        kept = [(sd, b) for sd, b in zip(seeds, before) if b]
        after = ev.generate(pipe, prompt, [sd for sd, _ in kept], negative_prompt=[b for _, b in kept], **s)
        res = collections.Counter()
        for (_, b), im in zip(kept, after):
            c = world.classify(im)["shape"]
            res[f"{b}->{c}"] += 1
        out[prompt] = dict(res)
    for word in ("circle", "square", "triangle"):
        shapes = [world.classify(im)["shape"] for im in ev.generate(pipe, word, seeds, **s)]
        out[word] = dict(collections.Counter(shapes))
    print(json.dumps(out), flush=True)
    if a.full:
        sc = ev.text2img_scores(pipe, seeds, **s); sc.update(ev.negative_scores(pipe, seeds, **s))
        print(json.dumps({"g": g, **{k: round(v, 3) for k, v in sc.items()}}), flush=True)
