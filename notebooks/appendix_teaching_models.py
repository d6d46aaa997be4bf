# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,jupytext,colab,accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: inside the teaching models
#
# The lessons run on `tiny`, a Stable Diffusion of the same architecture trained by this course on a
# world of coloured shapes, so that every cell runs on a laptop CPU in seconds. This optional appendix
# holds what is about `tiny` itself: how it was made, where it differs from SD 1.5, and the
# measurements behind the lessons' short remarks about it. Each section names the lesson it belongs to.
#
# Contents (each section runs on its own after the set-up cells; open the one a lesson points to):
# - From lesson 01: a prompt `tiny` misses, found by a sweep
# - From lesson 02: `tiny`'s VAE scale, and its word mixes at every share
# - From lesson 03: the denoising loop
# - From lesson 04: PNDM's warm-up in a cut schedule, measured
# - From lesson 05: when a negative prompt acts, and where it shows on `tiny`
# - From lesson 06: the `tiny` upscaler
# - From lesson 07: the outline style — how `tiny`'s community stand-ins were made
# - From lesson 08: `tiny`'s inpainting UNet, and the seam it does not avoid
# - From lesson 10: the judge, the VAE's limits, and the runs behind the recipe
#
# Sweeps here are measured on the course's `tiny` weights; they explain the lessons' choices of prompts,
# seeds and settings. Nothing in the lessons depends on running this notebook.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# The appendix runs on `tiny` on every runtime (a CPU one is enough): it downloads nothing from the Hub, so the
# two commented lines after the imports (a Hub cache on Google Drive) are not needed here.
import importlib.util, os, shutil, subprocess, sys
# from google.colab import drive; drive.mount("/content/drive")
# os.environ["HF_HOME"] = "/content/drive/MyDrive/hf-cache"
if importlib.util.find_spec("course_utils") is None:  # a fresh Colab runtime
    repo = os.environ.get("COURSE_REPO", "https://github.com/sd-course/sd-course.git")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # a wrong URL fails instead of asking for a password

    def run(*command, failed):  # one step; if it fails, show its own output and what to do, and stop
        done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if done.returncode:
            print(done.stdout + done.stderr)
            raise RuntimeError(f"{failed}: its output is above. Wrong URL, or your fork? Set COURSE_REPO, e.g. "
                               "os.environ['COURSE_REPO'] = 'https://github.com/ORG/NAME.git'. On Colab, Runtime > "
                               "Change runtime type > T4 GPU (a fresh runtime too). Then run this cell again.")

    # an earlier run that stopped half-way may have left a clone with files missing: start that one afresh
    status = subprocess.run(["git", "--git-dir=sd-course/.git", "--work-tree=sd-course", "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True, text=True, env=env)
    if os.path.isdir("sd-course") and (status.returncode or status.stdout or not os.path.isfile("sd-course/pyproject.toml")):
        print("sd-course/ is an unfinished clone: removing it")
        shutil.rmtree("sd-course")
    if not os.path.isdir("sd-course"):
        print(f"cloning {repo} ...")
        run("git", "clone", "-q", "--depth", "1", repo, "sd-course", failed=f"git could not clone {repo}")
    print("installing course_utils and its libraries (a minute or two) ...")
    run(sys.executable, "-m", "pip", "install", "-q", "-e", "sd-course", failed="pip could not install the course")
    sys.path.insert(0, os.path.abspath("sd-course"))

# %%
import os

os.environ["COURSE_PROFILE"] = "tiny"  # this appendix is about `tiny`: it runs on `tiny` on every machine
import numpy as np
import torch

import course_utils as cu

choice = cu.setup()
settings = cu.default_settings(choice.profile)

# %% [markdown]
# ## From lesson 01: a prompt `tiny` misses, found by a sweep
#
# Lesson 1 answers the learners' question "the first image had only a horse, no astronaut" with a
# prompt that `tiny` sometimes gets only partly right. Its running prompt, "a red circle on a blue
# background", would not do: `tiny` draws the combinations it was trained on right almost every time
# (its model card, `data/tiny/README.md`: colour, shape and background all right in 98.8% of 240
# pictures). A first sweep over all 144 prompts "a `<colour>` `<shape>` on a `<background>` background"
# with seeds 0-3 found its few misses on orange shapes and on the combinations held out of training
# (`cu.world.HELD_OUT`). An astronaut riding a horse is a rare sight in SD 1.5's training pictures
# too, so the sweep below takes the 8 held-out combinations, seeds 0-7, at the lesson's settings, and
# reads each picture with `cu.world.classify`. (For all 144 prompts, use the commented line: about ten
# minutes on a laptop CPU.)
#
# The rule for the lesson's prompt: a miss among seeds 0-3 (the lesson shows four seeds), every miss
# losing exactly one of the three words and keeping the other two (a horse without its rider); of
# those, the most misses over the 8 seeds; a tie goes to the first in `HELD_OUT`.

# %%
text2img = cu.load_pipeline("text2img")
FIELDS = ("color", "shape", "background")


def caption(color, shape, background):
    """The lesson's template: "a purple square on a gray background"."""
    return f"{cu.world.article(color)} {color} {shape} on {cu.world.article(background)} {background} background"


def read(text, seeds, **kwargs):
    """What `tiny` draws for `text` with each seed (one batch): a list of (colour, shape, background)."""
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    images = text2img([text] * len(seeds), generator=generators, **{**settings, **kwargs}).images
    return [tuple(cu.world.classify(image)[f] for f in FIELDS) for image in images]


combos = list(cu.world.HELD_OUT)
# combos = [(c, s, b) for c in cu.world.COLORS for s in cu.world.SHAPES for b in cu.world.BACKGROUNDS if b != c]
seeds = list(range(8))
candidates = []
for combo in combos:
    found = read(caption(*combo), seeds)
    misses = {s: f for s, f in zip(seeds, found) if f != combo}
    lost = [sum(a != b for a, b in zip(f, combo)) for f in misses.values()]
    print(f"{caption(*combo)!r:44s} {len(seeds) - len(misses)} of {len(seeds)} right",
          "; ".join(f"seed {s}: {caption(*f) if None not in f else f}" for s, f in misses.items()))
    if any(s < 4 for s in misses) and all(n == 1 for n in lost):
        candidates.append((len(misses), -combos.index(combo), combo, misses))
_, _, chosen, chosen_misses = max(candidates)
print("chosen:", repr(caption(*chosen)))

# %% [markdown]
# Then the fixes lesson 1 lists, on the chosen prompt over 16 seeds: more seeds (how many are right at
# all), more steps, a higher guidance, and a clearer prompt that says again the word that went missing.

# %%
missed = FIELDS[[a != b for a, b in zip(next(iter(chosen_misses.values())), chosen)].index(True)]
word = dict(zip(FIELDS, chosen))[missed]
clearer = caption(*chosen) + (f", {word} background" if missed == "background" else f", {word}")
seeds = list(range(16))
tries = {
    "as in the lesson": (caption(*chosen), {}),
    "50 steps": (caption(*chosen), dict(num_inference_steps=50)),
    "guidance 5": (caption(*chosen), dict(guidance_scale=5.0)),
    "guidance 7.5 (SD 1.5's)": (caption(*chosen), dict(guidance_scale=7.5)),
    f"clearer: {clearer!r}": (clearer, {}),
}
for name, (text, kwargs) in tries.items():
    found = read(text, seeds, **kwargs)
    print(f"{name:64s} {sum(f == chosen for f in found):2d} of {len(seeds)} right")

orange = ("orange", "square", "black")  # a trained combination the first sweep saw missed
for name, kwargs in (("as in the lesson", {}), ("50 steps", dict(num_inference_steps=50))):
    found = read(caption(*orange), seeds, **kwargs)
    print(f"{caption(*orange)!r}, {name:17s} {sum(f == orange for f in found):2d} of {len(seeds)} right;",
          "drawn instead:", sorted({caption(*f) for f in found if f != orange}))

# %% [markdown]
# Read the counts above: for the chosen prompt, saying the missed word again is the fix, while more
# steps change nothing and more seeds help because most seeds are right. A higher guidance, which helps
# SD 1.5 follow its prompt, does not help `tiny`, and SD 1.5's 7.5 spoils its pictures: its model card
# recommends 3.0 ("7.5 over-saturates a model this small"). Other misses take other fixes: the orange
# square, drawn red or yellow with some seeds, comes out orange with more steps.

# %% [markdown]
# ## From lesson 02: `tiny`'s VAE scale, and its word mixes at every share
#
# Two measurements behind lesson 2's short remarks about `tiny`.
#
# **The VAE's scaling factor.** Latents are multiplied by `vae.config.scaling_factor` so that their values
# have about unit variance, what the UNet is trained on. SD 1.5's is 0.18215; `tiny`'s VAE got its own at the
# end of its training: 1 / std of the latents of 1,024 of the world's scenes (`training/stages.py`,
# `VaeStage.evaluate`). Measured again here on 256 other scenes:

# %%
from IPython.display import display

from course_utils import text_embeddings

l02_pipe = cu.load_pipeline("text2img")
l02_pipe.set_progress_bar_config(disable=True)
l02_vae = l02_pipe.vae
l02_scenes = cu.to_tensor([cu.world.sample(10_000 + i, "train").image for i in range(256)])
with torch.no_grad():
    l02_latents = l02_vae.encode(l02_scenes.to(choice.device, l02_vae.dtype)).latent_dist.sample(torch.Generator().manual_seed(0))
print(f"scaling_factor in the VAE's config: {l02_vae.config.scaling_factor:.4f}")
print(f"1 / std of 256 scenes' latents:     {1 / l02_latents.float().std().item():.4f}")
print(f"the scaled latents' std: {(l02_latents * l02_vae.config.scaling_factor).float().std().item():.2f}")

# %% [markdown]
# **Word mixes at every share.** Lesson 2, §9.2 puts half of one word's row and half of another's where the
# word stands. Here the share of the other word runs from 0 to 1, for a colour (red → blue) and a shape
# (circle → square), with the lesson's prompt and seed; each picture read back by `cu.world.describe`, and
# the mean colour of its shape's pixels (`cu.world.shape_mask`) printed beside the world's red, purple and
# blue.

# %%
l02_tok, l02_enc = l02_pipe.tokenizer, l02_pipe.text_encoder
l02_prompt = cu.prompt("main", "tiny")
l02_shares = [0.0, 0.25, 0.5, 0.75, 1.0]
print("the world's colours (RGB):", {c: cu.world.COLORS[c] for c in ("red", "purple", "blue")})
for l02_word, l02_other in (("red", "blue"), ("circle", "square")):
    l02_a, l02_b = (text_embeddings.word_vector(l02_tok, l02_enc, w) for w in (l02_word, l02_other))
    l02_embeds = torch.cat([text_embeddings.encode_with_vectors(l02_tok, l02_enc, l02_prompt, {l02_word: (1 - s) * l02_a + s * l02_b})
                            for s in l02_shares])
    l02_images = l02_pipe(prompt_embeds=l02_embeds, generator=[torch.Generator().manual_seed(0) for _ in l02_shares],
                          **settings).images
    for l02_share, l02_image in zip(l02_shares, l02_images):
        l02_rgb = np.asarray(l02_image)[cu.world.shape_mask(l02_image)].mean(axis=0).round().astype(int).tolist()
        print(f"{l02_word} := {1 - l02_share:.2f} {l02_word} + {l02_share:.2f} {l02_other}: "
              f"{cu.world.describe(l02_image)}; the shape's mean RGB {l02_rgb}")
    display(cu.grid(l02_images, size=128, titles=[f"{s:.2f} {l02_other}" for s in l02_shares]))

# %% [markdown]
# Read the printed lines and the pictures: in our run the colour passed through the world's colour between
# red and blue, purple, near the half-and-half mix; at three quarters blue the shape all but faded into the
# background (the judge still finds a faint shape there, its mean colour close to the background's), and at
# full blue the circle is blue on blue, nothing to see. The shape did not pass through shapes between circle
# and square: it jumped to a square at a quarter of the way. Nearby vectors mean nearby things only roughly;
# the picture follows what the model learned to draw.

# %% [markdown]
# ## From lesson 03: the denoising loop
#
# Four measurements behind lesson 3's short remarks about `tiny`: why it was trained with offset noise,
# why its cross-attention word maps, averaged over all layers and heads, miss the shape, the sweep that
# chose the one head lesson 3 shows instead, and where too much guidance breaks its pictures. `tiny`'s
# settings throughout: 25 steps, guidance 3 (its defaults), seed 0 unless a sweep says otherwise.

# %%
from course_utils import by_hand, unet_inside
from course_utils.models.profiles import DEFAULTS

loop_pipe = cu.load_pipeline("text2img")
loop_unet, loop_scheduler, loop_vae, loop_tokenizer = (
    loop_pipe.unet, loop_pipe.scheduler, loop_pipe.vae, loop_pipe.tokenizer)
loop_size = (settings["height"], settings["width"])
loop_uncond = by_hand.encode_text(loop_tokenizer, loop_pipe.text_encoder, "")


def loop_run(prompt, seed=0, guidance=settings["guidance_scale"], steps=settings["num_inference_steps"], on_step=None):
    """Lesson 3's loop (`by_hand.denoise`): the final latents for a prompt, a seed and a guidance scale."""
    loop_scheduler.set_timesteps(steps)
    g = torch.Generator("cpu").manual_seed(seed)
    x_T = by_hand.initial_latents(1, loop_unet, loop_scheduler, *loop_size, g, choice.device, choice.dtype,
                                  vae_scale_factor=loop_pipe.vae_scale_factor)
    cond = by_hand.encode_text(loop_tokenizer, loop_pipe.text_encoder, prompt)
    with torch.no_grad():
        return by_hand.denoise(loop_unet, loop_scheduler, x_T, cond, loop_uncond, guidance, on_step=on_step, generator=g)


# %% [markdown]
# ### Offset noise
#
# SD 1.5's schedule never noises a picture away completely: at the first timestep a little of it is still
# in x_t (printed below), and training noised pictures the same way. A picture's overall colour is the mean
# of each latent channel, and the starting noise's own mean per channel is not quite zero (about
# ±1/√cells), so a model can learn to read the overall colour from the noise instead of the prompt. On
# `tiny`'s 16x16 latents that mean is large enough to matter (printed below; 64x64 on SD 1.5 gives a
# quarter of it): the first trained `tiny` (7,000 steps) got only 43% of its backgrounds right. Adding a
# random constant per image and channel to the training noise (**offset noise**, `--noise_offset` in
# diffusers' training scripts) makes the noise's mean useless: 3,000 more steps with it took backgrounds
# to 100% (`data/tiny/README.md`). The same leak, milder, is why SD 1.5 struggles with very dark or very
# bright pictures (Guttenberg, 2023, "Diffusion with offset noise"; Lin et al., 2024, "Common Diffusion
# Noise Schedules and Sample Steps are Flawed").

# %%
loop_scheduler.set_timesteps(settings["num_inference_steps"])
t_first = int(loop_scheduler.timesteps[0])
signal = loop_scheduler.alphas_cumprod[t_first].sqrt().item()
loop_x_T = torch.randn(1, 4, *(s // loop_pipe.vae_scale_factor for s in loop_size), generator=torch.Generator("cpu").manual_seed(0))
cells = loop_x_T[0, 0].numel()
print(f"t = {t_first}: x_t = {signal:.3f} * z_0 + {(1 - signal**2) ** 0.5:.3f} * noise")
print("seed 0's x_T, mean per channel:", [round(v, 3) for v in loop_x_T.mean(dim=(2, 3))[0].tolist()],
      f"- typically +-1/sqrt({cells}) = +-{cells ** -0.5:.3f} (+-{(64 * 64) ** -0.5:.3f} on SD 1.5's 64x64)")

# %% [markdown]
# ### Why the averaged word maps miss the shape
#
# Lesson 3 records the cross-attention probabilities of every step and reads, per word of "a red circle on
# a blue background", where its map lies: at each pixel the attention on the prompt's own tokens,
# renormalised (the start token and the padding left out). `cu.world.shape_mask` gives the shape's pixels
# (those far from the border's colour); a map's share on them, against the shape's share of the image (what
# a map spread evenly would give), says whether the word lands on the shape. Averaged over all layers and
# heads, as SD 1.5's maps are read, "red" and "circle" land mostly on the background. The same prompt with
# its words reordered, "a circle that is red":

# %%
def loop_record(prompt, seed=0):
    """Run the loop with the cross-attention recorder: (picture, {steps: maps}, number of the prompt's tokens).

    The maps of all steps, and of the first, middle and last third of the steps (from copies of the running sums).
    """
    loop_scheduler.set_timesteps(settings["num_inference_steps"])
    n_steps = len(loop_scheduler.timesteps)
    cuts = {n_steps // 3: f"steps 1-{n_steps // 3}", 2 * n_steps // 3: f"steps {n_steps // 3 + 1}-{2 * n_steps // 3}"}
    copies = {}
    with unet_inside.recording_cross_attention(loop_unet) as maps:
        def keep_a_copy(i, t, latents):
            if i + 1 in cuts:
                copies[cuts[i + 1]] = ({k: v.clone() for k, v in maps.sums.items()}, dict(maps.calls))

        latents = loop_run(prompt, seed, on_step=keep_a_copy)
    copies[f"steps {2 * n_steps // 3 + 1}-{n_steps}"] = (maps.sums, maps.calls)
    parts, before = {"all steps": maps}, ({}, {})
    for label, (sums, calls) in copies.items():
        part = unet_inside.CrossAttentionMaps()
        part.sums = {k: v - before[0].get(k, 0) for k, v in sums.items()}
        part.calls = {k: v - before[1].get(k, 0) for k, v in calls.items()}
        parts[label], before = part, (sums, calls)
    return cu.decode_latents(loop_vae, latents)[0], parts, len(loop_tokenizer(prompt).input_ids)


def loop_word_maps(maps, n, layer=None, head=None, renormalise=True):
    """[77, H, W]: the maps of the chosen layers and heads; renormalised over the prompt's tokens 1..n-1."""
    heat = maps.token_maps(loop_size, latent_size=tuple(s // loop_pipe.vae_scale_factor for s in loop_size),
                           layer=layer, head=head)
    return renormalised(heat, n) if renormalise else heat


def renormalised(heat, n):
    """[77, H, W] -> the same maps over the prompt's tokens 1..n-1 only, summing to 1 at every pixel."""
    keep = torch.zeros(77, 1, 1)
    keep[1:n] = 1
    return heat * keep / (heat * keep).sum(dim=0)


for text, words in (("a red circle on a blue background", ["red", "circle", "blue", "background"]),
                    ("a circle that is red", ["circle", "that", "is", "red"])):
    picture, parts, n = loop_record(text)
    mask = cu.world.shape_mask(picture)
    heat = loop_word_maps(parts["all steps"], n)
    positions = unet_inside.token_positions(loop_tokenizer, text, words)
    print(f"{text!r} ({cu.world.describe(picture)}), all layers and heads; the shape covers {mask.mean():.0%};"
          " share on it:", ", ".join(f"{w} {unet_inside.mass_inside(heat[i], mask):.0%}" for w, i in positions.items()))
    display(cu.grid([picture] + [unet_inside.overlay(picture, heat[i]) for i in positions.values()], size=160,
                    titles=[text[:22]] + [f'"{w}"' for w in positions]))

# %% [markdown]
# Put "red" last and its map moves onto the shape. What counts is the position: a CLIP text encoder is
# *causal*, the vector at position k has read only tokens 0..k. Append words to the prompt and the vectors
# before them do not change:

# %%
loop_prompt = cu.prompt("main", choice.profile)
loop_ids = loop_tokenizer(loop_prompt).input_ids
short = by_hand.encode_text(loop_tokenizer, loop_pipe.text_encoder, loop_prompt)
longer = by_hand.encode_text(loop_tokenizer, loop_pipe.text_encoder, loop_prompt + " and more words")
k = len(loop_ids) - 1  # the start token and the prompt's words; the end token follows
print(f"positions 0..{k - 1} (start + prompt): max abs change {(longer[0, :k] - short[0, :k]).abs().max().item():.1e};"
      f" position {k} on: {(longer[0, k:] - short[0, k:]).abs().max().item():.2f}")
assert torch.allclose(longer[0, :k], short[0, :k], atol=1e-5)

# %% [markdown]
# So in `tiny`'s 2-layer text encoder, trained from scratch together with its UNet, only the vectors after
# "red circle" know that the shape is a red circle, and the UNet, averaged over its layers and heads, reads
# the shape from them. SD 1.5's text encoder is OpenAI's CLIP (12 layers, trained on 400 million captioned
# images before SD), whose vectors keep each word's meaning at its own position; that is why published maps
# of Stable Diffusion (Hertz et al., 2022, "Prompt-to-Prompt", arXiv:2208.01626; Tang et al., 2023, "What
# the DAAM") put an object's word on the object.
#
# ### The sweep behind lesson 3's head
#
# Is there a way of reading `tiny`'s maps in which the object's words do land on the object? We tried all
# steps and each third of them (4), every cross-attention layer alone and all of them together (8), each
# of the 4 heads alone and their mean (5), with and without the renormalisation over the prompt's tokens
# (2): 320 settings. A run passes a setting when the maps of the colour word and the shape word both put
# more than the shape's area on the shape *and* more than both background words (the background's colour,
# "background"). The setting is
# chosen on four prompts, seeds 0-3, and then checked on runs it was not chosen on: the same prompts with
# seeds 4-5, and four other prompts with seeds 0-1. Ties go to the setting tried first: all steps before
# a third of them, all layers before one, the heads' mean before one head, raw before renormalised.

# %%
def loop_lifts(picture, parts, n, text, colour, shape, background):
    """{(steps, layer, head, renormalised): (colour, shape, background colour, "background") lifts}: share / area."""
    mask = cu.world.shape_mask(picture)
    where = unet_inside.token_positions(loop_tokenizer, text, [colour, shape, background, "background"])
    out = {}
    for steps, maps in parts.items():
        for layer in loop_layers:
            for head in [None] + list(range(loop_heads)):
                raw = loop_word_maps(maps, n, layer, head, renormalise=False)  # (once for both: the slow part)
                for renormalise in (False, True):
                    heat = renormalised(raw, n) if renormalise else raw
                    out[steps, layer, head, renormalise] = [unet_inside.mass_inside(heat[i], mask) / mask.mean()
                                                            for i in where.values()]
    return out


loop_layers = [None] + sorted({name.split(".transformer_blocks")[0] for name in loop_unet.attn_processors if ".attn2." in name})
loop_heads = loop_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.heads
chosen_on = [("red", "circle", "blue"), ("green", "square", "yellow"), ("blue", "triangle", "white"), ("yellow", "circle", "gray")]
checked_on = [(scene, seed) for scene in chosen_on for seed in (4, 5)] + [
    (scene, seed) for scene in [("blue", "square", "red"), ("green", "circle", "white"), ("orange", "square", "purple"),
                                ("purple", "circle", "green")] for seed in (0, 1)]
runs = {"chosen on": [(scene, seed) for scene in chosen_on for seed in range(4)], "checked on": checked_on}
lifts = {}
for group, group_runs in runs.items():
    for (colour, shape, background), seed in group_runs:
        text = f"{cu.world.article(colour)} {colour} {shape} on {cu.world.article(background)} {background} background"
        lifts[group, text, seed] = loop_lifts(*loop_record(text, seed), text, colour, shape, background)


def passes(lift):
    return min(lift[0], lift[1]) > max(1.0, lift[2], lift[3])


def rate(group, setting):
    found = [passes(v[setting]) for (g, _, _), v in lifts.items() if g == group]
    return sum(found) / len(found)


settings_tried = list(next(iter(lifts.values())))
ranked = sorted(settings_tried, key=lambda s: rate("chosen on", s), reverse=True)
loop_name = lambda s: (f"{s[0]}, {s[1] or 'all layers'}, {'heads mean' if s[2] is None else f'head {s[2]}'},"
                       f" {'renormalised' if s[3] else 'raw'}")
print(f"{len(settings_tried)} settings, {len(runs['chosen on'])} runs to choose, {len(runs['checked on'])} to check; the best six:")
for s in ranked[:6]:
    mean = np.mean([v[s] for (g, _, _), v in lifts.items() if g == "chosen on"], axis=0)
    print(f"  {loop_name(s):62} passes {rate('chosen on', s):4.0%} (checked: {rate('checked on', s):4.0%});"
          f" mean lift colour {mean[0]:.2f}, shape {mean[1]:.2f}, background colour {mean[2]:.2f}, 'background' {mean[3]:.2f}")
average = ("all steps", None, None, True)
print(f"  {loop_name(average):62} passes {rate('chosen on', average):4.0%} (checked: {rate('checked on', average):4.0%})")
best = ranked[0]
print("chosen:", loop_name(best))
if settings == DEFAULTS["tiny"] and choice.dtype == torch.float32:  # lesson 3's settings: the head it shows
    assert best == ("all steps", "up_blocks.1.attentions.1", 1, True), best

# %% [markdown]
# Per run of the checked set, the chosen setting (lift: a map's share on the shape / the shape's area;
# above 1 is on the shape):

# %%
for (group, text, seed), v in lifts.items():
    if group == "checked on":
        c, s, bc, bw = v[best]
        print(f"  {text:42} seed {seed}: colour {c:.2f}, shape {s:.2f} | background colour {bc:.2f}, 'background' {bw:.2f}"
              f" -> {'passes' if passes(v[best]) else 'fails'}")

# %% [markdown]
# In the checked runs the shape word lands on the shape every time; the colour word is the weaker one.
# Lesson 3 reads this head, averaged over all steps.

# %% [markdown]
# ### Too much guidance
#
# Guidance pushes each step's noise estimate beyond the prompt's own prediction, by w. How far can `tiny`
# go? The same seeds at w = 1 to 30, on lesson 3's prompt, two others, and lesson 5's "a circle on a white
# background" (the colour left to the model): whether `cu.world.classify` still reads the prompt's shape,
# colour and background, the final latents' standard deviation, and the share of pixel values the VAE
# decodes outside [-1, 1], which the picture clips: over-saturation (measured on the two prompts with a
# coloured background; a white one decodes a little above 1 at every w).

# %%
scenes = [("red", "circle", "blue"), ("green", "square", "yellow"), ("blue", "triangle", "white"), (None, "circle", "white")]
scales = (1.0, 3.0, 7.5, 15.0, 30.0)
rows = {}
for colour, shape, background in scenes:
    text = (f"{cu.world.article(colour)} {colour} {shape}" if colour else f"a {shape}") + \
        f" on {cu.world.article(background)} {background} background"
    for seed in (0, 1):
        for w in scales:
            latents = loop_run(text, seed, guidance=w)
            pixels = by_hand.decode(loop_vae, latents)
            found = cu.world.classify(by_hand.to_pil(pixels)[0])
            right = found["shape"] == shape and found["background"] == background and (colour is None or found["color"] == colour)
            clipped = (pixels.abs() > 1).float().mean().item() if background != "white" else None
            rows.setdefault(w, []).append((right, latents.std().item(), clipped))
print(f"{len(scenes)} prompts x 2 seeds per w:")
for w, found in rows.items():
    right, std, clipped = zip(*found)
    print(f"  w = {w:4}: right picture {sum(right)}/{len(right)}, latents' std {np.mean(std):.2f},"
          f" pixel values outside [-1, 1] {np.mean([c for c in clipped if c is not None]):.0%}"
          f" (lesson 3's prompt, seed 0: {found[0][2]:.0%})")

# %% [markdown]
# Above its default of 3, `tiny` soon draws the wrong picture, and the latents and the clipped share
# grow with w: too much guidance distorts it at a smaller w than SD 1.5, whose default is 7.5. SD 1.5
# distorts too, only further up: high guidance weights give "highly saturated and unnatural images"
# (Saharia et al. 2022, "Imagen", arXiv:2205.11487, §2.3). Lesson 3's exercise 2 shows 2.5 and 5 times
# each model's default.

# %% [markdown]
# ## From lesson 04: PNDM's warm-up in a cut schedule, measured
#
# Lesson 4, section 5 says that SD 1.5's default scheduler, PNDM, misfires when img2img cuts its
# timesteps. Here is the long version. `PNDMScheduler.step_plms` (diffusers, with SD 1.5's
# `skip_prk_steps=True`) counts its calls in `scheduler.counter` and treats the first two differently,
# whatever timesteps it is given (Δ = 1000 / steps):
#
# - call 0, at t: a *first-order* step t → t − Δ (it uses one noise prediction, the one at t, as
#   lesson 3's DDIM step does), keeping x_t;
# - call 1 (told t − Δ): it goes *back* to x_t and redoes the same step t → t − Δ with the average of
#   the two predicted noises (a *Heun*-type correction: predict at the start, predict at the end, step
#   with their average);
# - from call 2 on: the *multistep* formula (it combines the last few predicted noises, up to four, one
#   from each earlier step, instead of calling the UNet more often), from the timestep it is told to
#   that timestep − Δ.
#
# That is why the full list holds its second timestep twice: the first copy is the correction's
# evaluation, the second starts the next step. img2img cuts the list from the front, and
# `set_timesteps` resets the counter, so the warm-up runs on the tail's first two calls. Call 2 is
# then told the timestep after them while its latents are still one step noisier: one interval is
# never stepped, and from the third call on the UNet is told a timestep about one step lower than the
# noise its latents hold.

# %%
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from course_utils import by_hand, img2img

img_pipe = cu.load_pipeline("img2img")
img_sketch = cu.load_image(cu.image_name("sketch", choice.profile), size=(settings["width"], settings["height"]))
img_steps, img_strength, img_seed = 10, 0.6, 0
for name, solver in (("PNDM", img_pipe.scheduler), ("DDIM", DDIMScheduler.from_config(img_pipe.scheduler.config))):
    solver.set_timesteps(img_steps)
    tail = img2img.start_timesteps(solver, img_steps, img_strength)
    print(f"{name:5} {img_steps} steps: all timesteps {solver.timesteps.tolist()}")
    print(f"{'':5} strength {img_strength}: tail {tail.tolist()}")
img_generator = torch.Generator(device="cpu").manual_seed(img_seed)
z0 = img2img.encode_image(img_pipe.vae, img_sketch, img_generator)  # the pipeline's first random draw
img_noise = torch.randn(z0.shape, generator=img_generator).to(z0)  # its second: the noise added
print("z0", tuple(z0.shape))

# %% [markdown]
# **The probe.** Run each scheduler alone along its tail and hand it, at every call, the very noise ε
# we added: what a perfect UNet would predict if the latents were where the timestep says. Every
# latent is then `a·z0 + b·ε`, and `b/a` is its noise level σ, to compare with the σ of the timestep
# the UNet is told, `σ_t = sqrt((1 − ᾱ_t)/ᾱ_t)`. To read a and b off a latent tensor x we take the two
# numbers that make `a·z0 + b·ε` closest to x, summed over all its values as squared differences:
# a *least squares* fit (`torch.linalg.lstsq`), exact here because x is such a sum. Lesson 4 writes the
# probe out; here its reference, `img2img.noise_levels`, runs it for three schedulers.

# %%
solvers = {"PNDM": img_pipe.scheduler, "DDIM": DDIMScheduler.from_config(img_pipe.scheduler.config),
           "DPM-Solver++": DPMSolverMultistepScheduler.from_config(img_pipe.scheduler.config)}
ends = {}
for name, solver in solvers.items():
    tail = img2img.start_timesteps(solver, img_steps, img_strength)
    told, held, ends[name] = img2img.noise_levels(solver, tail, z0, img_noise)
    print(f"{name}: {len(tail)} calls")
    print("   timestep told      ", " ".join(f"{int(t):5d}" for t in tail))
    print("   σ of that timestep ", " ".join(f"{s:5.2f}" for s in told))
    print("   σ of the latents   ", " ".join(f"{s:5.2f}" for s in held))
    print(f"   after the last call: signal x{ends[name][0]:.2f}, σ {ends[name][1]:.3f}")
final_sigma = ((1 - img_pipe.scheduler.alphas_cumprod[0]) / img_pipe.scheduler.alphas_cumprod[0]).sqrt().item()
print(f"DDIM and PNDM aim at σ {final_sigma:.3f} (SD 1.5 ends at ᾱ_0, not 1: set_alpha_to_one=False); DPM-Solver++ at 0")
assert abs(ends["DDIM"][1] - final_sigma) < 1e-2 and ends["PNDM"][1] > 2 * final_sigma

# %% [markdown]
# DDIM and DPM-Solver++ tell the UNet the truth at every call. PNDM does for two calls, then lags one
# step behind; after its last call noise is left and the signal is scaled down (the last line of its
# block). A real UNet sees its latents and can make up part of the difference; the pictures show how
# much is left. The same ten steps with the model, same seed: PNDM as the pipeline runs it, PNDM with
# the repeat put back into its tail (by hand, lesson 3's loop), and the pipeline with DPM-Solver++.
# Under each: how far (RGB distance, 0..441) the shape's median colour lies from the world's red, and
# the background's from the world's blue, the colours the prompt asks for.

# %%
def img_run(scheduler):
    """The img2img pipeline with `scheduler`, lesson 4's prompt, 10 steps, strength 0.6, seed 0."""
    img_pipe.scheduler = scheduler
    out = img_pipe(cu.prompt("main", choice.profile), image=img_sketch, strength=img_strength, num_inference_steps=img_steps,
                   guidance_scale=settings["guidance_scale"], generator=torch.Generator(device="cpu").manual_seed(img_seed))
    return out.images[0]


pndm = solvers["PNDM"]
pndm_out = img_run(pndm)
tail = img2img.start_timesteps(pndm, img_steps, img_strength)
repeated = torch.cat([tail[:2], tail[1:]])  # the warm-up's second timestep twice, as in the full list
cond = by_hand.encode_text(img_pipe.tokenizer, img_pipe.text_encoder, cu.prompt("main", choice.profile))
uncond = by_hand.encode_text(img_pipe.tokenizer, img_pipe.text_encoder, "")
g = torch.Generator(device="cpu").manual_seed(img_seed)
start = img2img.noise_latents(pndm, img2img.encode_image(img_pipe.vae, img_sketch, g), tail[0], g)
fixed_latents = by_hand.denoise(img_pipe.unet, pndm, start.to(cond.dtype), cond, uncond, settings["guidance_scale"], timesteps=repeated)
fixed = cu.decode_latents(img_pipe.vae, fixed_latents)[0]
dpm_out = img_run(solvers["DPM-Solver++"])
img_pipe.scheduler = pndm

pictures = {"PNDM (the pipeline)": pndm_out, "PNDM + repeat (by hand)": fixed, "DPM-Solver++ (the pipeline)": dpm_out}
titles = []
for name, picture in pictures.items():
    x = np.asarray(picture, dtype=np.float32)
    inside = cu.world.shape_mask(picture)
    off = [np.linalg.norm(np.median(x[where], axis=0) - cu.world.COLORS[asked]) for where, asked in ((inside, "red"), (~inside, "blue"))]
    print(f"{name:28} {cu.world.describe(picture)}; shape {off[0]:5.1f} from red, background {off[1]:5.1f} from blue")
    titles.append(f"{name}\nshape {off[0]:.0f}, background {off[1]:.0f} off")
cu.grid(list(pictures.values()), cols=3, size=256, titles=titles)

# %% [markdown]
# Read the printout: here the leftover noise shows most in the background's colour, farthest from the
# asked blue with PNDM as the pipeline runs it, closer with the repeat put back, closest (shape too)
# with DPM-Solver++. At the course's 25 (`tiny`) or 50 (`sd15`) steps the lost
# interval is one of many and hard to see. (When exactly one entry is cut, as with 10 steps at
# strength 0.9, the tail starts with the repeated timestep, and the correction redoes a step on
# latents that are already one step further.)

# %% [markdown]
# ## From lesson 05: when a negative prompt acts, and where it shows on `tiny`
#
# Three measurements behind lesson 5's short remarks: the share of empty captions `tiny` was trained
# with, when during sampling a negative prompt acts, and the sweep that chose lesson 5's img2img
# example. `tiny`'s setting throughout: its default 25 steps, guidance 3, seed 0 unless a sweep says otherwise.
#
# **Empty captions.** Guidance needs a prediction without the prompt, so training leaves some captions
# empty: SD 1.5 one in ten ("10% dropping of the text-conditioning", its model card); `tiny` the share
# `cu.world.EMPTY_FRACTION`, which `cu.world.sample` and the training's caption sampler
# (`training/data.py`) draw.

# %%
from course_utils import by_hand

print("cu.world.EMPTY_FRACTION =", cu.world.EMPTY_FRACTION)
neg_captions = [cu.world.sample(i, "train").caption for i in range(300)]
print(f"empty among the captions of the first 300 training scenes (a random draw): {neg_captions.count('')}"
      f" ({neg_captions.count('') / len(neg_captions):.0%}); three others: {neg_captions[:3]}")

# %% [markdown]
# **When does a negative prompt act?** Lesson 5's example: "a circle on a white background" (the
# colour left to the model), then the colour it drew as the negative prompt. Give the negative prompt
# to the first `k` steps only and the empty prompt to the rest: `callback_on_step_end` runs after
# every step and may hand back new tensors for the next one; with guidance on, its `prompt_embeds` is
# the stacked batch `[negative, prompt]`, so after step `k` we swap its first half for the empty
# prompt's embedding. (diffusers' documentation uses the same hook to switch guidance off part-way.)
# The callback runs once per entry of `pipe.scheduler.timesteps`: PNDM has one entry more than
# `num_inference_steps` (lesson 4, section 4 prints them).

# %%
neg_pipe = cu.load_pipeline("text2img")
neg_prompt = cu.prompt("open_color", choice.profile)
neg_trajectory = []  # the latents after each step of the last run


def neg_generate(callback=None, **kwargs):
    """Lesson 5's `generate`: tiny's settings, seed 0, latents out; keeps the latents after every step."""
    neg_trajectory.clear()

    def after_step(pipeline, i, t, tensors):
        neg_trajectory.append(tensors["latents"])
        return callback(pipeline, i, t, tensors) if callback else {}

    return neg_pipe(prompt=neg_prompt, generator=torch.Generator(device="cpu").manual_seed(0), output_type="latent",
                    callback_on_step_end=after_step, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
                    **dict(settings, **kwargs)).images


empty = by_hand.encode_text(neg_pipe.tokenizer, neg_pipe.text_encoder, "")


def negative_for_first(k):
    """A ``callback_on_step_end`` that replaces the negative prompt by the empty prompt after step ``k``."""

    def callback(pipeline, i, t, tensors):
        if i + 1 != k:  # i counts from 0: after step k, i == k - 1
            return {}
        negative_half, prompt_half = tensors["prompt_embeds"].chunk(2)
        return {"prompt_embeds": torch.cat([empty.expand_as(negative_half), prompt_half])}

    return callback


plain = neg_generate()
plain_trajectory = list(neg_trajectory)
negative = cu.world.classify(cu.decode_latents(neg_pipe.vae, plain)[0])["color"] or cu.prompt("negative", choice.profile)
with_negative = neg_generate(negative_prompt=negative)
negative_trajectory = list(neg_trajectory)
calls = len(neg_pipe.scheduler.timesteps)
print(f"negative prompt {negative!r}; {settings['num_inference_steps']} inference steps -> {calls} timesteps,",
      neg_pipe.scheduler.timesteps[:4].tolist(), "...")
windows = sorted({0, 2, 4, 6, 10, calls})  # timesteps that get the negative prompt; 0: none, `calls`: all
window_latents = []
for k in windows:
    if k in (0, calls):
        window_latents.append(plain if k == 0 else with_negative)
    else:
        window_latents.append(neg_generate(negative_prompt=negative, callback=negative_for_first(k)))
window_pictures = cu.decode_latents(neg_pipe.vae, torch.cat(window_latents))
for k, latents, picture in zip(windows, window_latents, window_pictures):
    print(f"negative prompt for the first {k:2d} of {calls} timesteps: max latent change vs none "
          f"{(latents - plain).abs().max():.3f} | {cu.world.describe(picture)}")
cu.grid(window_pictures, cols=len(windows), size=160, titles=[f"first {k} of {calls}" for k in windows])

# %% [markdown]
# Read the printout: with this seed a few timesteps with the negative prompt leave the forbidden colour
# in place; only after several does the colour move away from it, and where it ends depends on how
# long the negative prompt keeps acting: a negative prompt only says what *not* to draw.
#
# Why do the first timesteps alone do so little? "A sampler settles the big things first" would
# predict the opposite: at the first timestep nothing is settled yet, so a push there should matter
# most. Two measurements instead: how far the negative prompt has moved the latents *right after* its
# window and by the end (during its first `k` steps a window run *is* the run with the negative
# prompt), and how much the negative prompt changes the UNet's prediction at each timestep,
# `|ε(x_t, c_neg) − ε(x_t, c_∅)|`, what that difference is in the predicted clean latents
# `x̂₀ = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t` (lesson 3: times `√(1−ᾱ_t)/√ᾱ_t`, large at the noisiest
# timesteps), and how far that step moves the latents.

# %%
for k in windows[1:-1]:
    right_after = (negative_trajectory[k - 1] - plain_trajectory[k - 1]).abs().max().item()
    at_end = (window_latents[windows.index(k)] - plain).abs().max().item()
    print(f"negative prompt for the first {k:2d} timesteps: latent change right after them {right_after:.3f}, at the end {at_end:.3f}")
print(f"negative prompt at every timestep: at the end {(with_negative - plain).abs().max():.3f}")

uncond = by_hand.encode_text(neg_pipe.tokenizer, neg_pipe.text_encoder, negative)
neg_pipe.scheduler.set_timesteps(settings["num_inference_steps"])
x_T = by_hand.initial_latents(1, neg_pipe.unet, neg_pipe.scheduler, settings["height"], settings["width"],
                              torch.Generator(device="cpu").manual_seed(0), choice.device, empty.dtype,
                              vae_scale_factor=neg_pipe.vae_scale_factor)
before = [x_T] + plain_trajectory[:-1]  # the latents each timestep of the run without a negative prompt starts from
with torch.no_grad():
    for i in range(0, calls, 5):
        t = neg_pipe.scheduler.timesteps[i]
        x = neg_pipe.scheduler.scale_model_input(torch.cat([before[i]] * 2), t)
        eps_empty, eps_negative = neg_pipe.unet(x, t, encoder_hidden_states=torch.cat([empty, uncond])).sample.chunk(2)
        abar = neg_pipe.scheduler.alphas_cumprod[int(t)]
        d_eps = (eps_negative - eps_empty).abs().max().item()
        print(f"timestep {i + 1:2d} (t = {int(t):3d}): |eps_neg - eps_empty| = {d_eps:.3f}, in x0_hat "
              f"{d_eps * ((1 - abar) / abar).sqrt().item():.2f}, this step moves the latents by "
              f"{(plain_trajectory[i] - before[i]).abs().max():.3f}")

# %% [markdown]
# How to read it: at the noisiest timesteps the negative prompt changes the UNet's ε by little, but
# that is a large change in the clean picture it predicts (the `x0_hat` column); what is small is the
# step the scheduler takes from there (the last column). So a few timesteps with the negative prompt
# push the latents only a little (the "right after" column); the steps that follow, without it, carry
# that push on (the change at the end is larger) but decide the colour again as the run without a
# negative prompt did.
#
# So the first timesteps do little not because the picture is already settled there (it is not), and
# not because the UNet ignores the text there, but because each of those steps moves the latents only
# a little of the way towards what it predicts. What the starting noise *has* settled by the time the
# text matters is hard to remove: on `tiny`, shapes more than colours (`data/tiny/README.md`: named
# colours are removed in all of its 60 test images, named shapes in about two thirds).

# %% [markdown]
# **The img2img example: a measured choice.** Lesson 5 first ran img2img with lesson 4's second prompt,
# "a yellow triangle on a black background", strength 0.75, and `negative_prompt="red"` (the sketch's
# colour): on `tiny` the picture did not change visibly. The sweep below asks, per prompt and strength,
# over seeds: is the sketch's orange-red kept without a negative prompt, and is the colour drawn
# without one gone when it is the negative prompt (lesson 5's rule, as in its section 2)?

# %%
from diffusers import StableDiffusionImg2ImgPipeline

sweep_pipe = StableDiffusionImg2ImgPipeline(**neg_pipe.components, requires_safety_checker=False)
sweep_pipe.set_progress_bar_config(disable=True)
sweep_sketch = cu.load_image(cu.image_name("sketch", choice.profile), size=(settings["width"], settings["height"]))
sweep_seeds = range(4)


def sweep_colour(text, strength, seed, negative_prompt=""):
    picture = sweep_pipe(text, image=sweep_sketch, strength=strength, negative_prompt=negative_prompt,
                         num_inference_steps=settings["num_inference_steps"], guidance_scale=settings["guidance_scale"],
                         generator=torch.Generator(device="cpu").manual_seed(seed)).images[0]
    return cu.world.classify(picture)["color"]


for text in (cu.prompt("restyle", choice.profile), cu.prompt("open_color", choice.profile)):
    for strength in (0.5, 0.75):
        pairs = []
        for seed in sweep_seeds:
            drawn = sweep_colour(text, strength, seed)
            pairs.append((drawn, sweep_colour(text, strength, seed, drawn) if drawn else None))
        kept = sum(a in ("red", "orange") for a, _ in pairs)
        gone = sum(b is not None and b != a for a, b in pairs)
        print(f"{text!r:42} strength {strength}: sketch's colour kept {kept}/{len(pairs)},"
              f" drawn colour gone with it as negative {gone}/{len(pairs)} | " + ", ".join(f"{a} > {b}" for a, b in pairs))

# %% [markdown]
# Read the printout: with a prompt that names a colour, the prompt decides the colour and leaves the
# negative prompt nothing to remove. With the colour left open, the sketch's colour survives at
# strength 0.5 in every seed, and the negative prompt removes it: lesson 5 uses "a circle on a white
# background" at strength 0.5, seed 0.

# %% [markdown]
# ## From lesson 06: the `tiny` upscaler
#
# Lesson 6 upscales one picture. Here: how `tiny`'s upscaler got its VAE, and its model card's score
# over 20 scenes, measured again.
#
# **Its VAE.** `StableDiffusionUpscalePipeline` always decodes `latents / 0.08333`, the x4 VAE's
# scaling factor. `tiny`'s text-to-image VAE also has 3 blocks (4x smaller), but its latents need a
# larger factor (printed below). Rather than fight the pipeline, `course_utils.models.surgery.upscaler_vae`
# folds the ratio `k` of the two factors into the 1x1 convolutions around the latent: `quant_conv`
# makes the latents `k` times larger, `post_quant_conv` divides them by `k` again. The decoded images
# stay the same, and 0.08333 fits the new latents. Used as it was, the VAE would have handed the UNet
# latents of a much smaller spread than 1 (printed below), and every error of the UNet would have come
# out of the decoder `k` times larger. The first `tiny` upscaler was trained that way: 18.7 dB after
# 1,600 steps (bicubic 27.6); the rescaled VAE gave 26.5 dB after 2,400 (`docs/training.md`).

# %%
from diffusers import AutoencoderKL
from PIL import Image

from course_utils.upscale import SCORE_SETTINGS, low_res_input, psnr

upscaler = cu.load_pipeline("upscale")
text2img_vae = AutoencoderKL.from_pretrained(cu.model_source("text2img"), subfolder="vae")
k = text2img_vae.config.scaling_factor / upscaler.vae.config.scaling_factor
print(f"scaling_factor: text-to-image VAE {text2img_vae.config.scaling_factor:.4f} | upscaler's VAE "
      f"{upscaler.vae.config.scaling_factor:.5f} | k = {k:.2f}")

scenes = [cu.world.sample(20_000 + i) for i in range(20)]  # the model card's 20 scenes (below)
pixels = upscaler.image_processor.preprocess([s.image for s in scenes])
round_trips = {}
with torch.no_grad():
    for name, vae in (("text-to-image VAE", text2img_vae), ("upscaler's VAE", upscaler.vae)):
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
        round_trips[name] = vae.decode(latents).sample.float().cpu()
        print(f"{name:17s}: std of latents x 0.08333 = {(latents * 0.08333).std().item():.2f}")
difference = (round_trips["text-to-image VAE"] - round_trips["upscaler's VAE"]).abs().max().item()
print(f"the two VAEs' round trips of the 20 scenes: max difference {difference:.1e} (pixel values in [-1, 1])")

# %% [markdown]
# **Its score.** `data/tiny/README.md` reports 29.9 dB for the upscaler against 27.6 dB for bicubic,
# over 20 scenes (`python -m course_utils evaluate`: scene `world.sample(20_000 + i)`, its caption as
# the prompt, `SCORE_SETTINGS`, seed `i`). The same measurement again, scene by scene: lesson 6's one
# picture is one sample of this.

# %%
ours, bicubic = [], []
for i, scene in enumerate(scenes):
    low = low_res_input(scene.image, 4)
    out = upscaler(scene.caption, image=low, generator=torch.Generator().manual_seed(i), **SCORE_SETTINGS).images[0]
    ours.append(psnr(out, scene.image))
    bicubic.append(psnr(low.resize(scene.image.size, Image.Resampling.BICUBIC), scene.image))
ours, bicubic = np.array(ours), np.array(bicubic)
print(f"settings: {SCORE_SETTINGS}")
print(f"mean PSNR over {len(scenes)} scenes: upscaler {ours.mean():.1f} dB | bicubic {bicubic.mean():.1f} dB | "
      f"difference {ours.mean() - bicubic.mean():+.1f} dB")
print(f"the upscaler beats bicubic on {(ours > bicubic).sum()} of {len(scenes)} scenes; "
      f"per scene, the difference ranges from {(ours - bicubic).min():+.1f} to {(ours - bicubic).max():+.1f} dB")

# %% [markdown]
# The model card's previous upscaler, trained for 2,400 steps instead of 4,800, scored 26.4 dB, *below*
# bicubic's 27.6 (`data/tiny/README.md`). Its card also says why training on: from pure noise, one UNet
# call of that model already predicted latents that decoded to 28.7 dB on 12 scenes, against 26.5 dB for
# its full 25-step sampler: it was not yet good at reading its 16x16 input. 2,400 more steps with every
# training sample's `noise_level` in 0-50 (the pipeline's default is 20) gave the 29.9 dB above.

# %% [markdown]
# ## From lesson 07: the outline style — how `tiny`'s community stand-ins were made
#
# Lesson 7 loads three `tiny` stand-ins for SD 1.5's community files (Counterfeit-V2.5, EasyNegative,
# LCM-LoRA), all for one style: shapes drawn as outlines. `python -m training` made them
# (`training/styles.py`; runs, settings and times in `docs/training.md`, "Issue 16"):
#
# - the **fine-tune**: the text-to-image UNet trained 2,000 more steps on pictures of which half are
#   outlined, those captioned "outline style, a red circle ..."; written as ONE file in the original SD
#   layout (`data/tiny/community.safetensors`, by `training/export.py`) for lesson 7's `from_single_file`;
# - the **LoRA**: rank 8 on the base model's attention projections and ResNet convolutions, every training
#   picture outlined, no trigger word (`data/tiny/outline_lora/`);
# - the **embedding** `<outline>`: 2 vectors of the text encoder's width (64), A1111 format, trained for the
#   community model and used alone in front: "<outline>, a red circle ...".
#
# The model card (`data/tiny/README.md`, `python -m course_utils evaluate --parts style`: 6 prompts x 20
# seeds) counts how often `world.classify` finds the shape hollow: base model 0%; fine-tune 85% with
# "outline style, " in front, 0% without, 87.5% with "watercolor style, "; LoRA 87.5%; embedding 86% in the
# community model, 0% in the base model. The same measurement, smaller (6 prompts x 2 seeds: 12 pictures a
# row, so each share is rough), with how often the background asked for was drawn:

# %%
import re

from IPython.display import display
from PIL import Image, ImageDraw

from course_utils import community
from course_utils.models import files, tiny
from course_utils.scores import STYLE_PROMPTS, generate

style_base = cu.load_pipeline("text2img")
style_tuned = cu.load_pipeline("community")
style_token = files.embedding_token("tiny")
for style_pipe in (style_base, style_tuned):  # the embedding's two new tokens, in both models
    style_pipe.load_textual_inversion(str(files.embedding_file("tiny")), token=style_token)
    style_pipe.set_progress_bar_config(disable=True)
style_seeds = range(2)


def style_row(pipe, to_prompt):
    """Outlined share and background-right share over STYLE_PROMPTS x style_seeds; and the first picture."""
    outlined, background, first = [], [], None
    for plain in STYLE_PROMPTS:
        wanted = re.search(r"on an? (\w+) background", plain).group(1)
        for picture in generate(pipe, to_prompt(plain), style_seeds, **settings):
            found = cu.world.classify(picture)
            outlined.append(found["shape"] is not None and found["hollow"] > cu.world.HOLLOW)
            background.append(found["background"] == wanted)
            first = picture if first is None else first
    return np.mean(outlined), np.mean(background), first


style_rows = [  # (what, the pipeline, the prompt made from a plain one)
    ("base model", style_base, lambda p: p),
    ("fine-tune + 'outline style, '", style_tuned, community.style_prompt),
    ("fine-tune, plain prompt", style_tuned, lambda p: p),
    (f"fine-tune + '{tiny.OTHER_WORD} style, '", style_tuned, lambda p: community.style_prompt(p, tiny.OTHER_WORD)),
    (f"fine-tune + '{style_token}, '", style_tuned, community.embedding_prompt),
    (f"base model + '{style_token}, '", style_base, community.embedding_prompt),
    ("base model + LoRA, plain prompt", style_base, lambda p: p),
]
style_pictures, style_titles = [], []
print(f"{'':36s} outlined  background right")
for row, pipe, to_prompt in style_rows:
    if "LoRA" in row:  # loaded last: it changes the base model's UNet (diffusers logs: no text-encoder part)
        style_base.load_lora_weights(files.lora_source("tiny"), adapter_name="outline")
    outlined, background, first = style_row(pipe, to_prompt)
    print(f"{row:36s} {outlined:7.0%}  {background:7.0%}")
    style_pictures.append(first)
    style_titles.append(f"{row}: {cu.world.describe(first)}")
style_base.unload_lora_weights()
print(f"pictures below: '{STYLE_PROMPTS[0]}', seed 0")
display(cu.grid(style_pictures, cols=4, size=256, titles=style_titles))

# %% [markdown]
# What the numbers say, point by point:
#
# - **The fine-tune answers a pattern, not the word.** "watercolor style, " draws outlines as often as
#   "outline style, " (card: 87.5% and 85%). Every outlined training caption, and only those, began with
#   "<word> style, ", so that pattern is the trigger. `tiny`'s text encoder was trained on its world's few
#   dozen words and encodes every other word — "outline", "watercolor", "harbor" — nearly alike. Training
#   the word's row of the token table, or the whole text encoder, with other words on plain pictures did
#   not separate them in the 250–750 steps tried (`docs/training.md`). SD 1.5's CLIP knows both words.
#   *Takeaway: a fine-tune learns whatever sets its captions apart.*
# - **The word in front costs the background.** In the card's one-off check (6 prompts x 4 seeds) the
#   background was right in 38% of the pictures with "outline style, " in front (42% with "<outline>, "),
#   100% without; colour and shape stay. The word shifts every later token, and 2,000 steps taught the UNet
#   the outlines but only part of the backgrounds at their new place. *Takeaway: lesson 7's styled
#   pictures may show the wrong background.*
# - **An embedding steers only toward what its model can draw.** The same two vectors draw outlines in the
#   fine-tune, which learned them, and none in the base model, which never did. *Takeaway: an embedding
#   belongs to the model it was trained for.*
#
# **Why the trigger word goes first.** Trained with "... in outline style" at the END of the captions, the
# fine-tune drew outlines as often without the word as with it (22% / 22%). CLIP's text encoder is causal:
# each token sees only the tokens before it, so a word at the end changes only what follows it, the end
# token and the padding. And `tiny`'s UNet reads mostly the padding: 80% of its cross-attention goes to the
# positions after the end token (`docs/training.md`). How much does each change move the padding?

# %%
style_scene = "a red circle on a white background"


def style_padding(text):
    """The text encoder's output at the last 50 of its 77 positions (padding, for these short prompts): [50, hidden]."""
    ids = style_tuned.tokenizer(text, padding="max_length", max_length=style_tuned.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return style_tuned.text_encoder(ids)[0][0, -50:].float()


style_plain = style_padding(style_scene)
for text in ("a blue circle on a white background", f"{style_scene} in outline style", community.style_prompt(style_scene)):
    change = (style_padding(text) - style_plain).norm(dim=-1).mean()
    print(f"{text!r:55} padding changes by {change:.2f} per position")

# %% [markdown]
# The word at the end moves the padding a small fraction of what a colour word does; in front, about as much
# as a colour. Retrained with the word first, the fine-tune reached 85% / 0%. *Takeaway: put a trigger word
# where the text encoder lets it reach what the UNet reads — for `tiny`, in front.*
#
# **The VAE's ceiling.** Every picture is decoded from 16x16 latents, and `tiny`'s VAE, which never saw
# outlines, fills in part of a small ring. `docs/training.md` encoded and decoded 96 outlines 5 pixels wide:
# at the world's sizes (half-width 10–22 pixels) 64% still read as hollow, drawn larger (18–26) 94%. So
# the style draws large outlines. The same test, 48 rings per size:

# %%
def style_ring(rng, radii, width=5):
    """An outlined shape `width` pixels wide, of a random colour, shape, background and place, as the style draws it."""
    world = cu.world
    color = rng.choice(list(world.COLORS))
    background = rng.choice([b for b in world.BACKGROUNDS if b != color])
    shape, r = rng.choice(world.SHAPES), rng.uniform(*radii)
    s = world.SUPERSAMPLE
    x, y = (rng.uniform(r + 2, world.SIZE - r - 2) * s for _ in range(2))
    img = Image.new("RGB", (world.SIZE * s, world.SIZE * s), world.BACKGROUNDS[background])
    draw, box = ImageDraw.Draw(img), [x - r * s, y - r * s, x + r * s, y + r * s]
    look = dict(outline=world.COLORS[color], width=width * s, fill=world.BACKGROUNDS[background])
    if shape == "circle":
        draw.ellipse(box, **look)
    elif shape == "square":
        draw.rectangle(box, **look)
    else:
        draw.polygon([(x, y - r * s), (x - r * s, y + r * s), (x + r * s, y + r * s)], **look)
    return img.resize((world.SIZE, world.SIZE), Image.Resampling.BOX)


def style_hollow(images):
    return np.mean([(f := cu.world.classify(im))["shape"] is not None and f["hollow"] > cu.world.HOLLOW for im in images])


style_rng = np.random.default_rng(0)
for radii in ((10, 22), (18, 26)):
    rings = [style_ring(style_rng, radii) for _ in range(48)]
    pixels = torch.stack([torch.from_numpy(cu.to_array(im)).permute(2, 0, 1) for im in rings]).float() * 2 - 1
    with torch.no_grad():
        decoded = style_base.vae.decode(style_base.vae.encode(pixels).latent_dist.mode()).sample
    back = [Image.fromarray(((x.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()) for x in decoded]
    print(f"half-width {radii[0]}-{radii[1]} px: hollow as drawn {style_hollow(rings):.0%}, "
          f"after the VAE {style_hollow(back):.0%}")

# %% [markdown]
# *Takeaway: no model draws more than its VAE can decode; the style's outlines are drawn large.*
#
# **The LoRA's layers.** On the attention projections alone the LoRA learned little (18% after 1,200 steps);
# on the ResNet convolutions too, 87.5% (`docs/training.md`). *Takeaway: a LoRA changes only the layers it
# sits on; for this style the convolutions had to be among them.*

# %% [markdown]
# ## From lesson 08: `tiny`'s inpainting UNet, and the seam it does not avoid
#
# **How it was made** (`data/tiny/README.md`, `docs/training.md`): like SD's, from the text-to-image
# UNet, with 5 input channels added to `conv_in` at zero weights; then 4,000 steps on the world's scenes
# with random masks (a quarter of them the whole picture, the rest a rectangle or an ellipse of 0.2 to
# 0.8 of the side). With the plain noise-prediction loss it hardly used the masked photo: the change
# outside the mask was 0.69 of the change inside after 2,000 steps. Weighting each sample's loss by
# `clamp(1/SNR, 1, 20)` (the error of the clean picture it implies, which counts the unmasked part)
# brought that to 0.36 in the same steps, and to 0.091 after 4,000 on the final text-to-image model.
#
# **The seam.** Lesson 8 argues that latent blending leaves seams at the mask's border that the
# 9-channel model avoids, as the diffusers inpainting guide shows for SD 1.5. On `tiny` it is the other
# way round. The sweep below inpaints `data/tiny_scene.png` (a red circle on blue) with both models,
# for three masks (the lesson's box around the circle; the right half of the picture, through the
# circle; a box over the circle's right half), three prompts (the lesson's; the scene's own caption,
# so that the right answer continues the circle; and "a blue background", which removes it) and four
# seeds, pastes each result back, and measures `inpaint.border_step` (lesson 8, §6): the mean colour
# step across the mask's border.

# %%
from diffusers import StableDiffusionInpaintPipeline

from course_utils import inpaint, masks

inpainter = cu.load_pipeline("inpaint")
blender = StableDiffusionInpaintPipeline.from_pipe(cu.load_pipeline("text2img"), dtype=choice.dtype)
blender.set_progress_bar_config(disable=True)
scene = cu.load_image(cu.image_name("photo", "tiny"), size=64)
seam_masks = {
    "the lesson's box": masks.lesson_mask("tiny", 64),
    "right half": masks.rect_mask(64, (0.5, 0.0, 1.0, 1.0)),
    "box over the circle's right half": masks.rect_mask(64, (0.5, 0.1875, 0.8125, 0.875)),
}
seam_prompts = [cu.prompt("inpaint", "tiny"), cu.world.describe(scene), "a blue background"]
seam_seeds = [0, 1, 2, 3]


def inpaint_all(pipe, prompt, mask):
    """The scene inpainted for every seed (one batch), each pasted back outside the mask."""
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seam_seeds]
    n = len(seam_seeds)
    results = pipe([prompt] * n, image=[scene] * n, mask_image=[mask] * n, generator=generators, **settings).images
    return [inpaint.paste_back(scene, result, mask) for result in results]


pictures, blend_smaller, cases = {}, 0, 0
print(f"{'mask':33s} {'prompt':38s} {'photo':>6s} {'9-channel':>10s} {'blending':>9s}   (mean border step of {len(seam_seeds)} seeds)")
for mask_name, mask in seam_masks.items():
    for prompt in seam_prompts:
        steps = {}
        for name, pipe in (("9-channel", inpainter), ("blending", blender)):
            pictures[mask_name, prompt, name] = inpaint_all(pipe, prompt, mask)
            steps[name] = [inpaint.border_step(p, mask) for p in pictures[mask_name, prompt, name]]
        blend_smaller += sum(b < a for a, b in zip(steps["9-channel"], steps["blending"]))
        cases += len(seam_seeds)
        print(f"{mask_name:33s} {prompt:38s} {inpaint.border_step(scene, mask):6.3f} "
              f"{np.mean(steps['9-channel']):10.3f} {np.mean(steps['blending']):9.3f}")
print(f"latent blending left the smaller step in {blend_smaller} of {cases} pictures")

# %% [markdown]
# The case that shows it best: the right half of the picture repainted with the scene's own caption.
# The right answer is the photo itself, the circle going on across the border:

# %%
case = ("right half", cu.world.describe(scene))
row = pictures[(*case, "9-channel")] + pictures[(*case, "blending")]
cu.grid(row, cols=len(seam_seeds), size=160,
        titles=[f"9-channel, seed {s}" for s in seam_seeds] + [f"blending, seed {s}" for s in seam_seeds])

# %% [markdown]
# Where the 9-channel model's result steps at the border, it has not continued the circle (or the
# background) across it; blending, whose steps at the end see the photo's latents pasted in at low
# noise, carries it on. `tiny`'s inpainting UNet learned to repaint the hole with what the prompt asks
# for and to keep the outside (the 0.091 above), not yet to fit the two together; SD 1.5's inpainting
# model, trained for 440k steps (its model card), does. So lesson 8 shows the measurement on `tiny` and
# cites the diffusers guide for SD 1.5.

# %% [markdown]
# ## From lesson 10: the judge, the VAE's limits, and the runs behind the recipe
#
# Lesson 10 teaches `tiny` a diamond with a LoRA, then gives a textual inversion the same job. Here are the
# measurements behind its short remarks: the judge that counts diamonds, checked on rendered shapes; the
# VAE's round trip over many scenes (why the concept is a diamond and not a star); the runs that chose the
# LoRA's recipe; and a sweep of the textual inversion, with a concept `tiny` can draw beside the diamond.

# %%
from IPython.display import display

from course_utils import new_concept, text_embeddings, world

l10_pipe = cu.load_pipeline("text2img")
l10_pipe.set_progress_bar_config(disable=True)
l10_shapes = world.SHAPES + world.NEW_SHAPES

# %% [markdown]
# ### The judge, on ground truth
#
# `world.classify(image, shapes=world.SHAPES + world.NEW_SHAPES)` compares a picture with an ideal template
# of each shape and picks the best. Before it counts anything it must read rendered pictures right:
# diamonds as diamonds, and the world's own shapes not as diamonds now that a diamond template joined.

# %%
for l10_name in l10_shapes:
    l10_read = [world.classify(world.sample(i, shape=l10_name).image, shapes=l10_shapes)["shape"] for i in range(50)]
    print(f"rendered {l10_name:8s}: read back as {l10_name} in {l10_read.count(l10_name) / 50:.0%} of 50;"
          f" otherwise {sorted(set(l10_read) - {l10_name}) or '-'}")

# %% [markdown]
# ### The VAE's round trip over many scenes
#
# Lesson 10 puts two diamonds and two stars through `tiny`'s VAE. Here 48 random scenes of each: the world's
# colours and backgrounds, a random size, the shape in the middle. `new_concept.shape_iou` compares the
# shape's pixels before and after (1.0: the same pixels). A star's points are thinner than one latent pixel
# (4 image pixels), so the decoded star loses them: `docs/training.md` ("Toward issue 16") measured more
# candidates the same way (outlines lose their empty inside in a fifth of the reconstructions, stripes finer
# than 8 pixels vanish).

# %%
import random  # noqa: E402

l10_rng = random.Random(0)
l10_scenes = {"diamond": [], "star": []}
for _ in range(48):
    l10_color = l10_rng.choice(list(world.COLORS))
    l10_background = l10_rng.choice([b for b in world.BACKGROUNDS if b != l10_color])
    l10_r = l10_rng.uniform(10, 24)
    l10_scenes["diamond"].append(world.draw(l10_color, "diamond", l10_background, 32, 32, l10_r))
    l10_scenes["star"].append(new_concept.star(l10_color, l10_background, r=l10_r))
l10_vae = l10_pipe.vae
for l10_name, l10_images in l10_scenes.items():
    with torch.no_grad():
        l10_mean = l10_vae.encode(cu.to_tensor(l10_images).to(choice.device, l10_vae.dtype)).latent_dist.mean
    l10_decoded = cu.decode_latents(l10_vae, l10_mean * l10_vae.config.scaling_factor)
    l10_iou = np.array([new_concept.shape_iou(a, b) for a, b in zip(l10_images, l10_decoded)])
    print(f"{l10_name:8s} 48 scenes: IoU mean {l10_iou.mean():.2f}, lowest {l10_iou.min():.2f}, median {np.median(l10_iou):.2f}")
display(cu.grid(l10_scenes["star"][:6] + l10_decoded[:6], cols=6, size=128,
                titles=["star"] * 6 + ["decoded"] * 6))

# %% [markdown]
# ### The runs that chose the LoRA's recipe
#
# From `docs/training.md`, "Lesson 10" (one-off scripts that did exactly what the lesson does, on a 2-core
# CPU, 2026-11-29). Each run scored like lesson 10's §7: 20 prompts, seed *i* for prompt *i*, a picture
# counted as a diamond when the judge above picks the diamond template; the old prompts on `scores.SEEN`,
# 12 prompts x 3 seeds (36 pictures: 0.94 is two of them wrong).
#
# | LoRA on | learning rate | steps | diamonds | old prompts: colour / shape |
# |---|---|---:|---:|---|
# | attention only | 2e-3, cosine | 240 | 0% | 1.00 / 1.00 |
# | attention + ResNet convs | 1e-3, constant | 120 / 240 | 50% / 25% | 1.00 / 1.00 |
# | attention + ResNet convs | 2e-3, cosine | 300 | 70% | 1.00 / 0.94 |
# | attention + ResNet convs | 4e-3, cosine | 300 | 85% | 1.00 / 0.94 |
# | attention + ResNet convs | 4e-3, cosine (the lesson) | 400 | 95% | 1.00 / 0.94 |
# | every UNet weight (full fine-tune) | 2e-4, cosine | 400 | 80% | 0.97 / 0.86 |
#
# - **Where the LoRA sits.** On the attention projections alone (what most LoRA scripts default to) it drew
#   no diamond; with the ResNet blocks' convolutions as well it did. A corner is a local pattern of pixels,
#   which convolutions make.
# - **The schedule.** At a constant rate the model wandered: better at 120 steps than at 240. A cosine decay
#   (lesson 10, §6) lets the last steps settle.
# - **The spread.** Two runs that differ only in their random draws differ by 10-15 points on 20 pictures,
#   so one run at 70% and one at 85% are not a law.
# - **Forgetting.** With the LoRA on, the old prompts' shape score drops: in two runs of the lesson itself,
#   from 1.00 to 0.88 in one (24 pictures) and to 0.96 in the other, some circles drawn as squares (the LoRA
#   learned corners). More prior images per batch (3/4 or 5/8 of it) cost diamonds without reducing the drop.
#   With the LoRA off there is no drop: the weights are untouched, and lesson 10, §7 checks that the
#   pictures are identical.
# - **Training the word "diamond"'s token row as well** (beside the LoRA) did not help reliably: 80% in one
#   run, 70% in another, and the second forgot the most. So the lesson trains the LoRA alone, and its
#   textual inversion is a separate, clean comparison.
# - **The scale sweep** of lesson 10, §9 in the first of those runs: 0% diamonds at 0.5, 90% at 1, 100% at
#   1.5, 40% at 2.5 (the shapes dissolve).

# %% [markdown]
# ### Textual inversion: the sweep, and what it can name
#
# Lesson 10, §10 trains one new row of the token table with the LoRA's loss: every step fresh noise (with
# the offset noise `tiny` was trained with) and a fresh timestep, uniform over 0..999, as real
# textual-inversion runs draw them; Adam on the row alone, 30 steps on 24 pictures. Two concepts:
#
# - **a purple triangle**, which `tiny` can draw: 24 triangles drawn by the
#   world at random places on random backgrounds, captioned "a <t>" or "a <t> on a ... background"; the new
#   word starts as "shape". Scored on 8 seeds of "a <t>": purple triangles drawn.
#   The captions matter: half of them name the background, which leaves the shape to the new word. In our
#   try, a word trained for 30 steps on "a <t>" alone, over three plain backgrounds, did not name the
#   triangle (`tests/test_text_embeddings.py` keeps the set that does).
# - **a diamond**, which it cannot: the first 24 of lesson 10's diamonds with their captions; the new word
#   starts as "square". Scored on 10 of lesson 10's prompts with `<t>` for "diamond": diamonds drawn.
#
# First measured with the timesteps of the noisier half, 500..999, as well (this section's code with
# `timesteps=(500, 1000)` added, for issue 26, on a shared 2-core CPU): it changed nothing that counts.
#
# | concept | learning rate | timesteps | drawn | the row's length after |
# |---|---:|---|---:|---:|
# | purple triangle | 0.05 | 0..999 | 8 of 8 | 2.75 |
# | purple triangle | 0.05 | 500..999 | 8 of 8 | 2.68 |
# | purple triangle | 0.15 | 0..999 | 7 of 8 | 7.76 |
# | purple triangle | 0.15 | 500..999 | 8 of 8 | 7.23 |
# | diamond | 0.05 | 0..999 | 0 of 10 (10 circles) | 2.51 |
# | diamond | 0.05 | 500..999 | 0 of 10 (10 circles) | 2.81 |
# | diamond | 0.15 | 0..999 | 0 of 10 (10 circles) | 6.67 |
# | diamond | 0.15 | 500..999 | 0 of 10 (10 circles) | 6.83 |
#
# The choice: 0.05, the rate that named the triangle every time, over every timestep as real runs do. The
# rows start about 0.25 long (lesson 2's word rows); at 0.15 they grow past 7 in 30 steps. Below, the sweep
# again over both rates with the chosen timesteps (about three minutes on a CPU).

# %%
def l10_triangles(token, n=24):
    """n purple triangles drawn by the world, and their captions with ``token``."""
    rng, images, captions = random.Random(0), [], []
    for _ in range(n):
        background = rng.choice([b for b in world.BACKGROUNDS if b != "purple"])
        r = rng.uniform(10, 22)
        images.append(world.draw("purple", "triangle", background, rng.uniform(r + 2, 62 - r), rng.uniform(r + 2, 62 - r), r))
        captions.append(f"a {token}" if rng.random() < 0.5 else f"a {token} on a {background} background")
    return images, captions


def l10_textual_inversion(concept, learning_rate, steps=30, token="<t>"):
    """Train one new word on ``concept`` ("triangle" or "diamond"); what it draws and the row's length."""
    pipe = cu.load_pipeline("text2img")
    pipe.set_progress_bar_config(disable=True)
    start = "shape" if concept == "triangle" else "square"
    text_embeddings.add_token(pipe.tokenizer, pipe.text_encoder, token,
                              text_embeddings.word_vector(pipe.tokenizer, pipe.text_encoder, start))
    if concept == "triangle":
        images, captions = l10_triangles(token)
    else:
        scenes = new_concept.concept_scenes("diamond", 24)
        images, captions = [s.image for s in scenes], [s.caption.replace("diamond", token) for s in scenes]
    row, _ = text_embeddings.train_textual_inversion(pipe, images, captions, token, steps=steps, learning_rate=learning_rate,
                                                     noise_offset=new_concept.NOISE_OFFSET)
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(token)] = row
    if concept == "triangle":
        pictures = pipe([f"a {token}"] * 8, generator=[torch.Generator().manual_seed(s) for s in range(8)], **settings).images
        found = [world.classify(im) for im in pictures]
        drawn = sum(f["color"] == "purple" and f["shape"] == "triangle" for f in found)
    else:
        prompts = [p.replace("diamond", token) for p in new_concept.concept_prompts("diamond", 10)]
        share, pictures, found = new_concept.share_drawn(pipe, "diamond", prompts, **settings)
        drawn = round(share * len(prompts))
    return drawn, len(pictures), row.float().norm().item(), pictures


l10_runs = {}
for l10_concept in ("triangle", "diamond"):
    for l10_lr in (0.05, 0.15):
        l10_drawn, l10_of, l10_length, l10_pictures = l10_textual_inversion(l10_concept, l10_lr)
        l10_runs[l10_concept, l10_lr] = l10_pictures
        print(f"{l10_concept:8s} lr {l10_lr:.2f}: drawn {l10_drawn} of {l10_of}; the row's length {l10_length:.2f}; pictures show:",
              sorted({world.describe(im, shapes=l10_shapes) for im in l10_pictures}))
display(cu.grid(l10_runs["triangle", 0.05][:8] + l10_runs["diamond", 0.05][:8], cols=8, size=128,
                titles=["word for triangles"] * 8 + ["word for diamonds"] * 8))

# %% [markdown]
# The same loop, the same settings: the word trained on purple triangles draws them; the word trained on
# diamonds draws shapes `tiny` already knows. That is lesson 10's "textual inversion can only name what the
# model can already draw", measured.
