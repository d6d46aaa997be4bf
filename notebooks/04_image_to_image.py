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
# # Lesson 4 — Image to image
#
# **What you will learn**
# - how `StableDiffusionImg2ImgPipeline` turns a rough sketch plus a prompt into a picture;
# - what `strength` does: how many denoising steps run, and how much of your image survives;
# - the mechanism by hand, one move per cell: pick the tail of the timesteps, VAE-encode the image,
#   add noise to its *latents* with `scheduler.add_noise`, denoise from there — exactly the pipeline's result;
# - why SD 1.5's default scheduler (PNDM) misfires when img2img cuts its timesteps, and which scheduler to use instead;
# - what happens with bad input (a `strength` of 1.5, an RGBA image, an odd size).
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
import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from IPython.display import display
from PIL import Image, ImageOps

import course_utils as cu
from course_utils import by_hand, img2img

choice = cu.setup("img2img")  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. The sketch and the pipeline
#
# Text-to-image starts from pure noise; image-to-image starts from **your picture**, here a rough
# sketch. For `sd15` it is a landscape (`data/sketch.png`: sky, sun, two hills, a house); for `tiny`,
# the course's small model of one coloured shape on a plain background, a wobbly orange-red blob on
# pale blue (`data/tiny_sketch.png`). `cu.load_pipeline("img2img")` gives a
# `StableDiffusionImg2ImgPipeline`: the same five components as text-to-image (for `sd15`:
# `from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")`), a different procedure.

# %%
pipe = cu.load_pipeline("img2img")
settings = cu.default_settings(choice.profile)
steps, guidance = settings["num_inference_steps"], settings["guidance_scale"]
sketch = cu.load_image(cu.image_name("sketch", choice.profile), size=(settings["width"], settings["height"]))
print("sketch:", sketch.size, sketch.mode, "| steps:", steps, "| guidance:", guidance)
cu.grid([sketch], size=256, titles=[f"the sketch, {sketch.width}x{sketch.height} pixels"])

# %% [markdown]
# ## 2. A `strength` sweep
#
# `strength` (0 to 1) says how much the pipeline may change the image. The prompt does *not* fit the
# sketch, on purpose, so the sweep shows who wins: at low strength the sketch, at high strength the
# text. Same seed for every image; a callback counts the UNet calls and keeps the final latents
# (section 4 compares its own result with them).

# %%
prompt = cu.prompt("main", choice.profile)
seed = 0


def run(strength, text=prompt, image=sketch, n=steps, **kwargs):
    """One img2img call with a fixed seed; returns (output, the timesteps the UNet ran at, the final latents)."""
    ran, kept = [], {}

    def count(pipe, i, t, callback_kwargs):
        ran.append(int(t))
        kept["latents"] = callback_kwargs["latents"].clone()  # after the last step: the final latents
        return callback_kwargs

    out = pipe(text, image=image, strength=strength, num_inference_steps=n, guidance_scale=guidance,
               generator=torch.Generator(device="cpu").manual_seed(seed), callback_on_step_end=count, **kwargs)
    return out.images[0], ran, kept["latents"]


print("prompt:", prompt)
results, titles, final_latents = [], [], {}
for s in (0.3, 0.6, 0.9):
    picture, ran, final_latents[s] = run(s)
    results.append(picture)
    titles.append(f"strength {s}: {len(ran)} calls")
    shows = f" | shows {cu.world.describe(picture)}" if choice.profile == "tiny" else ""
    print(f"strength {s}: {len(ran):2d} UNet calls of {steps} steps, t={ran[0]} down to t={ran[-1]}{shows}")
cu.grid([sketch] + results, cols=4, size=192, titles=["the sketch"] + titles)

# %% [markdown]
# The pipeline skips the first `(1 - strength)` of the schedule: the steps that would turn pure noise
# into a rough layout, because your sketch *is* the rough layout. Fewer steps also means faster.
#
# Why one call more than `int(strength × steps)`? SD 1.5's default scheduler, PNDM, is a *multistep*
# scheduler: each step combines the noise predictions of the last few steps. At the first step it has
# none, so it spends a second UNet call there (a warm-up), and its list of timesteps repeats its
# second entry, as section 4 prints. img2img cuts `steps − int(strength × steps)` entries off the front
# and runs all the rest: one call more than asked for. Section 5 shows that this cut does not agree
# with the warm-up.

# %% [markdown]
# ## 3. A second prompt on the same sketch
#
# The source lesson's second prompt, "ghibli style, a fantasy landscape with castles", at strength
# 0.75: with `sd15` the layout stays and the content changes (castles on the hills). On `tiny` the
# second prompt names another shape and other colours.

# %%
castle = cu.prompt("restyle", choice.profile)
restyled, ran, _ = run(0.75, text=castle)
print("prompt:", castle, "|", len(ran), "UNet calls")
if choice.profile == "tiny":
    print("the picture shows:", cu.world.describe(restyled))
cu.grid([sketch, restyled], cols=2, size=256, titles=["the sketch", f"strength 0.75: {castle}"])

# %% [markdown]
# ## 4. The mechanism by hand
#
# Four moves, one cell each, with the pipeline's own parts; the package's version
# (`course_utils.img2img`, the reference the tests use) checks each.
#
# **Move 1: pick the start.** `strength` asks for `init = int(steps × strength)` steps; the pipeline
# skips `steps − init` steps at the noisy end and keeps the *tail* of `scheduler.timesteps`. Its first
# timestep, `t_start`, is the noise level the image jumps to. Schedulers that count their steps
# (DDIM, Euler, DPM-Solver) are told where the tail begins with `set_begin_index`. (`scheduler.order`
# counts timesteps per step: 2 for Heun's method, which calls the UNet at the start and at the end of
# each step and steps with the average of the two predictions.)

# %%
strength = 0.6
scheduler = pipe.scheduler
# Simplified from course_utils.img2img.start_timesteps
scheduler.set_timesteps(steps, device=choice.device)  # also restarts a multistep scheduler's history
init = min(int(steps * strength), steps)  # the steps strength asks for
skip = steps - init  # the steps left out, at the noisy end
begin = skip * scheduler.order  # order = timesteps per step (1 for PNDM, DDIM, DPM-Solver; 2 for Heun)
timesteps = scheduler.timesteps[begin:]  # the tail
if hasattr(scheduler, "set_begin_index"):  # DDIM, Euler, DPM-Solver: start counting at `begin`
    scheduler.set_begin_index(begin)  # (PNDM has no such method: its step counter restarts at 0)
print("all timesteps:", scheduler.timesteps.tolist())
print(f"strength {strength}: init = int({steps} * {strength}) = {init}, skip {skip} -> {len(timesteps)} UNet calls at",
      timesteps.tolist())

reference = img2img.start_timesteps(scheduler, steps, strength, device=choice.device)
print("equal to img2img.start_timesteps:", torch.equal(timesteps, reference))
assert torch.equal(timesteps, reference)
display(cu.diagrams_steps.strength_diagram(scheduler, steps, strength))  # the same start, on the schedule

# %% [markdown]
# **Move 2: VAE-encode the image** (lesson 2, section 6): pixels in [-1, 1] `[1, 3, H, W]` → the
# encoder's Gaussian per latent value → one *sample* of it (the first random draw) → times
# `scaling_factor`: latents `[1, 4, H/f, W/f]`, f = `pipe.vae_scale_factor`. One generator serves the
# whole run, as in the pipeline.

# %%
generator = torch.Generator(device="cpu").manual_seed(seed)  # what the pipeline is given: draws VAE sample, then noise
# Simplified from course_utils.img2img.encode_image
pixels = pipe.image_processor.preprocess(sketch).to(choice.device, pipe.vae.dtype)  # [1, 3, H, W] in [-1, 1]
with torch.no_grad():
    posterior = pipe.vae.encode(pixels).latent_dist  # a Gaussian per latent value: .mean, .std
z0 = posterior.sample(generator) * pipe.vae.config.scaling_factor  # draw 1
print("pixels", tuple(pixels.shape), f"in [{pixels.min():.2f}, {pixels.max():.2f}] -> z0", tuple(z0.shape),
      f"| vae_scale_factor {pipe.vae_scale_factor}")
print(f"the Gaussian: mean |mean| {posterior.mean.abs().mean():.3f}, mean std {posterior.std.mean():.4f};"
      f" scaling_factor {pipe.vae.config.scaling_factor}")

# %% [markdown]
# **Move 3: add noise to the latents** up to `t_start` with `scheduler.add_noise`, the forward process
# of lesson 3: `z_t = sqrt(ᾱ_t)·z0 + sqrt(1 − ᾱ_t)·ε`, with ε the second random draw. The text
# embedding is never noised. We also write the formula out, and let the package redo moves 2 and 3
# with a fresh generator of the same seed.

# %%
# Simplified from course_utils.img2img.noise_latents
noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)  # draw 2
t_start = timesteps[:1]
zt = scheduler.add_noise(z0, noise, t_start)
alpha_bar = scheduler.alphas_cumprod[int(t_start)]
written_out = alpha_bar.sqrt() * z0 + (1 - alpha_bar).sqrt() * noise
print(f"t_start = {int(t_start)}: z_t = {alpha_bar.sqrt():.3f}*z0 + {(1 - alpha_bar).sqrt():.3f}*noise;"
      f" max |add_noise - formula| = {(zt - written_out).abs().max().item():.1e}")

check = torch.Generator(device="cpu").manual_seed(seed)
ref_z0 = img2img.encode_image(pipe.vae, sketch, check)
ref_zt = img2img.noise_latents(scheduler, ref_z0, t_start, check)
tolerance = by_hand.tolerance(choice.dtype, ref_zt)  # 1e-4 in float32; fp16 on a GPU rounds more
for name, mine, theirs in (("z0", z0, ref_z0), ("z_t", zt, ref_zt), ("formula", written_out, zt)):
    difference = (mine.float() - theirs.float()).abs().max().item()
    print(f"{name}: max |by hand - reference| = {difference:.2e}")
    assert difference <= tolerance

# %% [markdown]
# **Move 4: denoise from there** with lesson 3's loop, over the tail only.

# %%
cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)  # lesson 2
uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
text_embeddings = torch.cat([uncond, cond])
z = zt.to(cond.dtype)
# Simplified from course_utils.by_hand.denoise
with torch.no_grad():
    for t in timesteps:
        x_in = scheduler.scale_model_input(torch.cat([z] * 2), t)
        eps_uncond, eps_text = pipe.unet(x_in, t, encoder_hidden_states=text_embeddings).sample.chunk(2)
        eps = eps_uncond + guidance * (eps_text - eps_uncond)
        z = scheduler.step(eps, t, z).prev_sample

pipeline_latents = final_latents[strength]  # section 2's run at strength 0.6, same seed
difference = (z.float() - pipeline_latents.float()).abs().max().item()
tolerance = by_hand.tolerance(choice.dtype, pipeline_latents)
print(f"{len(timesteps)} UNet calls | max |by hand - pipeline| = {difference:.2e} (tolerance {tolerance:.1e})")
assert difference <= tolerance

# %% [markdown]
# Same seed, same numbers. What the denoiser starts from, as pictures: the VAE's reconstruction of
# the sketch (`z0`), the same noise added at three strengths, and the result. The higher the
# strength, the less of the sketch is left to start from. (On `tiny` even `z0` is not quite the
# sketch: its small VAE knows only clean shapes on plain colours; exercise 3 measures that.)

# %%
scheduler.set_timesteps(steps)
views, titles = cu.decode_latents(pipe.vae, z0), ["z0 (decoded)"]
for s in (0.3, 0.6, 0.9):
    t = scheduler.timesteps[(steps - int(steps * s)) * scheduler.order]
    ab = scheduler.alphas_cumprod[int(t)]
    views += cu.decode_latents(pipe.vae, scheduler.add_noise(z0, noise, t.reshape(1)))
    titles.append(f"s={s}: t={int(t)}, {ab.sqrt():.2f}·z0 + {(1 - ab).sqrt():.2f}·ε")
views += cu.decode_latents(pipe.vae, z)
titles.append("result, s=0.6")
cu.grid(views, cols=5, size=192, titles=titles)

# %% [markdown]
# ## 5. PNDM's warm-up in a cut schedule
#
# PNDM's warm-up (section 2) counts its own calls, not timesteps: its first call takes a
# *first-order* step (one that uses only the noise predicted at that timestep, like lesson 3's DDIM
# step), its second call redoes that step with the average of two predictions. In the full list the
# repeated timestep makes room for this; img2img cuts it off, yet the warm-up still runs on the
# tail's first two calls. From the third call on, the UNet is told a timestep one step lower than the
# noise its latents hold, and noise is left at the end.
#
# To see it without the model, imagine a perfect UNet that predicts exactly the noise ε we added.
# The latents then stay `a·z0 + b·ε`, and `σ = b/a` is their noise level, to compare with the σ of
# the timestep the UNet is told, `σ_t = sqrt((1 − ᾱ_t)/ᾱ_t)`. We read a and b off the latents by
# *least squares*: the two numbers that make `a·z0 + b·ε` closest to the latents, as the sum of
# squared differences over all values (`torch.linalg.lstsq`; exact here). At 10 steps, strength 0.6,
# with the model's pictures beside it:

# %%
# Copied from course_utils.img2img.noise_levels
def noise_levels(scheduler, tail):
    """Step `scheduler` along `tail` with the exact noise as the model output; the σ (and signal share a) of the latents."""
    basis = torch.stack([z0.flatten(), noise.flatten()], dim=1).float().cpu()

    def a_and_sigma(x):  # x = a·z0 + b·ε exactly; its noise level is b / a
        a, b = torch.linalg.lstsq(basis, x.flatten().float().cpu()[:, None]).solution.flatten().tolist()
        return a, b / a

    latents, told, held = scheduler.add_noise(z0, noise, tail[:1]), [], []
    for t in tail:
        ab = scheduler.alphas_cumprod[int(t)]
        told.append(((1 - ab) / ab).sqrt().item())
        held.append(a_and_sigma(latents)[1])
        latents = scheduler.step(noise, t, latents).prev_sample
    return told, held, a_and_sigma(latents)


few = 10  # few steps make the lost interval large enough to see
pndm = pipe.scheduler
pictures, titles = [], []
for name, solver in (("PNDM", pndm), ("DPM-Solver++", DPMSolverMultistepScheduler.from_config(pndm.config))):
    told, held, (signal, left) = noise_levels(solver, img2img.start_timesteps(solver, few, strength))
    print(f"{name}: σ told   ", " ".join(f"{s:4.2f}" for s in told))
    print(f"{name}: σ held   ", " ".join(f"{s:4.2f}" for s in held), f"-> left after the last call: σ {left:.3f}")
    pipe.scheduler = solver
    picture, ran, _ = run(strength, n=few)
    pictures.append(picture)
    titles.append(f"{name}, {len(ran)} calls" + (f": {cu.world.describe(picture)}" if choice.profile == "tiny" else ""))
pipe.scheduler = pndm  # put SD 1.5's default back
cu.grid(pictures, cols=2, size=256, titles=titles)

# %% [markdown]
# DPM-Solver++ holds the σ it is told at every call and ends clean; PNDM does not. At the course's 25
# (`tiny`) or 50 (`sd15`) steps the lost interval is a small share of the tail. For img2img, prefer a
# scheduler without the warm-up call, DDIM or DPM-Solver++; it also saves a UNet call:
# `pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`.
# (More in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 04".)

# %% [markdown]
# ## 6. Bad input
#
# `strength` must lie in [0, 1]. The course checks it and says what it means; the pipeline itself
# stops with a shorter `ValueError`.

# %%
try:
    img2img.check_strength(1.5)
except cu.CourseError as err:
    print("CourseError:", err)
try:
    pipe(prompt, image=sketch, strength=1.5)
except ValueError as err:
    print("diffusers:", err)

# %% [markdown]
# Your own image may be RGBA, grayscale, palette or CMYK, and of any size. `cu.load_image` (and
# `img2img.load_init_image`, which also rounds the size to multiples of 8) converts it and says so:

# %%
horse = img2img.load_init_image("horse.png", size=(300, 245))
print(horse.mode, horse.size)

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1.** Predict, then run: with this lesson's `steps`, which timesteps does strength 0.3 keep with
# PNDM, and with DDIM? How many UNet calls, starting at which t? Then compute both tails yourself
# (move 1 of section 4, with `DDIMScheduler.from_config(pipe.scheduler.config)` for DDIM) and compare
# them with `img2img.start_timesteps`.

# %%
# your attempt

# %% [markdown]
# **2.** Predict, then run: at strength 1.0, is the sketch ignored? First compute how much of z0 is
# left in z_t at the first timestep (`sqrt(ᾱ_t)`, move 3). Then run the pipeline at strength 1.0 on
# the sketch and on the sketch mirrored left to right (`ImageOps.mirror(sketch)`), same seed. Both runs
# draw the same noise (the VAE sample and the noise have the same shapes), so if the sketch no longer
# counted the two images would be identical. Are they?

# %%
# your attempt

# %% [markdown]
# **3.** Predict, then run: encode the sketch with the VAE, taking the Gaussian's *mean* (no
# sampling), and decode it again. How large is the mean pixel error (in [0, 1]), and where is it
# largest? Then compute it by hand (`pipe.image_processor.preprocess`, `pipe.vae.encode(...).latent_dist.mean`,
# `pipe.vae.decode`) and show the error as an image.

# %%
# your attempt

# %% [markdown]
# ## Summary
# - Image to image = text to image started part-way: encode the image with the VAE, add noise to its
#   *latents* up to the step `strength` picks (`scheduler.add_noise`), then denoise the tail of the
#   timesteps with the prompt, as lesson 3's loop.
# - `strength` 0 keeps the image, 1 nearly ignores it; it sets both how much noise is added and how
#   many UNet calls run (`int(steps × strength)`, plus one with PNDM).
# - PNDM's warm-up does not fit a cut schedule: from the third call on the UNet is told a timestep one
#   step below its latents' noise, and noise is left at the end. For img2img use DDIM or DPM-Solver++.
# - Same generator, same draws (VAE sample, then noise): the hand-written version equals the pipeline.
# - Bad input gets a clear message: `strength` outside [0, 1]; odd image modes and sizes are converted.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# `int(steps × 0.3)` steps run; DDIM's tail is exactly that long, PNDM's one longer (its list has one
# more entry) and it starts one step higher.

# %%
for solver in (pipe.scheduler, DDIMScheduler.from_config(pipe.scheduler.config)):
    solver.set_timesteps(steps)
    begin = (steps - int(steps * 0.3)) * solver.order
    mine = solver.timesteps[begin:]
    print(f"{type(solver).__name__}: {len(mine)} UNet calls from t={int(mine[0])}:", mine.tolist())
    assert torch.equal(mine, img2img.start_timesteps(solver, steps, 0.3))

# %% [markdown]
# ### Solution 2
# SD 1.5's noise schedule never reaches pure noise, and with its "leading" spacing the first timestep
# is not even the last one (999), so at strength 1.0 a few per cent of z0 are still in z_t, and the
# model picks them up.

# %%
pipe.scheduler.set_timesteps(steps)
t_first = int(pipe.scheduler.timesteps[0])
ab = pipe.scheduler.alphas_cumprod[t_first]
print(f"strength 1.0 starts at t={t_first}: z_t = {ab.sqrt():.3f}*z0 + {(1 - ab).sqrt():.3f}*noise")
mirrored = ImageOps.mirror(sketch)
full_sketch, _, _ = run(1.0)
full_mirrored, _, _ = run(1.0, image=mirrored)
change = np.abs(np.asarray(full_sketch, np.float32) - np.asarray(full_mirrored, np.float32)).mean() / 255
print(f"mean pixel difference between the two results: {change:.3f} (0 would mean the sketch is ignored)")
cu.grid([sketch, full_sketch, mirrored, full_mirrored], cols=4, size=192,
        titles=["sketch", "strength 1.0", "mirrored sketch", "strength 1.0"])

# %% [markdown]
# ### Solution 3

# %%
with torch.no_grad():
    mean = pipe.vae.encode(pixels).latent_dist.mean  # no sample; the scaling factor would cancel anyway
    back = pipe.vae.decode(mean).sample  # [1, 3, H, W], about [-1, 1]
error = ((back.float().clamp(-1, 1) - pixels.float()).abs() / 2).mean(dim=1)[0].cpu().numpy()  # [H, W] in [0, 1]
round_trip = pipe.image_processor.postprocess(back, output_type="pil")[0]
print(f"round trip: mean pixel error {error.mean():.3f}, largest {error.max():.3f}")
print("top-left pixel (background): sketch", sketch.getpixel((0, 0)), "-> round trip", round_trip.getpixel((0, 0)))
error_map = Image.fromarray((error / max(error.max(), 1e-6) * 255).astype(np.uint8))
cu.grid([sketch, round_trip, error_map], cols=3, size=256,
        titles=["sketch", "encode (mean) + decode", f"error, white = {error.max():.2f}"])

# %% [markdown]
# With `sd15` the error is small and sits at edges and fine detail: SD's VAE keeps 8x8 pixels in 4
# numbers. `tiny`'s VAE knows only its world's clean shapes and pure colours, so it redraws the sketch as
# one of them (the printed corner pixel: the pale-blue background comes back paler). That is also why,
# on `tiny`, the background of section 2's low-strength picture is not the sketch's.
