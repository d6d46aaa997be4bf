"""When does a shape negative act? Negative only for steps < k (early) or only for steps >= k (late)."""
import sys, json, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository root
from course_utils import evaluate as ev, world
from course_utils.registry import DEFAULTS, load_pipeline
torch.set_num_threads(2)
pipe = load_pipeline("text2img", profile="tiny", device="cpu"); pipe.set_progress_bar_config(disable=True)
s = dict(DEFAULTS["tiny"]); seeds = list(range(20))
def emb(texts):
    return pipe.encode_prompt(texts, "cpu", 1, False)[0]
def run(prompt, kept, mode, k):
    negs = [b for _, b in kept]; n = len(kept)
    neg_e, empty_e, pos_e = emb(negs), emb([""] * n), emb([prompt] * n)
    first = neg_e if mode == "early" else empty_e
    second = empty_e if mode == "early" else neg_e
    def cb(p, i, t, kw):
        if i == k - 1:
            return {"prompt_embeds": torch.cat([second, pos_e])}
        return {}
    g = [torch.Generator().manual_seed(sd) for sd, _ in kept]
    ims = pipe(prompt_embeds=pos_e, negative_prompt_embeds=first, generator=g, callback_on_step_end=cb,
               callback_on_step_end_tensor_inputs=["prompt_embeds"], **s).images
    return [world.classify(im)["shape"] not in (None, b) for im, (_, b) in zip(ims, kept)]
befores = {}
for prompt in ev.OPEN_SHAPE:
    before = [world.classify(im)["shape"] for im in ev.generate(pipe, prompt, seeds, **s)]
    befores[prompt] = [(sd, b) for sd, b in zip(seeds, before) if b]
for mode, k in [("early", 25), ("early", 3), ("early", 6), ("early", 10), ("late", 3), ("late", 6), ("late", 10)]:
    r = sum((run(p, befores[p], mode, k) for p in ev.OPEN_SHAPE), [])
    print(mode, k, round(sum(r) / len(r), 3), flush=True)
