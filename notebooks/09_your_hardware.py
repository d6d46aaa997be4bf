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
# # Lesson 9 — Running it on your hardware
#
# "Does it run on my laptop?", "How long does one image take on Colab?", "CUDA out of memory on a
# 16 GB GPU", "Can I run it on a Mac?", "How do I download a model by hand?", "The Hub is
# unreachable from here". Learners asked all of these under the source lesson. This lesson
# answers each one by *measuring* on the machine you run it on: no quoted numbers.
#
# **What you will learn**
# - Time an image and its peak memory correctly (warm-up, synchronising the GPU, medians).
# - How much faster the course's settings are than diffusers' out-of-the-box call: half precision,
#   SDPA attention, a faster solver with fewer steps.
# - What each memory lever costs and saves: attention slicing, VAE slicing and tiling, CPU
#   offload, channels-last, `torch.compile`.
# - How long one 512x512 image takes here with SD 1.5's *full-size* architecture, and the fastest
#   CPU recipe: LCM in 4 steps plus a tiny autoencoder.
# - Why lessons run out of memory on a 16 GB T4, and the fix for each cause.
# - How to get the weights onto a machine with a slow or no connection to the Hub.
#
# On `tiny` (CPU) the lesson takes about a minute; set `COURSE_BENCH=full` for more repeats,
# `torch.compile` and a whole full-size image (several minutes on a CPU).

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about 2.9 GB
# from the Hugging Face Hub, again on every new runtime:
# SD 1.5 in fp16 + LCM-LoRA.
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
import course_utils as cu
from course_utils import full_size, levers, measuring, scores

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why
FULL = os.environ.get("COURSE_BENCH", "").strip().lower() == "full"
REPEATS = 5 if FULL else 2  # timed calls per measurement; the median is kept
SEEDS = (0, 1, 2, 3) if FULL else (0,)  # images per prompt when `tiny`'s pictures are scored
print("COURSE_BENCH=full:", FULL, "| repeats:", REPEATS, "| seeds:", SEEDS)

# %% [markdown]
# ## 1. What is this machine?
#
# `python -m course_utils doctor` checks a seat the way an instructor would before a workshop:
# device and driver, the dtype the course picks, free memory and disk, which profile it chooses
# and why, whether each SD 1.5 repository is local, cached, reachable or missing, and the library
# versions. Run it whenever something does not work; it is the first thing to paste into a question.

# %%
from course_utils.commands import doctor

doctor.main()  # the same as `python -m course_utils doctor` in a terminal

# %% [markdown]
# ## 2. Measuring time and memory correctly
#
# Three things make a timing honest:
# 1. **Warm up.** The first call picks kernels, allocates buffers and (on CUDA) initialises
#    libraries: it is slower than every call after it. Time the calls after it.
# 2. **Synchronise.** A GPU runs asynchronously: Python gets control back before the GPU has
#    finished. Call `torch.cuda.synchronize()` before reading the clock.
# 3. **Repeat and take the median.** Other programs share the machine; one slow call should not
#    decide.
#
# Memory: on CUDA `torch.cuda.max_memory_allocated()` (reset before each measurement) is the
# peak of the tensors PyTorch held: weights plus the largest activations. On a Linux CPU the
# peak resident memory of the whole process (`VmHWM`, the "high water mark" Linux keeps in
# `/proc/self/status`) is the closest number: Python, the
# libraries and every model still loaded count too, so compare rows with each other. `measuring.measure`
# does exactly these steps; read it with `measuring.measure??`.

# %%
import time

import torch

device = choice.device
settings = cu.default_settings(choice.profile)
size = dict(height=settings["height"], width=settings["width"])
prompt = cu.prompt("main", choice.profile)
pipe = cu.load_pipeline("text2img")
pipe.set_progress_bar_config(disable=True)


def one_image(**kwargs):
    """One call of the pipeline, always from seed 0, so every setting draws from the same start."""
    return pipe(prompt, generator=torch.Generator().manual_seed(0), **size, **kwargs).images[0]


start = time.perf_counter()
one_image()  # the warm-up call
measuring.synchronize(device)
print(f"first call: {time.perf_counter() - start:.2f} s")
row = measuring.measure(one_image, device, "speed", "default settings", repeats=REPEATS, warmup=0)
print(f"after it:   {row.seconds:.2f} s (median of {[round(t, 2) for t in row.times]}), peak memory {row.peak_gib} GiB")

# %% [markdown]
# ## 3. Out of the box vs the course's settings
#
# `DiffusionPipeline.from_pretrained(...)` followed by `pipe(prompt)` runs in float32 with the
# scheduler the model was saved with (PNDM for SD 1.5) for 50 steps. The course's settings:
# - **half precision** (`dtype=torch.float16`) on a CUDA GPU: half the memory traffic, and tensor
#   cores; a CPU has no fast float16, so it stays in float32 there;
# - **SDPA attention**: PyTorch 2's `scaled_dot_product_attention`. With PyTorch 2 it is already
#   diffusers' default attention processor (`AttnProcessor2_0`), so both calls below use it - the
#   next cell prints which one is in use; older set-ups needed xFormers for the same effect;
# - **a faster solver**: DPM-Solver++ reaches a clean image in about 20 steps instead of 50;
# - the profile's guidance scale (`settings["guidance_scale"]`: 7.5 on SD 1.5, the pipeline's default;
#   3 on `tiny`). It does not change the time (both calls run the unconditional half), but it changes
#   the picture, so the scores below compare it separately.
#
# Same size, same seed, same run:

# %%
from diffusers import DPMSolverMultistepScheduler

loaded_scheduler = pipe.scheduler
print("attention processor:", type(next(iter(pipe.unet.attn_processors.values()))).__name__)

kw = levers.out_of_the_box(pipe, device, loaded_scheduler)  # float32, the loaded scheduler, 50 steps
image_out_of_box = one_image(**kw)  # the warm-up call; its image is shown below
out_of_box = measuring.measure(lambda: one_image(**kw), device, "speed", "out of the box", REPEATS, warmup=0,
                               note=f"{pipe.unet.dtype}, {type(pipe.scheduler).__name__}, {kw['num_inference_steps']} steps, guidance 7.5")

kw = levers.recommended(pipe, device)  # half precision where the device has it, SDPA, DPM-Solver++, 20 steps
kw["guidance_scale"] = settings["guidance_scale"]
image_recommended = one_image(**kw)  # the warm-up call
recommended = measuring.measure(lambda: one_image(**kw), device, "speed", "recommended", REPEATS, warmup=0,
                                note=f"{pipe.unet.dtype}, SDPA, {type(pipe.scheduler).__name__}, {kw['num_inference_steps']} steps")
for r in (out_of_box, recommended):
    print(f"{r.name:15} {r.seconds:7.3f} s  peak {r.peak_gib} GiB  ({r.note})")
print(f"speed-up: {out_of_box.seconds / recommended.seconds:.1f}x")

# %% [markdown]
# Faster is only useful if the picture survives. Left: out of the box; right: recommended
# (enlarged without smoothing if the images are small).

# %%
cu.grid([image_out_of_box, image_recommended], min_width=256)

# %% [markdown]
# On `tiny` we can also *score* a setting: `scores.drawn_right` draws every colour and shape of its
# world and reads the pictures back with `cu.world.classify`. One change at a time: first the solver
# and its number of steps at the same guidance, then the guidance with the same solver.

# %%
if choice.profile == "tiny":
    g = settings["guidance_scale"]
    pipe.scheduler = loaded_scheduler
    score_50 = scores.drawn_right(pipe, SEEDS, num_inference_steps=50, guidance_scale=g, **size)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    score_20 = scores.drawn_right(pipe, SEEDS, **kw, **size)  # 20 steps, guidance g
    score_default_g = scores.drawn_right(pipe, SEEDS, num_inference_steps=20, guidance_scale=7.5, **size)
    print(f"drawn right, guidance {g}: {type(loaded_scheduler).__name__} 50 steps {score_50:.0%}, "
          f"DPM-Solver++ 20 steps {score_20:.0%}")
    print(f"drawn right, DPM-Solver++ 20 steps: guidance 7.5 {score_default_g:.0%}, guidance {g} {score_20:.0%}")
else:
    print("On sd15 judge with your eyes: the two images above.")

# %% [markdown]
# ## 4. Memory levers, one at a time
#
# Each lever below is switched on alone, on top of the recommended settings, measured, and
# switched off again. What to expect (diffusers' optimisation guide says the same):
# - **attention slicing** computes attention in pieces: less memory for the attention matrix,
#   but it replaces SDPA, which is already memory-efficient, so on PyTorch 2 it mostly costs time;
# - **VAE slicing** decodes a batch one image at a time: it only matters for batches;
# - **VAE tiling** decodes a large image in overlapping tiles: it is what lets a 1024x1024
#   (or larger) decode fit, at the price of time and faint seams that the overlap blends away;
# - **model CPU offload** keeps each model (text encoder, UNet, VAE) in CPU memory until it is
#   used; **sequential CPU offload** does it layer by layer: the least GPU memory, the slowest;
#   both need a GPU to offload *from*;
# - **channels-last** stores images as height x width x channels, a layout convolution kernels
#   may prefer; **`torch.compile`** turns the UNet into fused kernels after a long first call.

# %% [markdown]
# The levers are one table, `levers.LEVERS` (`python -m course_utils bench` measures the same rows). Each
# row is a name, a switch on and a switch off; `levers.measure_lever` switches one on, measures one
# call and switches it off again. Read both with `levers.LEVERS??` and `levers.measure_lever??`.

# %%
def images(n=1):
    """One call of the pipeline: `n` images of the prompt from seed 0, in the recommended settings."""
    return pipe(prompt, num_images_per_prompt=n, generator=torch.Generator().manual_seed(0), **size, **kw)


# No warm-up call: the pipeline has run many times by now (a lever that compiles something needs one: see below).
rows = [levers.measure_lever(lever, pipe, images, device, REPEATS, warmup=0) for lever in levers.LEVERS]
if FULL:
    rows.append(levers.compile_row(pipe, device, images, REPEATS))


def number(value, spec=".3f"):
    """A number for the table, or '-' where there is none (not measured, or not reported by the device)."""
    return "-" if value is None else format(value, spec)


print(f"{'setting':28} {'s/call':>8} {'peak GiB':>9} {'added GiB':>9}  note")
for r in rows:
    print(f"{r.name:28} {number(r.seconds):>8} {number(r.peak_gib):>9} {number(r.added_gib):>9}  {r.note}")

# %% [markdown]
# VAE tiling shows only on a decode larger than one tile. `levers.big_decode_rows` decodes a latent
# twice the profile's image side (1024x1024 pixels on SD 1.5, 128x128 on `tiny`) without and with
# `vae.enable_tiling()`, and measures how far tiling moves the pixels.

# %%
big = levers.big_decode_rows(pipe.vae, device, 2 * settings["height"], REPEATS)
for r in big:
    print(f"{r.name:32} {number(r.seconds):>8} s  peak {number(r.peak_gib)} GiB  added {number(r.added_gib)} GiB  {r.note}")
rows += big

# %% [markdown]
# CPU offload last: it needs a GPU to offload *from*, and it moves the weights around.

# %%
offload = [levers.measure_lever(lever, pipe, images, device, REPEATS, warmup=0) for lever in levers.OFFLOAD]
for r in offload:  # on a CPU: "not measured" and why
    print(f"{r.name}: {number(r.seconds, '.2f')} s, peak {number(r.peak_gib)} GiB  {r.note}")
rows += offload

# %% [markdown]
# Time against memory, one point per setting: down and to the left is better. On a CPU the
# memory axis is the whole process, so the points sit close together; on a GPU the levers spread out.

# %%
import matplotlib.pyplot as plt

measured = [r for r in rows if r.seconds is not None and r.peak_gib is not None]
if measured:
    fig, ax = plt.subplots(figsize=(9, 4))
    for r, marker in zip(measured, "osD^v<>ph*X"):
        ax.scatter(r.seconds, r.peak_gib, marker=marker, s=60, label=r.name)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # names beside, not on top of, the points
    ax.set_xlabel("seconds per call (median)")
    ax.set_ylabel("peak memory (GiB)")
    ax.set_title(f"memory levers on {cu.describe_device(device)}, profile {choice.profile}")
    plt.show()
else:
    print("This device reports no peak memory (MPS, or a CPU outside Linux): compare the times only.")

# %% [markdown]
# ## 5. One image with SD 1.5's full-size architecture, and the laptop recipe
#
# "On my CPU one image took about 10 minutes" - is that right, and what can be done? The
# `sd15-random` profile builds SD 1.5's real architecture (860 M parameters in the UNet) with random
# weights: the same multiplications, so the same time as the real model, without downloading
# anything. We time each part and add up a whole image. The tiny autoencoder has the
# architecture of TAESD (`AutoencoderTiny`, 2.4 M parameters, a drop-in VAE decoder); with random
# weights here, we see its *time*, not its pictures. The quick run times the decodes on a 256x256
# image and scales them to 512x512 by their counted FLOPs (floating-point operations: each
# multiplication and addition counts one; `full_size.part_flops` counts them without running anything);
# `COURSE_BENCH=full` times 512x512 itself.

# %%
# quick run: each part once, no warm-up call (a first call is a little slower), the decodes at 256x256
# scaled to 512x512 by their FLOPs, a guided step taken as two unguided ones (as on a CPU)
parts, seconds = full_size.full_size_parts(device, repeats=3 if FULL else 1, warmup=1 if FULL else 0,
                                       guidance_batch=FULL or device != "cpu", decode_size=512 if FULL else 256)
for r in parts:
    print(f"{r.name:34} {number(r.seconds, '8.2f')} s  {r.note}")
print()
for name, s in full_size.estimates(seconds).items():
    print(f"one 512x512 image, {name}: {s:.1f} s = {s / 60:.1f} min")

# %% [markdown]
# The out-of-the-box call pays 51 UNet steps at batch 2 (the prompt and the empty prompt of
# classifier-free guidance; PNDM adds one warm-up step) plus one big VAE decode. The laptop recipe
# pays 4 steps at batch 1 and a decode by the tiny autoencoder. On SD 1.5 it takes **LCM-LoRA**
# (`latent-consistency/lcm-lora-sdv1-5`), a LoRA distilled so that SD 1.5 makes an image in 2-8
# steps with `LCMScheduler` and guidance about 1 (no unconditional half). `tiny` has no LCM-LoRA;
# its world is simple, so see (and score) what 4 LCM steps draw without one.

# %%
from diffusers import LCMScheduler

from course_utils.models import hub

dpm = pipe.scheduler
# diffusers notes that `skip_prk_steps` (a PNDM setting in this config) means nothing to LCMScheduler and
# ignores it: harmless, the LCM schedule needs no such setting.
pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
if choice.profile == "sd15":
    pipe.load_lora_weights(hub.lora_source(), adapter_name="lcm")  # downloads it first if needed
lcm = dict(num_inference_steps=4, guidance_scale=1.0)
lcm_row = measuring.measure(lambda: one_image(**lcm), device, "speed", "LCM, 4 steps", REPEATS)
print(f"LCM, 4 steps: {lcm_row.seconds:.3f} s vs recommended {recommended.seconds:.3f} s per image")
if choice.profile == "tiny":
    print(f"drawn right with 4 LCM steps and no LCM-LoRA: {scores.drawn_right(pipe, SEEDS, **lcm, **size):.0%}")
image_lcm = one_image(**lcm)
if choice.profile == "sd15":
    pipe.unload_lora_weights()
pipe.scheduler = dpm
cu.grid([image_recommended, image_lcm], min_width=256)

# %% [markdown]
# With `COURSE_BENCH=full` the next cell makes a *whole* 512x512 image at full size with that recipe
# (`sd15-random`, LCM, 4 steps, no guidance, the tiny autoencoder as the pipeline's VAE) and times it
# end to end: the added-up estimate above, checked.

# %%
if FULL:
    laptop = full_size.laptop_row(device, repeats=3)
    print(f"{laptop.name}: {laptop.seconds:.1f} s ({laptop.note})")
else:
    print("Skipped: set COURSE_BENCH=full to run it (about half a minute per image on a 2-core CPU).")

# %% [markdown]
# ## 6. Will it fit my 16 GB T4? "CUDA out of memory"
#
# Weights take (number of parameters) x (bytes per parameter): 4 in float32, 2 in float16. We can
# count SD 1.5's parameters without allocating anything, on PyTorch's `meta` device:

# %%
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from course_utils.models import configs

with torch.device("meta"):
    parts_full = {
        "text encoder": CLIPTextModel(CLIPTextConfig(**configs.SD15_TEXT_ENCODER)),
        "UNet": UNet2DConditionModel.from_config(configs.SD15_UNET),
        "VAE": AutoencoderKL.from_config(configs.SD15_VAE),
    }
params = {name: sum(p.numel() for p in m.parameters()) for name, m in parts_full.items()}
total = sum(params.values())
for name, n in params.items():
    print(f"{name:13} {n / 1e6:6.0f} M parameters  float32 {4 * n / 2**30:.2f} GiB  float16 {2 * n / 2**30:.2f} GiB")
print(f"{'one pipeline':13} {total / 1e6:6.0f} M parameters  float32 {4 * total / 2**30:.2f} GiB  float16 {2 * total / 2**30:.2f} GiB")

# %% [markdown]
# So one SD 1.5 pipeline is about 4 GiB in float32 and 2 GiB in float16 (the safety checker adds
# 0.6 GiB in float16). What fills a 16 GB Colab GPU, each with its fix (the source lesson ran out of
# memory there):
#
# | cause | fix |
# |---|---|
# | several pipelines loaded with `from_pretrained`, each with its own copy of the weights (text-to-image, image-to-image, upscaler, ...) | `StableDiffusionImg2ImgPipeline.from_pipe(pipe)` shares the components; or `del pipe; gc.collect(); torch.cuda.empty_cache()` before loading the next |
# | float32 weights | `dtype=torch.float16` (and `variant="fp16"` to download half the bytes) |
# | a big image or batch | VAE tiling / slicing (section 4), smaller batches |
#
# `from_pipe` really shares: the new pipeline's UNet *is* the old one, and no memory is added.
# Pass `dtype=`: without it `from_pipe` casts the shared components to float32, its default, which
# on a GPU *doubles* them (diffusers then logs a harmless note about modules kept in float32).

# %%
from diffusers import StableDiffusionImg2ImgPipeline

before = measuring.memory_in_use(device)
img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe, dtype=choice.dtype)
after = measuring.memory_in_use(device)
print("same UNet object:", img2img.unet is pipe.unet, "| same weights in memory:",
      img2img.unet.conv_in.weight.data_ptr() == pipe.unet.conv_in.weight.data_ptr())
if before is not None:
    print(f"memory added by from_pipe: {(after - before) / 2**20:.1f} MiB")
del img2img

# %% [markdown]
# **Every lesson on a T4, estimated without a GPU.** A GPU answers "will it fit?" by running the work
# and reading `torch.cuda.max_memory_allocated()`. Without one we can still count:
# `course_utils.gpu_memory` builds SD 1.5's models from their configs as *fake* tensors (a shape and a
# dtype, no numbers, no memory), runs a lesson's heaviest cell on them in float16 at 512x512, and adds up
# every tensor PyTorch creates, from creation until it is freed (rounded as CUDA's allocator rounds).
# First the method against the three peaks measured once on a GPU (an H100, float16, 512x512, no
# safety checker):

# %%
import json

from course_utils import gpu_memory
from course_utils.paths import ROOT

for check in gpu_memory.check_rows():
    print(f"{check['what']:24} measured on a GPU {check['measured_gib']:.1f} GiB | estimated here "
          f"{check['estimate_gib']:.2f} GiB ({check['error']:+.0%})")

# %% [markdown]
# The count comes out below each measurement. It cannot see what libraries allocate for themselves
# on a GPU, such as cuDNN's workspace for the VAE decoder's convolutions (our reading of the gap, not
# measured); the CUDA context (a few hundred MB) is outside both numbers. So we keep about 1 GiB
# spare: a lesson fits a 16 GB T4 (15 GiB for PyTorch) below `gpu_memory.T4_LIMIT_GIB`, an 8 GB card
# below `gpu_memory.EIGHT_GB_LIMIT_GIB`. Every lesson's heaviest cell, as `python -m course_utils
# gpu-memory` estimated it (half a minute; it writes `docs/gpu-memory.json`):

# %%
estimates = json.loads((ROOT / "docs" / "gpu-memory.json").read_text())
print(f"limits: T4 {estimates['t4_limit_gib']} GiB, 8 GB card {estimates['eight_gb_limit_gib']} GiB")
print(f"{'lesson':6} {'peak GiB':>8}  {'T4':4} {'8 GB':4}  heaviest cell: what is on the GPU, what runs")
for r in estimates["lessons"]:
    print(f"{r['lesson']:6} {r['peak_gib']:8.2f}  {'fits' if r['fits_t4'] else 'NO':4} {'fits' if r['fits_8gb'] else 'NO':4}  "
          f"{r['where']}: {r['what']}")

# %% [markdown]
# Estimates, not measurements. Peak GPU memory *measured* per lesson on SD 1.5 comes from
# `make gpu-check` (it runs each notebook on a GPU and records `torch.cuda.max_memory_allocated`, next
# to these estimates); its report, when one has been made, is `docs/gpu-report.json`:

# %%
report = ROOT / "docs" / "gpu-report.json"
if report.exists():
    data = json.loads(report.read_text())
    print("measured on:", data["machine"].get("gpu"), "on", data["date"])
    for r in data["rows"]:
        print(f"{r['notebook']:28} {r['profile']:6} {r['seconds']:7.1f} s  peak {r['peak_gib']} GiB  {r['status']}")
else:
    print("No GPU report in this copy of the course yet: run `make gpu-check` on a CUDA machine to make one.")

# %% [markdown]
# ## 7. "Found no NVIDIA driver"
#
# That message means PyTorch sees no CUDA GPU: on Colab, a runtime without a GPU. The course never
# writes the device name itself; it asks `cu.get_device()`. Forcing CUDA where there is none gives the
# course's message instead of PyTorch's:

# %%
os.environ["COURSE_DEVICE"] = cu.DEVICES[0]  # the course's devices, in order of preference: CUDA first
print("COURSE_DEVICE =", os.environ["COURSE_DEVICE"])
try:
    print("CUDA is here:", cu.describe_device(cu.get_device()))
except cu.CourseError as err:
    print("CourseError:", err)
finally:
    del os.environ["COURSE_DEVICE"]

# %% [markdown]
# ## 8. Can I run it on a Mac?
#
# Yes, on Apple silicon through PyTorch's `mps` device; `cu.get_device()` picks it by itself.
# What diffusers' documentation recommends there (not measured by this course - no Mac here):
# PyTorch 2 or later, `pipe.to("mps")`, and `pipe.enable_attention_slicing()` when the Mac has less
# than 64 GB of memory (performance there is very sensitive to memory pressure); tensors larger than
# 2**32 elements are not supported. The course loads float32 on MPS (`cu.get_dtype("mps")`), and
# `cu.load_pipeline` turns attention slicing on there below 64 GB of memory (it prints a line when it does).
# On this machine:

# %%
print("MPS available here:", torch.backends.mps.is_available(), "| the course would use:", cu.describe_device(cu.get_device()),
      "in", cu.get_dtype(cu.get_device()))

# %% [markdown]
# ## 9. Downloading a model by hand; a Hub that is unreachable
#
# A pipeline is a folder of configs and weights. `snapshot_download` fetches it into the Hub cache or
# into any folder, and `dry_run=True` only lists what would come, with sizes. The course downloads
# only what a pipeline loads, chosen from the repository's own file list (`weights.download_plan`):
# configs, tokenizer, and per component the `.fp16` files on a GPU where the repository has them,
# safetensors where it has them, else the pickled `.bin` files older repositories hold; never the
# big single-file checkpoints at the top level.

# %%
from huggingface_hub import HfApi, snapshot_download

from course_utils.models import weights

repo = hub.repo_id("text2img")
print("repository:", repo, "| HF_ENDPOINT:", os.environ.get("HF_ENDPOINT", "https://huggingface.co (default)"))
try:
    listed = [s.rfilename for s in HfApi().model_info(repo, revision="main", timeout=10).siblings]
    plan, variant = weights.download_plan(listed, "fp16")
    print(f"{len(listed)} files in the repository; {len(plan)} in the plan, variant={variant}")
    files = snapshot_download(repo, allow_patterns=plan, dry_run=True)
    for f in files:
        print(f"  {f.filename:60} {(f.file_size or 0) / 2**20:9.1f} MiB")
    print(f"total {sum(f.file_size or 0 for f in files) / 2**30:.2f} GiB")
except Exception as err:  # no network, a blocked Hub, HF_HUB_OFFLINE=1 ...
    print(hub.course_error(repo, err))

# %% [markdown]
# To move the weights to a server with a slow connection (or a room without one), download once
# where the Hub is fast, copy the folder, and point the course at it:
#
# ```bash
# python -m course_utils download sd15 --to models      # every repository the lessons use
# rsync -a models/ server:/data/models/                  # or a USB disk
# export COURSE_MODELS_DIR=/data/models                  # on the server; nothing else changes
# ```
#
# Where the Hub is blocked but a mirror is reachable, set `HF_ENDPOINT` to it (every Hugging Face
# library reads it). With neither, the course runs on `tiny`, which needs no download at all.
# `docs/instructors.md` shows how to serve a whole room from one machine.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1.** Predict: how many times more work is one full-size UNet step at 512x512 than at 256x256
# (4x the pixels)? Exactly 4, less, or more? Then count it with `full_size.unet_flops(size)`.

# %%
# your attempt

# %% [markdown]
# **2.** Predict how many GiB of weights the source lesson held on the GPU when it loaded the
# text-to-image, image-to-image and inpainting pipelines in float32, each with `from_pretrained`
# (the inpainting UNet differs only in its first layer). Then compute it from `params` above, and
# compare with float16 and `from_pipe`.

# %%
# your attempt

# %% [markdown]
# **3.** Predict, for the laptop recipe at full size on this machine: which costs more, the 4 UNet
# steps or SD's VAE decode? And how large a share of the image is left for the decode once the tiny
# autoencoder replaces it? Then compute both from `seconds` (section 5).

# %%
# your attempt

# %% [markdown]
# ## Summary
#
# - Time a call after a warm-up call, synchronise the GPU, repeat and keep the median; read peak
#   memory with `torch.cuda.max_memory_allocated()` (or the process's peak on a CPU).
# - Half precision on a GPU, SDPA attention and DPM-Solver++ at 20 steps: measured above against
#   diffusers' out-of-the-box call, same size and run. LCM-LoRA at 4 steps is the laptop option.
# - A full-size image costs (steps) x (one UNet step) + one VAE decode; on a CPU the decode is a
#   large share, and a tiny autoencoder removes most of it.
# - Memory levers trade time for memory; attention slicing is not worth it with SDPA; VAE tiling is
#   what makes large decodes fit; CPU offload is for GPUs with little memory.
# - Out of memory on a 16 GB T4 comes from several float32 pipelines at once: float16 and
#   `from_pipe` fix it.
# - Weights travel as folders: `snapshot_download`, `COURSE_MODELS_DIR`, `HF_ENDPOINT`; `tiny`
#   needs nothing.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# More than 4. Convolutions and the projections scale with the number of pixels (4x), but
# self-attention compares every latent position with every other one, which grows with the *square*
# of the pixels (16x); so the ratio lies above 4, by how much depends on attention's share.

# %%
small, large = full_size.unet_flops(256), full_size.unet_flops(512)
print(f"256x256: {small / 1e9:.0f} GFLOP, 512x512: {large / 1e9:.0f} GFLOP, ratio {large / small:.2f}")

# %% [markdown]
# ### Solution 2
# Three full copies of text encoder, UNet and VAE (the safety checker would add more):

# %%
T4_CAPACITY_GIB = 14.75  # what PyTorch's out-of-memory message reports as a Colab T4's total capacity
for dtype_name, nbytes in (("float32", 4), ("float16", 2)):
    print(f"three pipelines, {dtype_name}: {3 * nbytes * total / 2**30:.1f} GiB;"
          f" one shared by from_pipe: {nbytes * total / 2**30:.1f} GiB (a T4: {T4_CAPACITY_GIB} GiB)")

# %% [markdown]
# The weights of three float32 pipelines alone stay below a T4's capacity: the source lesson's error
# came from the weights *plus* what its calls allocated on top (activations, the decoded images, the
# upscaler) and whatever the notebook still held. This is a reconstruction from the weights, not a
# measurement; section 6's table estimates whole cells.

# %% [markdown]
# ### Solution 3
# The parts measured in section 5, added up both ways:

# %%
steps = 4 * seconds["UNet step, batch 1 (no guidance)"]
for decoder in ("VAE decode", "tiny autoencoder decode"):
    decode = seconds[decoder]
    print(f"4 steps {steps:6.1f} s + {decoder} {decode:6.1f} s: the decode is {decode / (steps + decode):.0%} of the image")
