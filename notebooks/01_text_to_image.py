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
# # Lesson 1 — Text to image in three lines
#
# **What you will learn**
# - the three lines that turn a sentence into a picture with 🤗 diffusers;
# - which device and model the course picks on your machine, and how to change that;
# - seeds: the same seed gives the same image, another seed gives another image;
# - what to do when the picture misses part of the prompt (a horse, but no astronaut);
# - how the prompt's words and the guidance scale change the picture;
# - how long one image takes on the machine in front of you.
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
import time

import numpy as np
import torch
from IPython.display import display

import course_utils as cu

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. The three lines
#
# With 🤗 diffusers a picture takes three lines, and the cell below runs them:
# 1. `from diffusers import DiffusionPipeline`;
# 2. `DiffusionPipeline.from_pretrained(...)` downloads the model once, then loads it from the cache;
#    `.to(device)` moves every weight to the GPU. On a GPU, `dtype=torch.float16` keeps the weights
#    in half precision (half the memory, and fast) and `variant="fp16"` downloads only the half-size
#    copies of the weights (about 2.7 GB, as the first cell says);
# 3. calling the pipeline with a sentence runs text encoder → denoising steps → image decoder and
#    returns PIL images.
#
# SD 1.5 lives on the Hub at `stable-diffusion-v1-5/stable-diffusion-v1-5`: the source lesson's
# RunwayML repository was **removed from the Hub in 2024**. The course never types a
# path or a device: `cu.model_source("text2img")` says where this profile's model is (on `sd15` SD
# 1.5's folder in the Hub cache; on `tiny` the course's small model in `data/tiny/text2img`), and
# `cu.get_device()` picks the GPU if there is one (section 4).

# %%
from pathlib import Path

from diffusers import DiffusionPipeline

path = cu.model_source("text2img")  # where this profile's model is (sd15: downloaded first if needed)
device = cu.get_device()  # the NVIDIA GPU on a Colab GPU runtime
dtype = cu.get_dtype(device)  # float16 on an NVIDIA GPU, float32 elsewhere
variant = "fp16" if dtype == torch.float16 and any(Path(path).glob("unet/*.fp16.*")) else None  # SD 1.5's half-size files
prompt = cu.prompt("main", choice.profile)
print("from_pretrained:", path, "| dtype:", dtype, "| variant:", variant, "| device:", device)

pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype, variant=variant).to(device)
image = pipe(prompt).images[0]

print(f"{type(pipe).__name__}, prompt {prompt!r} -> a {image.width}x{image.height} picture")
if choice.profile == "tiny":
    print("what the picture shows:", cu.world.describe(image))
cu.grid([image], size=256, titles=["the three lines"])

# %% [markdown]
# On `sd15` that is an astronaut on a horse. `tiny` is the course's own small model, trained on a
# world of one coloured circle, square or triangle on a plain background (`course_utils/world.py`):
# whatever you ask, it draws a shape, so its prompt names one. `cu.world.describe` reads colour,
# shape and background back from the pixels (plain pixel statistics, no model). The mechanics
# (seeds, guidance, timing) are exactly those of SD 1.5.
#
# The lessons load their pipelines with `cu.load_pipeline(role)`: the same `from_pretrained`, with
# the device and dtype chosen for you and a line saying what it chose. From here on we call it with
# the settings that suit the profile (`tiny` works at 64x64 pixels with 25 steps):

# %%
pipe = cu.load_pipeline("text2img")  # the same model again, the way every lesson loads it
settings = cu.default_settings(choice.profile)  # height, width, steps, guidance that suit this profile
print("settings:", settings)
generator = torch.Generator(device="cpu").manual_seed(0)
display(cu.diagrams.pipeline_diagram(pipe))  # what `pipe(...)` runs, drawn from this pipeline (lesson 2 opens it)
image = pipe(prompt, generator=generator, **settings).images[0]
if choice.profile == "tiny":
    print("what the picture shows:", cu.world.describe(image))
cu.grid([image], size=256, titles=[f"{prompt!r}, seed 0"])

# %% [markdown]
# ## 2. Seeds: the same seed gives the same image
#
# Generation starts from random noise (a small *latent* tensor, lesson 2). A `torch.Generator`
# with a seed fixes that noise, and with it the whole image. We use a **CPU** generator: diffusers
# then draws the noise on the CPU and moves it to the device, so a seed gives the same starting
# noise on a laptop, a Mac and a Colab GPU.

# %%
def generate(seed: int, text: str | None = None, **kwargs):
    """One image of `text` (default: the lesson's prompt), from a CPU generator seeded with `seed`."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return pipe(text or prompt, generator=generator, **{**settings, **kwargs}).images[0]


def max_pixel_difference(a, b) -> int:
    """Largest difference between two images, in 0..255 pixel levels."""
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


again = generate(0)
print("seed 0 twice -> max pixel difference:", max_pixel_difference(image, again))
other = generate(1)
print("seed 0 vs seed 1 -> max pixel difference:", max_pixel_difference(image, other))
if choice.device == "cpu":
    assert max_pixel_difference(image, again) == 0

# %% [markdown]
# Zero means the two images are identical, pixel for pixel. On a CPU that is guaranteed here (the
# cell checks it). On a GPU it is not: some CUDA kernels add numbers in a varying order, so two runs
# can differ in the last digits, invisibly (PyTorch's notes on "Reproducibility";
# `torch.use_deterministic_algorithms(True)` trades speed for strict repeatability).
#
# Four seeds, four different images of the same prompt:

# %%
seeds = [0, 1, 2, 3]
images = [image, other] + [generate(s) for s in seeds[2:]]
if choice.profile == "tiny":
    print("\n".join(f"seed {s}: {cu.world.describe(im)}" for s, im in zip(seeds, images)))
cu.grid(images, cols=4, size=192, titles=[f"seed {s}" for s in seeds])

# %% [markdown]
# On `tiny` the seeds change where the shape sits and how big it is; on `sd15` the pose, the
# framing, the light.
#
# ### "The first image had only a horse, no astronaut"
#
# That is **one sample of a random process**, not the model's final answer. With SD 1.5 some seeds
# of this prompt give a horse alone, or a rider who is no astronaut: an astronaut on a horse is a
# rare sight in its training pictures. `tiny` misses too, on combinations it never saw in training
# (`cu.world.HELD_OUT`): asked for *"a purple square on a gray background"*, it sometimes leaves
# out the gray (the appendix's sweep found this prompt). The cell tries four seeds, then the same
# seeds with a clearer prompt; on `sd15`, the lesson's prompt and a more concrete one:

# %%
if choice.profile == "tiny":
    rare = "a purple square on a gray background"  # a held-out combination: tiny never saw it in training
    clearer = rare + ", gray background"  # say again what went missing
else:
    rare, clearer = prompt, "an astronaut in a white spacesuit riding a brown horse, photograph"
rows = {}
for text in (rare, clearer):
    rows[text] = [generate(s, text) for s in seeds]
    if choice.profile == "tiny":
        found = [cu.world.describe(im) for im in rows[text]]
        misses = "; ".join(f"seed {s}: {f}" for s, f in zip(seeds, found) if f != rare)
        print(f"{text!r}: {sum(f == rare for f in found)} of {len(seeds)} right" + (f" (missed: {misses})" if misses else ""))
cu.grid(rows[rare] + rows[clearer], cols=len(seeds), size=160,
        titles=[f"seed {s}" for s in seeds] + [f"seed {s}, clearer" for s in seeds])

# %% [markdown]
# What helps (compare the two rows; on `tiny` the printed lines count the hits):
# - **try several seeds** and keep a good one: its seed reproduces it;
# - **say it more clearly**: put first, or repeat, what went missing; be concrete (the second row);
# - **more steps** (`num_inference_steps`) give more detail, up to a point;
# - **raise the guidance** (`guidance_scale`: how hard the prompt steers the picture; for SD 1.5
#   9 or 10 instead of 7.5): the image follows the text more closely, at the cost of variety. Not on
#   `tiny`, where higher values do not help this prompt and 7.5 spoils the colours (its model card:
#   "7.5 over-saturates a model this small"); lesson 5 sweeps it.
#
# (More in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 01".)

# %% [markdown]
# ## 3. How long does one image take?
#
# The time on *this* machine, measured with `time.perf_counter` (the pipeline is warmed up by the
# images above), and the size of the model that took it:

# %%
start = time.perf_counter()
generate(4)
seconds = time.perf_counter() - start
steps = settings["num_inference_steps"]
print(f"one {settings['width']}x{settings['height']} image, {steps} steps, profile {choice.profile}, "
      f"on {cu.describe_device(choice.device)}: {seconds:.2f} s ({seconds / steps * 1000:.0f} ms per step)")
parameters = sum(p.numel() for m in (pipe.text_encoder, pipe.unet, pipe.vae) for p in m.parameters())
print(f"profile {choice.profile}: {parameters / 1e6:,.1f} M parameters (text encoder + UNet + VAE)")

# %% [markdown]
# For comparison, **reported** figures for SD 1.5 at 512x512 (not measured here): about 10 minutes
# per image on a laptop CPU (learners under the source lesson), roughly 5–10 s on a Colab T4 GPU
# (fp16, 50 steps). SD 1.5 has about a billion parameters and makes 512x512 pictures, so `tiny`'s time
# says nothing about its. To time SD 1.5's full-size architecture without downloading it, load
# `cu.load_pipeline("text2img", profile="sd15-random")` (random weights, real sizes: its pictures are
# noise, its time is real).

# %% [markdown]
# ## 4. "Found no NVIDIA driver" — which device am I on?
#
# That error (in the source lesson's code, at `pipeline.to(...)` with the NVIDIA GPU) means the
# Colab runtime has **no GPU**. Fix: *Runtime → Change runtime type → Hardware accelerator: T4 GPU*,
# then run the notebook again. The course does not crash there: it asks `cu.get_device()`, which
# picks the NVIDIA GPU if there is one, else Apple's GPU (`mps`), else the CPU — and without a GPU
# it uses the `tiny` model so that every lesson still runs.
#
# The environment variable `COURSE_DEVICE` overrides the choice (set it before starting Python, or
# with `%env COURSE_DEVICE=...` in the first cell). Forcing the NVIDIA GPU on a machine that has none
# gives a `CourseError` whose message says what to do. The cell tries it and puts the variable back:

# %%
from course_utils.device import DEVICES

print("cu.get_device():", cu.get_device(), "| this notebook:", choice)
print("COURSE_DEVICE accepts:", DEVICES)
saved = os.environ.get("COURSE_DEVICE")
os.environ["COURSE_DEVICE"] = DEVICES[0]  # the NVIDIA GPU
try:
    print("forced:", cu.get_device(), "- this machine has an NVIDIA GPU, so forcing it works")
except cu.CourseError as err:
    print("CourseError:", err)
finally:
    if saved is None:
        del os.environ["COURSE_DEVICE"]
    else:
        os.environ["COURSE_DEVICE"] = saved
print("back to:", cu.get_device())

# %% [markdown]
# ### "Does it run on my laptop? On a Mac?"
#
# Yes, with different expectations:
# - **Mac with Apple silicon**: `cu.get_device()` returns `mps` (Apple's GPU) and the course loads
#   float32 weights (safest on `mps`). SD 1.5 runs; reported times range from about half a minute to a
#   few minutes per image, depending on the chip.
# - **Any laptop CPU**: SD 1.5 works but is slow (the 10 minutes above). The `tiny` profile runs
#   every lesson in seconds, so you can learn the mechanics offline and run `sd15` where a GPU is.
# - Force a choice with `COURSE_PROFILE=sd15` / `tiny` and `COURSE_DEVICE=mps` / `cpu`.
#
# ### "Why doesn't the image match my text?"
# - The text goes through CLIP's text encoder, which reads at most 77 tokens (lesson 2) and was
#   trained on short image captions: concrete nouns, styles and scenes work; counts ("three cats"),
#   left/right and written words often fail.
# - Each image is one random sample: see "only a horse" above.
# - A negative prompt says what you do *not* want (lesson 5).
# - `tiny` knows only its world: six colours (red, orange, yellow, green, blue, purple), three shapes
#   (circle, square, triangle), a plain background. Ask it for an astronaut and you still get a shape.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1. The seed is only the starting noise.** Predict: if you draw the starting latents yourself,
# `torch.randn((1, pipe.unet.config.in_channels, h, w), generator=torch.Generator("cpu").manual_seed(2),
# dtype=pipe.unet.dtype)` with `h, w` the image size divided by `pipe.vae_scale_factor`, and pass them as
# `pipe(prompt, latents=..., **settings)` *without* a generator, do you get exactly the seed-2 image of
# the grid (`images[2]`)? Then run it and print the max pixel difference.

# %%
# your attempt

# %% [markdown]
# **2. Time against steps.** Predict the time of one image at a fifth and at half of
# `num_inference_steps`, from the time measured in section 3: proportional to the steps, or not? Then
# measure both with `time.perf_counter` and print seconds and milliseconds per step.

# %%
# your attempt

# %% [markdown]
# **3. Change one word.** Predict what stays the same when you keep seed 0 and change only one word of
# the prompt (on `tiny` the shape: circle, square, triangle; on `sd15` the animal or the style): the
# layout, the colours, nothing? Then generate three variants and show them in a grid.

# %%
# your attempt

# %% [markdown]
# ## Summary
# - Three lines: `from diffusers import DiffusionPipeline`, `pipe = DiffusionPipeline.from_pretrained(path, dtype=...).to(device)`,
#   `image = pipe(prompt).images[0]`; `cu.model_source` gives the path, `cu.load_pipeline` does it all for you.
# - A seed fixes the starting noise, and with it the image: same seed, same image; other seeds, other images.
# - On `tiny` the prompt names a colour, a shape and a background; `cu.world.describe` reads them back from the picture.
# - `guidance_scale` sets how hard the prompt steers: 1 = no extra push, 7.5 for SD 1.5, 3 for `tiny` (lesson 5 sweeps it).
# - A miss (a horse without an astronaut) is one random sample: try seeds, say it more clearly, and on SD 1.5 raise the guidance.
# - Time per image depends on the hardware: measure it (`time.perf_counter`); a GPU is what makes SD 1.5 practical.
# - No GPU ("Found no NVIDIA driver")? Change the Colab runtime, or learn on `tiny`; `COURSE_DEVICE` and `COURSE_PROFILE` override the choice.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# Yes, pixel for pixel: the pipeline's only use of the generator is to draw these latents (with
# `torch.randn` on the CPU, then moved to the device). Everything after that is deterministic.

# %%
factor = pipe.vae_scale_factor
shape = (1, pipe.unet.config.in_channels, settings["height"] // factor, settings["width"] // factor)
noise = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(seeds[2]), dtype=pipe.unet.dtype)
print("starting latents:", tuple(noise.shape), noise.dtype)
from_noise = pipe(prompt, latents=noise.to(pipe.device), **settings).images[0]
print("seed", seeds[2], "vs the same noise drawn by hand -> max pixel difference:", max_pixel_difference(images[2], from_noise))
cu.grid([images[2], from_noise], size=192, titles=[f"seed {seeds[2]}", "the same noise, by hand"])

# %% [markdown]
# ### Solution 2

# %%
timings = {steps: seconds}  # the full number of steps was measured in section 3
for n in (max(1, steps // 5), steps // 2):
    start = time.perf_counter()
    generate(0, num_inference_steps=n)
    timings[n] = time.perf_counter() - start
for n, t in sorted(timings.items()):
    print(f"{n:3d} steps: {t:6.2f} s  ({t / n * 1000:.0f} ms per step)")

# %% [markdown]
# The time grows about linearly with the number of steps: each step is one UNet call (on a batch of
# two latents: one with the prompt, one without - lesson 3), plus a fixed cost for the text encoder
# and the decoder, which is why a step looks dearer when there are few of them.

# %% [markdown]
# ### Solution 3

# %%
if choice.profile == "tiny":
    variants = ["a blue circle on a yellow background", "a blue square on a yellow background",
                "a blue triangle on a yellow background"]
else:
    variants = ["a watercolor painting of an astronaut riding a horse",
                "a photograph of an astronaut riding a camel", "a photograph of a knight riding a horse"]
pictures = []
for text in variants:
    generator = torch.Generator(device="cpu").manual_seed(0)
    pictures.append(pipe(text, generator=generator, **settings).images[0])
    print(f"{text!r}", "->", cu.world.describe(pictures[-1]) if choice.profile == "tiny" else "(look at the grid)")
cu.grid(pictures, cols=3, size=192, titles=variants)

# %% [markdown]
# The seed fixes the starting noise, so the layout (on `tiny`: where the shape sits and how big it is)
# tends to stay while the changed word changes. On `tiny`, a blue circle on yellow is one of the
# combinations **never shown in training** (`cu.world.HELD_OUT`): if the printed line still reads
# a blue circle on a yellow background, the model has combined words it learned separately.
