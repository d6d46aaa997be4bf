# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
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
# # Lesson 5 — Negative prompts and guidance
#
# **What you will learn**
# - what a negative prompt is: the text that *replaces the empty prompt* in classifier-free guidance;
# - how to build it by hand and get exactly the pipeline's `negative_prompt=` result;
# - why the UNet can predict without any prompt at all (training left 10% of the captions empty), and
#   what `guidance_scale` does from 0 (the prompt ignored) through 1 (no guidance) to 15;
# - how to switch a negative prompt on or off part-way through a run with `callback_on_step_end`;
# - what happens to a prompt longer than 77 tokens (which words are cut) and one way past the limit;
# - answers to "Prompt longer than 77 tokens" and "Why doesn't the image match my text?".
#
# Terms are defined where they first appear, and all in one place in the [glossary](../docs/glossary.md).

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about 2.7 GB
# from the Hugging Face Hub, again on every new runtime:
# SD 1.5 in fp16.
# To keep them on your Google Drive instead, uncomment the two lines after the imports (HF_HOME must be set
# before huggingface_hub is imported).
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
import inspect

import torch
from IPython.display import display

import course_utils as cu
from course_utils import by_hand, long_prompt

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. Guidance, and where the negative prompt goes
#
# Lesson 3's loop asks the UNet twice per step: once with the prompt's embedding `c`, once with
# the embedding of the **empty prompt** `c_∅`, and moves further in the direction between them:
#
# `ε = ε(x_t, c_∅) + w · (ε(x_t, c) − ε(x_t, c_∅))`
#
# A **negative prompt** simply takes the empty prompt's place: `c_∅` becomes the embedding of, say,
# "blurry, low quality". Each step then moves *towards* the prompt and *away from* the negative
# prompt. Nothing else changes: same UNet, same number of calls.
#
# With `sd15` the negative prompt is SD 1.5's classic "blurry, low quality". `tiny` only knows its
# world of one coloured shape on a plain background, so there we ask for a circle *without* saying
# which colour, see which colour the model picks, and forbid exactly that colour, same seed.
# `cu.world.describe` reads the picture back in words.

# %%
pipe = cu.load_pipeline("text2img")
settings = cu.default_settings(choice.profile)
steps, guidance = settings["num_inference_steps"], settings["guidance_scale"]
prompt = cu.prompt("main", choice.profile)
negative = cu.prompt("negative", choice.profile)
if choice.profile == "tiny":
    # a circle without its colour: the model has to pick one itself. On white, because white is never a
    # shape's colour here, so forbidding the circle's colour cannot forbid the background too
    prompt = cu.prompt("open_color", choice.profile)
seed = 0
print("prompt:", prompt, "|", settings)

# A forward hook shows what the UNet receives on each call: the latents and the text embeddings.
unet_inputs = []
hook = pipe.unet.register_forward_pre_hook(
    lambda module, args, kwargs: unet_inputs.append((tuple(args[0].shape), tuple(kwargs["encoder_hidden_states"].shape))),
    with_kwargs=True,
)

# %% [markdown]
# ## 2. The pipeline with and without a negative prompt
#
# Same seed, same prompt; the only change is `negative_prompt=`. On `tiny` the negative prompt is
# the colour the model drew without one. `generate` also keeps the latents after every step
# (`trajectory`, through `callback_on_step_end`, which runs after every step).

# %%
trajectory = []  # the latents after each step of the last run


def generate(callback=None, **kwargs):
    """The pipeline with this lesson's settings and seed; returns latents (decode with cu.decode_latents).

    ``callback``, if given, runs after every step as a ``callback_on_step_end`` (the exercises pass one).
    """
    unet_inputs.clear()
    trajectory.clear()

    def after_step(pipeline, i, t, tensors):
        trajectory.append(tensors["latents"])
        return callback(pipeline, i, t, tensors) if callback else {}

    options = dict(settings, **kwargs)
    return pipe(generator=torch.Generator(device="cpu").manual_seed(seed), output_type="latent", callback_on_step_end=after_step,
                callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], **options).images


plain = generate(prompt=prompt)
if choice.profile == "tiny":
    drawn = cu.world.classify(cu.decode_latents(pipe.vae, plain)[0])["color"]
    negative = drawn or negative  # forbid the colour it chose ("or": if no shape was found, the registry's "red")
with_negative = generate(prompt=prompt, negative_prompt=negative)
print("negative prompt:", repr(negative))
print("UNet calls:", len(unet_inputs), "| each call: latents", unet_inputs[0][0], "text", unet_inputs[0][1])
print("max latent difference, with vs without the negative prompt:", f"{(plain - with_negative).abs().max():.3f}")
pictures = cu.decode_latents(pipe.vae, torch.cat([plain, with_negative]))
titles = ["no negative prompt", f"negative_prompt={negative!r}"]
if choice.profile == "tiny":
    titles = [f"{title}: {cu.world.describe(p)}" for title, p in zip(titles, pictures)]
    print(*titles, sep="\n")
cu.grid(pictures, cols=2, size=256, titles=titles)

# %% [markdown]
# On `tiny` the circle changes colour (the printout): the colour named in the negative prompt goes,
# while shape and background, asked for by the prompt, stay. With `sd15` the picture gets sharper
# and cleaner. The batch of 2 is `[negative (or empty), prompt]`: the pipeline stacks the two
# embeddings and runs the UNet once on both.

# %% [markdown]
# ## 3. By hand: the negative prompt as the unconditional embedding
#
# Encode the negative prompt exactly like any prompt (`[1, 77, hidden]`), and pass it where lesson 3
# passed the empty prompt's embedding (`uncond`).

# %%
cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
empty = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, negative)
print("prompt", tuple(cond.shape), "| empty", tuple(empty.shape), "| negative", tuple(uncond.shape))
print(f"negative vs empty embedding: max difference {(uncond - empty).abs().max():.3f}")

generator = torch.Generator(device="cpu").manual_seed(seed)
pipe.scheduler.set_timesteps(steps, device=choice.device)
x_T = by_hand.initial_latents(1, pipe.unet, pipe.scheduler, settings["height"], settings["width"],
                              generator, choice.device, cond.dtype, vae_scale_factor=pipe.vae_scale_factor)
by_hand_latents = by_hand.denoise(pipe.unet, pipe.scheduler, x_T, cond, uncond, guidance)

difference = (by_hand_latents.float() - with_negative.float()).abs().max().item()
tolerance = by_hand.tolerance(choice.dtype, with_negative)  # 1e-4 in float32; fp16 on a GPU rounds more
print(f"max |by hand - pipeline(negative_prompt=...)| = {difference:.2e} (tolerance {tolerance:.1e})")
assert difference <= tolerance
# guidance at the first step, drawn: the negative prompt's prediction takes the empty prompt's place
t = pipe.scheduler.timesteps[0]
with torch.no_grad():
    eps_empty, eps_neg, eps_text = pipe.unet(pipe.scheduler.scale_model_input(torch.cat([x_T] * 3), t), t,
                                             encoder_hidden_states=torch.cat([empty, uncond, cond])).sample.chunk(3)
display(cu.diagrams_steps.guidance_diagram(eps_empty, eps_text, guidance, eps_negative=eps_neg))

# %% [markdown]
# Negative prompts work the same way in every SD pipeline, e.g. image to image (lesson 4; the source
# lesson removes a river from the castle landscape with `negative_prompt="river"`). With `sd15`: the
# castle prompt on the landscape sketch at strength 0.75, with and without "blurry, low quality". On
# `tiny` the prompt leaves the colour open, so the sketch's orange-red blob tends to keep its colour;
# as in section 2, the negative prompt then forbids the colour it kept. (A prompt that names a colour
# leaves the negative prompt nothing to do on `tiny`: prompt and strength come from a measured sweep,
# appendix, "From lesson 05".) We build the img2img pipeline from the same components, loading nothing
# again. (`from_pipe(pipe)` does the same, but casts the shared modules to float32 unless you pass
# `dtype=pipe.dtype`: on a GPU that would silently turn the fp16 pipeline into fp32.)

# %%
from diffusers import StableDiffusionImg2ImgPipeline  # imported after cu.setup(), which quiets a library note

img2img_pipe = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=pipe.config.requires_safety_checker)
img2img_pipe.set_progress_bar_config(disable=choice.profile == "tiny")  # as cu.load_pipeline does: tiny steps take milliseconds
sketch = cu.load_image(cu.image_name("sketch", choice.profile), size=(settings["width"], settings["height"]))
castle, strength, lesson_negative = cu.prompt("restyle", choice.profile), 0.75, cu.prompt("negative", choice.profile)
if choice.profile == "tiny":
    castle, strength = cu.prompt("open_color", choice.profile), 0.5  # the sweep's choice (appendix)


def restyle(negative_prompt):
    return img2img_pipe(castle, image=sketch, strength=strength, negative_prompt=negative_prompt, num_inference_steps=steps,
                        guidance_scale=guidance, generator=torch.Generator(device="cpu").manual_seed(seed)).images[0]


pictures = [restyle("")]
if choice.profile == "tiny":
    lesson_negative = cu.world.classify(pictures[0])["color"] or lesson_negative  # the colour it kept, as in section 2
pictures.append(restyle(lesson_negative))
print("prompt:", repr(castle), "| strength:", strength, "| same UNet object:", img2img_pipe.unet is pipe.unet)
titles = ["sketch", "no negative prompt", f"negative_prompt={lesson_negative!r}"]
if choice.profile == "tiny":
    titles = titles[:1] + [f"{title}: {cu.world.describe(p)}" for title, p in zip(titles[1:], pictures)]
    print(*titles[1:], sep="\n")
cu.grid([sketch] + pictures, cols=3, size=256, titles=titles)

# %% [markdown]
# ## 4. Why guidance works: a prediction without the prompt
#
# The formula of section 1 needs `ε(x_t, c_∅)`: what the UNet predicts when the prompt is empty. A
# network trained only on captioned pictures would have no sensible answer to that. SD 1.5 was
# trained with "10% dropping of the text-conditioning" (its model card): for one training picture in
# ten the caption was replaced by the empty text, so the same network learned both predictions, with
# and without a prompt. `tiny` was trained the same way (its share: `cu.world.EMPTY_FRACTION`).
#
# With both predictions, `guidance_scale` `w` picks a point on the line through them:
#
# - `w = 0`: `ε = ε(x_t, c_∅)`, the empty prompt's prediction alone: the prompt is ignored;
# - `w = 1`: `ε = ε(x_t, c)`, the prompt's prediction alone: no guidance;
# - `w > 1`: *beyond* the prompt's prediction, away from the empty prompt's: the picture follows the
#   text more strictly; too far and it distorts.
#
# diffusers decides before each run whether to compute the empty prompt's half at all. This is its
# property `do_classifier_free_guidance`:

# %%
print(inspect.getsource(type(pipe).do_classifier_free_guidance.fget))

# %% [markdown]
# For `guidance_scale <= 1` the pipeline skips the empty prompt (and any negative prompt): the UNet
# gets a batch of 1 with the prompt alone, `ε(x_t, c)`. So `guidance_scale=0` in diffusers gives
# exactly the picture of `guidance_scale=1`, *not* the `w = 0` of the formula. For `w = 0` we give
# the pipeline the empty prompt instead, at guidance 1: that is `ε(x_t, c_∅)` alone. The sweep
# reuses section 2's picture for the profile's default guidance.

# %%
scales = (0.0, 1.0, 3.0, 7.5, 15.0)  # both profiles' defaults are among them
sweep = []
for w in scales:
    if w == guidance:
        sweep.append(plain)  # made in section 2 with the same seed and settings
        print(f"w = {w:>4}: section 2's picture (UNet batch 2)")
        continue
    if w == 0:
        sweep.append(generate(prompt="", guidance_scale=1.0))  # the empty prompt alone = the formula at w = 0
    else:
        sweep.append(generate(prompt=prompt, guidance_scale=w))
    print(f"w = {w:>4}: UNet batch {unet_inputs[0][0][0]}, text embeddings {unet_inputs[0][1]}")
zero = generate(prompt=prompt, guidance_scale=0.0)
difference = (zero - sweep[1]).abs().max().item()  # 0 on a CPU; a GPU may differ in the last digits between runs
print("pipe(prompt, guidance_scale=0) vs pipe(prompt, guidance_scale=1): max difference", difference)
assert difference <= by_hand.tolerance(choice.dtype, sweep[1])
sweep_pictures = cu.decode_latents(pipe.vae, torch.cat(sweep))
titles = [f"w = {w:g}" + (" (empty prompt)" if w == 0 else "") for w in scales]
if choice.profile == "tiny":
    titles = [f"{title}: {cu.world.describe(p)}" for title, p in zip(titles, sweep_pictures)]
    print(*titles, sep="\n")
cu.grid(sweep_pictures, cols=len(scales), size=192, titles=titles)

# %% [markdown]
# At `w = 0` the model never heard the prompt, so what it draws is its own choice; at `w = 1` it
# follows the prompt loosely; larger `w` pushes further from the empty prompt's picture. With `sd15`,
# 15 gives harsh, over-saturated colours; its usual range is 7–8. `tiny`'s default is 3: a model this
# small follows its text at a gentler guidance (`data/tiny/README.md`).

# %% [markdown]
# ## 5. When does a negative prompt act?
#
# `callback_on_step_end` may hand back new tensors for the next step; with guidance on, its
# `prompt_embeds` is the stacked batch `[negative, prompt]`, so swapping its first half switches the
# negative prompt on or off after any step (exercise 3 does). Measured on `tiny`, a negative prompt
# given to only the first few timesteps changes little: those steps move the latents only a short
# way, and the steps after them decide again as without it; it needs several steps to act.
# (More in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 05".)

# %% [markdown]
# ## 6. Prompts longer than 77 tokens
#
# CLIP's text encoder has 77 positions: `<|startoftext|>` + **75 content tokens** + `<|endoftext|>`.
# The pipeline cuts everything after the 75th token — silently, except for a logged warning. Here is
# a long prompt (the course's prompts strung together; a real one would list lighting, lens, style …).

# %%
tokenizer = pipe.tokenizer
parts = [cu.prompt(name, choice.profile) for name in ("main", "restyle", "describe_photo")]
head = ", ".join(parts)
while len(long_prompt.content_token_ids(tokenizer, head)) < tokenizer.model_max_length - 2:
    head += ", " + ", ".join(parts)  # repeat until the head alone fills the 75-token window
long_a = head + ", " + cu.prompt("describe_photo", choice.profile)
long_b = head + ", " + cu.prompt("restyle", choice.profile)  # differs from long_a only at the end
n_head = len(long_prompt.content_token_ids(tokenizer, head))
assert n_head >= tokenizer.model_max_length - 2, "the head must fill the 75-token window"
print("content tokens:", len(long_prompt.content_token_ids(tokenizer, long_a)), "| window:", tokenizer.model_max_length, "incl. start/end")
print("cut off:", " ".join(long_prompt.which_tokens_are_cut(tokenizer, long_a)))

# %% [markdown]
# `which_tokens_are_cut` tokenizes without truncation and decodes what lies past token 75. The
# pipeline's `encode_prompt` logs the same text as a warning; we catch it:

# %%
with long_prompt.captured_warnings() as messages, torch.no_grad():
    embeds_a, _ = pipe.encode_prompt(long_a, choice.device, 1, True, negative)
    embeds_b, _ = pipe.encode_prompt(long_b, choice.device, 1, True, negative)
print("diffusers warned:", *messages, sep="\n  ")
print("shape:", tuple(embeds_a.shape), f"| long_a vs long_b embeddings: max difference {(embeds_a - embeds_b).abs().max():.1f}")

# %% [markdown]
# The two prompts differ only in their cut-off ends, so the pipeline sees *identical* embeddings and
# draws identical images: the end of a long prompt does nothing.
#
# **One way past the limit**: split the tokens into chunks of 75, wrap each chunk in start/end
# tokens, encode each chunk on its own and concatenate along the sequence axis. The UNet's
# cross-attention takes any number of text tokens, so the pipeline accepts the result as
# `prompt_embeds=` / `negative_prompt_embeds=` (both padded to the same number of chunks).

# %%
cond_a, uncond_a = long_prompt.long_prompt_embeds(pipe, long_a, negative)
cond_b, uncond_b = long_prompt.long_prompt_embeds(pipe, long_b, negative)
print("prompt_embeds", tuple(cond_a.shape), "| negative_prompt_embeds", tuple(uncond_a.shape))
print(f"first chunk vs the pipeline's (cut) embedding: max difference {(cond_a[:, :77] - embeds_a).abs().max():.1e}"
      f" | long_a vs long_b: max difference {(cond_a - cond_b).abs().max():.3f}")

long_images = [generate(prompt_embeds=c, negative_prompt_embeds=u) for c, u in ((cond_a, uncond_a), (cond_b, uncond_b))]
print("UNet text input per call:", unet_inputs[0][1])
print(f"images from long_a vs long_b: max latent difference {(long_images[0] - long_images[1]).abs().max():.3f} (the cut words now count)")
long_pictures = cu.decode_latents(pipe.vae, torch.cat(long_images))
titles = ["long_a, all chunks", "long_b, all chunks"]
if choice.profile == "tiny":
    titles = [f"{title}: {cu.world.describe(p)}" for title, p in zip(titles, long_pictures)]
cu.grid(long_pictures, cols=2, size=256, titles=titles)

# %% [markdown]
# Caveats: SD 1.5 was trained on single 77-token windows, so later chunks tend to count for less, and
# a chunk boundary can split a phrase. The safe fix is still a shorter prompt with the important
# words first. Libraries such as `compel` implement this chunking with prompt weighting on top.
#
# **"Prompt longer than 77 tokens"** — the pipeline keeps the first 75 tokens (about 50–60 English
# words; punctuation counts) and drops the rest with a warning; `which_tokens_are_cut` shows what
# was lost; `long_prompt_embeds` + `prompt_embeds=` keeps everything.

# %% [markdown]
# ## 7. "Why doesn't the image match my text?"
#
# - **One seed is one sample** (lesson 1): a missing astronaut (on `tiny`: a wrong colour) may
#   appear with the next seed.
# - **Guidance too low** follows the text loosely; **too high** distorts. Try 7–8 on SD 1.5.
# - **Say what you do not want** in the negative prompt ("blurry, low quality", "river", "extra
#   fingers") instead of "no river" in the prompt: CLIP does not understand negation well, and the
#   word "river" in the prompt pulls *towards* rivers.
# - **Long prompts are cut** after 75 tokens: put the subject first, or use the chunks above.
# - **CLIP's limits**: counting, left/right, written text and unusual combinations are weak spots of
#   SD 1.5; rephrase, or use img2img/inpainting (lessons 4 and 8) to fix the layout.
# - **Check in words** where you can: on `tiny`, `cu.world.describe(image)` reads colour, shape and
#   background back, so "does it match?" becomes a comparison of words (in its own small world only).

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1. Predict, then run.** At the first step, is the pipeline's guided prediction with the negative
# prompt `ε_neg + w · (ε_text − ε_neg)` or `ε_∅ + w · (ε_text − ε_∅)`? Compute `ε_∅`, `ε_neg` and
# `ε_text` with one UNet call on a batch of 3 (`x_T` from section 3, the embeddings `empty`, `uncond`,
# `cond`), take one `scheduler.step` with each formula, and compare with the latents the pipeline
# has after its first step (stop it there with a callback: `pipeline._interrupt = True`).

# %%
# your attempt

# %% [markdown]
# **2. Predict, then run.** What shape does `long_prompt_embeds` give for `long_a` (section 6), and
# why? Then build it yourself: the content token ids (`long_prompt.content_token_ids`), chunks of
# 75, each wrapped in `tokenizer.bos_token_id` / `eos_token_id` and padded to 77 with
# `tokenizer.pad_token_id`, each chunk through `pipe.text_encoder` on its own, concatenated along
# the token axis. Compare with `cond_a`.

# %%
# your attempt

# %% [markdown]
# **3. Predict, then run.** Give the negative prompt to the *last* 10 timesteps only: run with
# `negative_prompt=""` and write a callback (section 5) that, after step `calls - 10` (`calls =
# len(pipe.scheduler.timesteps)`, one callback per timestep), puts the negative prompt's embedding
# (`uncond`) into the first half of `prompt_embeds`. Will the forbidden colour (on `sd15`: the blur)
# go away when only the last 10 timesteps see the negative prompt?

# %%
# your attempt

# %% [markdown]
# ## Summary
# - A negative prompt is encoded like any prompt and **replaces the empty prompt** in
#   classifier-free guidance: `ε = ε_neg + w·(ε_text − ε_neg)`; by hand == pipeline.
# - Guidance needs a prediction without the prompt; the UNet has one because training left a share of
#   the captions empty (SD 1.5: 10%; `tiny`: `cu.world.EMPTY_FRACTION`).
# - `guidance_scale` `w`: the formula's 0 is the empty prompt alone, 1 the prompt alone; diffusers
#   skips guidance (and the negative prompt) for `w <= 1`, so its `guidance_scale=0` equals 1. 7–8 is
#   SD 1.5's usual range, 3 `tiny`'s; very high values distort.
# - CLIP reads 75 content tokens; the pipeline drops the rest with a warning (`which_tokens_are_cut`
#   shows them). Chunked embeddings (`long_prompt_embeds` → `prompt_embeds=`) are one way past it.
# - A negative prompt needs several steps to act (measured on `tiny`: appendix); `callback_on_step_end`
#   can switch it off or on after any timestep.
# - Image not matching the text: try seeds, guidance, a negative prompt, a shorter prompt.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# Around the negative prompt's prediction: the negative prompt *is* the unconditional input. The
# other formula misses the pipeline's step.

# %%
pipe.scheduler.set_timesteps(steps, device=choice.device)
t = pipe.scheduler.timesteps[0]
x = pipe.scheduler.scale_model_input(x_T, t)
with torch.no_grad():
    eps_empty, eps_neg, eps_text = pipe.unet(torch.cat([x] * 3), t, encoder_hidden_states=torch.cat([empty, uncond, cond])).sample.chunk(3)


def stop_after_first_step(pipeline, i, t, tensors):
    pipeline._interrupt = True  # diffusers' documented way to stop a run early
    return {}


generate(prompt=prompt, negative_prompt=negative, callback=stop_after_first_step)
first = trajectory[0]
for name, base in (("negative", eps_neg), ("empty", eps_empty)):
    eps = base + guidance * (eps_text - base)
    pipe.scheduler.set_timesteps(steps, device=choice.device)
    step_one = pipe.scheduler.step(eps, t, x_T).prev_sample
    print(f"guidance around the {name:8s} prompt: max difference to the pipeline's first step {(step_one - first).abs().max():.2e}")

# %% [markdown]
# (The first matches up to float rounding of a batch of 3 instead of 2.)
#
# ### Solution 2
# Section 6's `long_a` has more than 75 content tokens, so two chunks of 77: `[1, 154, hidden]`.

# %%
ids = long_prompt.content_token_ids(tokenizer, long_a)
room = tokenizer.model_max_length - 2  # 75 content tokens per chunk
rows = []
for start in range(0, len(ids), room):
    row = [tokenizer.bos_token_id] + ids[start:start + room] + [tokenizer.eos_token_id]
    rows.append(row + [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(row)))
with torch.no_grad():
    hidden = pipe.text_encoder(torch.tensor(rows, device=pipe.text_encoder.device))[0]  # [chunks, 77, hidden]
mine = hidden.reshape(1, -1, hidden.shape[-1])  # the chunks one after the other
print(len(ids), "content tokens ->", len(rows), "chunks -> prompt_embeds", tuple(mine.shape))
print(f"max difference to long_prompt_embeds: {(mine - cond_a).abs().max():.1e}")
assert torch.allclose(mine, cond_a)

# %% [markdown]
# ### Solution 3
# Read the titles: compare the last-10 picture with "never" and "every timestep". Late timesteps are
# where the text changes the UNet's prediction most, but by then the layout and most of the colour
# are fixed, so a late push can only adjust them.

# %%
def negative_from(k):
    """A ``callback_on_step_end`` that puts the negative prompt in place of the empty one after step ``k``."""

    def callback(pipeline, i, t, tensors):
        if i + 1 != k:
            return {}
        empty_half, prompt_half = tensors["prompt_embeds"].chunk(2)
        return {"prompt_embeds": torch.cat([uncond.expand_as(empty_half), prompt_half])}

    return callback


calls = len(pipe.scheduler.timesteps)  # set by the last run: the callback runs once per timestep
late = generate(prompt=prompt, negative_prompt="", callback=negative_from(calls - 10))
print(f"negative prompt in the last 10 of {calls} timesteps: max latent change vs none {(late - plain).abs().max():.3f},"
      f" at every timestep {(with_negative - plain).abs().max():.3f}")
late_pictures = cu.decode_latents(pipe.vae, torch.cat([plain, late, with_negative]))
titles = ["never", "last 10 timesteps", "every timestep"]
if choice.profile == "tiny":
    titles = [f"{title}: {cu.world.describe(p)}" for title, p in zip(titles, late_pictures)]
    print(*titles, sep="\n")
display(cu.grid(late_pictures, cols=3, size=192, titles=titles))
hook.remove()  # done looking at the UNet's inputs
