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
# Learners asked: "Does it run on my laptop?", "How long does one image take on Colab?", "CUDA out of
# memory on a 16 GB GPU", "Can I run it on a Mac?", "How do I download a model by hand?", "The Hub is
# unreachable from here". This lesson answers each one, measuring on the machine you run it on.
#
# **What you will learn**
# - Time an image and its peak memory correctly (warm-up, synchronising the GPU, medians).
# - How much faster the course's settings are than diffusers' out-of-the-box call: half precision,
#   SDPA attention (PyTorch's fused attention), a faster solver with fewer steps.
# - What each memory lever costs and saves: attention slicing, VAE slicing and tiling, CPU
#   offload, channels-last, `torch.compile`.
# - How long one 512x512 image takes here with SD 1.5's *full-size* architecture, and the fastest
#   CPU recipe: LCM in 4 steps plus a tiny autoencoder.
# - Why lessons run out of memory on a 16 GB T4, and the fix for each cause.
# - How to get the weights onto a machine with a slow or no connection to the Hub.
#
# On `tiny` (CPU) the lesson takes a few minutes; `COURSE_BENCH=full` adds repeats, `torch.compile`
# and a whole full-size image.
#
# Terms are defined where they first appear, and all in one place in the [glossary](../docs/glossary.md).

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
import time

import torch

import course_utils as cu
from course_utils import full_size, levers, measuring, scores

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why
BENCH = os.environ.get("COURSE_BENCH", "").strip().lower()  # "full": more repeats and seeds; "quick" (tests): 1
FULL = BENCH == "full"
REPEATS = {"full": 5, "quick": 1}.get(BENCH, 2)  # timed calls per measurement; the median is kept
SEEDS = (0, 1, 2, 3) if FULL else (0,)  # images per prompt when `tiny`'s pictures are scored
print("COURSE_BENCH:", BENCH or "(not set)", "| repeats:", REPEATS, "| seeds:", SEEDS)

# %% [markdown]
# ## 1. What is this machine?
#
# The course runs on an NVIDIA GPU (CUDA), on Apple silicon (PyTorch's `mps` device) or on the CPU,
# and never writes the device's name itself: it asks `cu.get_device()`. "Found no NVIDIA driver" means
# PyTorch sees no CUDA GPU (on Colab: a runtime without one). Forcing CUDA where there is none gives
# the course's message instead of PyTorch's:

# %%
device = choice.device
print("the course uses:", cu.describe_device(device), "in", choice.dtype,
      "| CUDA:", torch.cuda.is_available(), "| MPS:", torch.backends.mps.is_available())
os.environ["COURSE_DEVICE"] = cu.DEVICES[0]  # the course's devices, in order of preference: CUDA first
try:
    print("CUDA is here:", cu.describe_device(cu.get_device()))
except cu.CourseError as err:
    print("CourseError:", err)
finally:
    del os.environ["COURSE_DEVICE"]

# %% [markdown]
# **On a Mac** with Apple silicon, `cu.get_device()` picks `mps` by itself. diffusers' documentation
# recommends (not measured by this course: no Mac here) PyTorch 2 or later and attention slicing below
# 64 GB of memory; the course loads float32 on MPS and `cu.load_pipeline` turns attention slicing on
# there. Before a workshop, `python -m course_utils doctor` (in a terminal) checks a whole seat: device,
# memory, disk, where each model would come from, library versions.

# %% [markdown]
# ## 2. Measuring time and memory correctly
#
# 1. **Warm up.** The first call picks kernels and allocates buffers: it is slower. Time the calls after it.
# 2. **Synchronise.** A GPU runs asynchronously: call `torch.cuda.synchronize()` before reading the clock.
# 3. **Repeat and take the median**, so that one slow call does not decide.
#
# Peak memory: on CUDA `torch.cuda.max_memory_allocated()` (reset before each measurement), the
# tensors PyTorch held. On a Linux CPU, the process's peak resident memory, `VmHWM` ("high water
# mark", in `/proc/self/status`): Python, the libraries and every loaded model count too, so compare
# rows with each other. `measuring.measure` does these steps (read it with `measuring.measure??`).

# %%
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
# `DiffusionPipeline.from_pretrained(...)` then `pipe(prompt)` runs in float32 with the scheduler the
# model was saved with (PNDM for SD 1.5), 50 steps, guidance 7.5. The course's settings:
# - **half precision** (`dtype=torch.float16`) on a CUDA GPU: half the memory traffic, and tensor
#   cores (a CPU has no fast float16, so it stays in float32);
# - **SDPA attention**, PyTorch 2's `scaled_dot_product_attention`, already diffusers' default
#   (`AttnProcessor2_0`, printed below), so both calls use it;
# - **a faster solver**: DPM-Solver++ reaches a clean image in about 20 steps instead of 50;
# - the profile's guidance scale (`settings["guidance_scale"]`), which changes the picture, not the time.
#
# On Colab with `sd15` the "recommended" line is the answer to "how long does one image take on
# Colab?": one 512x512 SD 1.5 image on the T4 you have.

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
cu.grid([image_out_of_box, image_recommended], min_width=256, titles=["out of the box", "recommended"])

# %% [markdown]
# Faster is only useful if the picture survives. On `tiny` we can *score* a setting:
# `scores.drawn_right` draws every colour and shape of its world and reads the pictures back. One
# change at a time: first the solver and its number of steps at the same guidance, then the guidance
# with the same solver.

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
# Each lever alone, on top of the recommended settings. What diffusers' optimisation guide says to expect:
# - **attention slicing** computes attention in pieces; it replaces SDPA, already memory-efficient,
#   so on PyTorch 2 it mostly costs time;
# - **VAE slicing** decodes a batch one image at a time: it only matters for batches;
# - **VAE tiling** decodes a large image in overlapping tiles (faint seams, more time): it lets a
#   1024x1024 decode fit, so it gets a decode of twice the image's side;
# - **channels-last** stores images as height x width x channels, a layout convolutions may prefer;
#   **`torch.compile`** (`COURSE_BENCH=full`) fuses the UNet into kernels after a long first call;
# - **model CPU offload** keeps each model in CPU memory until it is used, **sequential CPU offload**
#   layer by layer: the least GPU memory, the slowest; both need a GPU, and run last.
#
# The levers are one table, `levers.LEVERS` (and `levers.OFFLOAD`), that `python -m course_utils bench`
# measures too; `levers.measure_lever` switches one on, measures, switches it off (read both with `??`).

# %%
def images(n=1):
    """One call of the pipeline: `n` images of the prompt from seed 0, in the recommended settings."""
    return pipe(prompt, num_images_per_prompt=n, generator=torch.Generator().manual_seed(0), **size, **kw)


def number(value, spec=".3f"):
    """A number for the table, or '-' where there is none (not measured, or not reported by the device)."""
    return "-" if value is None else format(value, spec)


# No warm-up call: the pipeline has run many times by now (compiling needs one: compile_row makes it).
rows = [levers.measure_lever(lever, pipe, images, device, REPEATS, warmup=0) for lever in levers.LEVERS]
rows += levers.big_decode_rows(pipe.vae, device, 2 * settings["height"], REPEATS)
if FULL:
    rows.append(levers.compile_row(pipe, device, images, REPEATS))
rows += [levers.measure_lever(lever, pipe, images, device, REPEATS, warmup=0) for lever in levers.OFFLOAD]
print(f"{'setting':28} {'s/call':>8} {'peak GiB':>9} {'added GiB':>9}  note")
for r in rows:
    print(f"{r.name:28} {number(r.seconds):>8} {number(r.peak_gib):>9} {number(r.added_gib):>9}  {r.note}")

# %% [markdown]
# ## 5. One image with SD 1.5's full-size architecture, and the laptop recipe
#
# "On my CPU one image took about 10 minutes": is that right, and what can be done? The `sd15-random`
# profile builds SD 1.5's real architecture with random weights: the same multiplications, so the
# same time as the real model, with nothing to download. We time each part and add up a whole image.
# The tiny autoencoder has the architecture of TAESD (`AutoencoderTiny`, a drop-in VAE decoder); with
# random weights we see its *time*, not its pictures. The quick run times the decodes at 256x256 and
# scales them to 512x512 by their FLOPs (floating-point operations: each multiplication or addition
# counts one; a GFLOP is 10⁹ of them, TFLOP/s 10¹² per second), which `full_size.part_flops` counts
# without running anything; `COURSE_BENCH=full` times 512x512 itself.

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
# Out of the box pays 51 UNet steps at batch 2 (prompt and empty prompt; PNDM adds a warm-up step)
# plus one big VAE decode. The laptop recipe pays 4 steps at batch 1 and the tiny autoencoder's
# decode. On SD 1.5 it takes **LCM-LoRA** (`latent-consistency/lcm-lora-sdv1-5`), a LoRA distilled so
# that SD 1.5 makes an image in 2-8 steps with `LCMScheduler` and guidance about 1 (no unconditional
# half). `tiny` has no LCM-LoRA: the next cell shows and scores what 4 LCM steps draw without one, and
# with `COURSE_BENCH=full` times a *whole* 512x512 image at full size with the recipe, end to end.

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
if FULL:
    laptop = full_size.laptop_row(device, repeats=3)
    print(f"{laptop.name}: {laptop.seconds:.1f} s ({laptop.note})")
cu.grid([image_recommended, image_lcm], min_width=256, titles=["recommended", "LCM, 4 steps"])

# %% [markdown]
# **Measured by the course** (cited, not from this run): on its 2-core CI CPU, about 718 s for one
# out-of-the-box full-size image (added up from its parts) and 28.4 s for the laptop recipe, timed end
# to end (`docs/benchmarks.md`); on an H100 GPU in float16, 0.84 s for a 512x512 image of SD 1.5's
# architecture at 25 steps (README, "Checked on a GPU"). A Colab T4 is a much smaller GPU than an
# H100: run this lesson there for its own numbers (section 3).

# %% [markdown]
# ## 6. Will it fit my 16 GB T4? "CUDA out of memory"
#
# Weights take (number of parameters) x (bytes per parameter): 4 in float32, 2 in float16. We count
# SD 1.5's parameters without allocating anything, on PyTorch's `meta` device:

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
params["one pipeline"] = total = sum(params.values())
for name, n in params.items():
    print(f"{name:13} {n / 1e6:6.0f} M parameters  float32 {4 * n / 2**30:.2f} GiB  float16 {2 * n / 2**30:.2f} GiB")

# %% [markdown]
# What fills a 16 GB Colab GPU (the source lesson ran out of memory there), and the fix:
#
# | cause | fix |
# |---|---|
# | several pipelines loaded with `from_pretrained`, each with its own copy of the weights | `StableDiffusionImg2ImgPipeline.from_pipe(pipe, dtype=...)` shares the components; or `del pipe; gc.collect(); torch.cuda.empty_cache()` first |
# | float32 weights | `dtype=torch.float16` (and `variant="fp16"` to download half the bytes) |
# | a big image or batch | VAE tiling / slicing (section 4), smaller batches |
#
# `from_pipe` really shares: the new pipeline's UNet *is* the old one. Pass `dtype=`: without it
# `from_pipe` casts the shared components to float32, which on a GPU *doubles* them.

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
# **Every lesson on a T4, estimated without a GPU.** `course_utils.gpu_memory` builds SD 1.5's models
# as *fake* tensors (a shape and a dtype, no numbers, no memory), runs each lesson's heaviest cell on
# them in float16 at 512x512 and adds up every tensor PyTorch creates until it is freed. First the
# method against three peaks measured once on a GPU; then every lesson, as `python -m course_utils
# gpu-memory` wrote it to `docs/gpu-memory.json`. The count cannot see what libraries allocate for
# themselves (e.g. cuDNN's workspace), so its limits leave room spare: a lesson fits a T4 below the
# printed limit. `make gpu-check` measures each lesson on a real GPU, into `docs/gpu-report.json`.

# %%
import json

from course_utils import gpu_memory
from course_utils.paths import ROOT

for check in gpu_memory.check_rows():
    print(f"{check['what']:24} measured on a GPU {check['measured_gib']:.1f} GiB | estimated here "
          f"{check['estimate_gib']:.2f} GiB ({check['error']:+.0%})")
estimates = json.loads((ROOT / "docs" / "gpu-memory.json").read_text())
print(f"\nlimits: T4 {estimates['t4_limit_gib']} GiB, 8 GB card {estimates['eight_gb_limit_gib']} GiB")
print(f"{'lesson':6} {'peak GiB':>8}  {'T4':4} {'8 GB':4}  heaviest cell")
for r in estimates["lessons"]:
    print(f"{r['lesson']:6} {r['peak_gib']:8.2f}  {'fits' if r['fits_t4'] else 'NO':4} {'fits' if r['fits_8gb'] else 'NO':4}  {r['where']}")
report = ROOT / "docs" / "gpu-report.json"
if report.exists():  # measured: seconds and peak GPU memory per lesson
    data = json.loads(report.read_text())
    print("\nmeasured on:", data["machine"].get("gpu"), "on", data["date"])
    for r in data["rows"]:
        print(f"{r['notebook']:28} {r['profile']:6} {r['seconds']:7.1f} s  peak {r['peak_gib']} GiB  {r['status']}")
else:
    print("\nno GPU report in this copy of the course yet (`make gpu-check` on a CUDA machine makes one)")

# %% [markdown]
# ## 7. Downloading a model by hand; a Hub that is unreachable
#
# A pipeline is a folder of configs and weights. `snapshot_download` fetches it into the Hub cache or
# any folder; `dry_run=True` only lists what would come, with sizes. `weights.download_plan` picks from
# the repository's file list only what a pipeline loads (on a GPU the `.fp16` files).

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
# For a server with a slow connection (or a room without one), download once where the Hub is fast,
# copy the folder, and point the course at it:
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
