"""Negative-prompt diagnosis: mid-run, what do the prompt and the negative prompt (the shape drawn) each predict?

For each seed of each OPEN_SHAPE prompt: run the pipeline (no negative prompt), keep the latents after
timestep index k, and decode the UNet's clean-picture prediction x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
under the prompt and under the bare word of the finally drawn shape. Prints how often each
prediction already shows the final shape.
"""
import sys, json, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository root
from course_utils import evaluate as ev, world
from course_utils.registry import DEFAULTS, load_pipeline
torch.set_num_threads(2)
pipe = load_pipeline("text2img", profile="tiny", device="cpu"); pipe.set_progress_bar_config(disable=True)
s = dict(DEFAULTS["tiny"]); seeds = list(range(20))
ab = pipe.scheduler.alphas_cumprod
for k in (3, 6, 10):
    same = {"prompt": 0, "negative": 0}; n = 0; diff = []
    for prompt in ev.OPEN_SHAPE:
        kept = {}
        def grab(p, i, t, kw):
            if i == k - 1:
                kept["x"], kept["t"] = kw["latents"].clone(), p.scheduler.timesteps[k]
            return {}
        gens = [torch.Generator().manual_seed(sd) for sd in seeds]
        images = pipe([prompt] * len(seeds), generator=gens, callback_on_step_end=grab, **s).images
        final = [world.classify(im)["shape"] for im in images]
        x, t = kept["x"], kept["t"]
        with torch.no_grad():
            emb_p = pipe.encode_prompt([prompt] * len(seeds), "cpu", 1, False)[0]
            emb_n = pipe.encode_prompt([f or "" for f in final], "cpu", 1, False)[0]
            xin = pipe.scheduler.scale_model_input(x, t)
            a = ab[t]
            x0 = {}
            for name, emb in (("prompt", emb_p), ("negative", emb_n)):
                eps = pipe.unet(xin, t, encoder_hidden_states=emb).sample
                x0[name] = (x - (1 - a).sqrt() * eps) / a.sqrt()
            diff += (x0["prompt"] - x0["negative"]).flatten(1).norm(dim=1).tolist()
            pics = {name: pipe.image_processor.postprocess(pipe.vae.decode(v / pipe.vae.config.scaling_factor).sample) for name, v in x0.items()}
        for j, f in enumerate(final):
            if f is None:
                continue
            n += 1
            for name in same:
                same[name] += world.classify(pics[name][j])["shape"] == f
    print(json.dumps({"k": k, "t": int(t), "images": n, "x0_prompt_shows_final_shape": round(same["prompt"] / n, 3),
                      "x0_negative_shows_final_shape": round(same["negative"] / n, 3),
                      "mean_norm_x0_prompt_minus_negative": round(sum(diff) / len(diff), 3)}), flush=True)
