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
# - the mechanism by hand: VAE-encode the image, add noise to its *latents* up to the step that
#   `strength` picks, denoise from there — and get exactly the pipeline's result;
# - what happens with bad input (a `strength` of 1.5, an RGBA image, an odd size).

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("course_utils") is None:  # a fresh Colab runtime
    repo = os.environ.get("COURSE_REPO", "https://github.com/sd-course/sd-course.git")
    subprocess.run(["git", "clone", "-q", "--depth", "1", repo, "sd-course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "sd-course"], check=True)
    sys.path.insert(0, os.path.abspath("sd-course"))

# %%
import torch
from IPython.display import display

import course_utils as cu
from course_utils import by_hand, img2img

choice = cu.setup("img2img")  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. The sketch and the pipeline
#
# Text-to-image starts from pure noise. Image-to-image starts from **your picture**: here a rough
# sketch drawn by code. For `sd15` it is a landscape (`data/sketch.png`: sky, sun, two hills, a house);
# for `tiny`, the course's small model that knows one coloured shape on a plain background, it is a
# wobbly orange-red blob in the upper left on pale blue (`data/tiny_sketch.png`, 64x64).
# `cu.load_pipeline("img2img")` gives a `StableDiffusionImg2ImgPipeline` — the same five components
# as text-to-image (for `sd15`: `from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")`),
# only the procedure differs.
#
# With `sd15` you see the sketch's layout (sky, sun, hills, house) redrawn in the style and content
# of the prompt; with `tiny`, the blob redrawn as the shape the prompt names, where the blob was.

# %%
pipe = cu.load_pipeline("img2img")
settings = cu.default_settings(choice.profile)
steps, guidance = settings["num_inference_steps"], settings["guidance_scale"]
sketch = cu.load_image(cu.image_name("sketch", choice.profile), size=(settings["width"], settings["height"]))
print("sketch:", sketch.size, sketch.mode, "| steps:", steps, "| guidance:", guidance)
sketch

# %% [markdown]
# ## 2. A `strength` sweep
#
# `strength` (0 to 1) says how much the pipeline may change the image. We use a prompt that does
# *not* fit the sketch on purpose, so the sweep shows who wins: at low strength the sketch, at high
# strength the text. On `tiny` the prompt is *"a red circle on a blue background"*: the wobbly
# orange-red blob on pale blue should become a clean red circle on full blue, in the blob's place,
# more so at higher strength. Same seed for every image; a callback counts the UNet calls.

# %%
prompt = cu.prompt("main", choice.profile)
seed = 0


def run(strength, text=prompt, **kwargs):
    """One img2img call with a fixed seed; returns (output, the timesteps the UNet ran at)."""
    ran = []

    def count(pipe, i, t, callback_kwargs):
        ran.append(int(t))
        return callback_kwargs

    out = pipe(text, image=sketch, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
               generator=torch.Generator(device="cpu").manual_seed(seed), callback_on_step_end=count, **kwargs)
    return out, ran


strengths = [0.3, 0.5, 0.7, 0.9]
results = []
for s in strengths:
    out, ran = run(s)
    results.append(out.images[0])
    print(f"strength {s}: {len(ran):2d} UNet calls of {steps} steps, from t={ran[0]} down to t={ran[-1]}")
    if choice.profile == "tiny":
        print("   what the picture shows:", cu.world.classify(results[-1]))
print("prompt:", prompt)
cu.grid([sketch] + results, cols=5, size=192)

# %% [markdown]
# The pipeline skips the first `(1 - strength)` of the schedule: it never runs the steps that would
# turn pure noise into a rough layout, because your sketch *is* the rough layout. Fewer steps also
# means faster: strength 0.3 costs about a third of a full run.
#
# Why one call more than `int(strength × steps)`? SD 1.5's default scheduler (PNDM) takes its
# *first* step twice (a warm-up for its multistep formula), so its list has `steps + 1` timesteps;
# img2img skips `steps − int(strength × steps)` of them from the front and runs all the rest.
# Section 4 shows the exact list.

# %% [markdown]
# ## 3. A second prompt on the same sketch
#
# The source lesson's second prompt: "ghibli style, a fantasy landscape with castles". Same sketch,
# same strength (0.75), new text: with `sd15` the layout stays and the content changes (castles on
# the hills). On `tiny` the second prompt is *"a yellow triangle on a black background"*: both the shape
# and the colours change, the place tends to stay.

# %%
castle = cu.prompt("restyle", choice.profile)
out, ran = run(0.75, text=castle)
print("prompt:", castle, "|", len(ran), "UNet calls")
if choice.profile == "tiny":
    print("what the picture shows:", cu.world.classify(out.images[0]))
cu.grid([sketch, out.images[0]], cols=2, size=256)

# %% [markdown]
# ## 4. The mechanism by hand
#
# Four moves, each a function in `course_utils.img2img` (read its source, it is short):
#
# 1. **Pick the start.** `init = int(steps × strength)` steps will run; they are the *tail* of
#    `scheduler.timesteps`. The first of them, `t_start`, is the noise level we jump to.
# 2. **VAE-encode the image** to latents `[1, 4, H/f, W/f]` (a sample of the encoder's Gaussian,
#    times the scaling factor) — the first random draw. f = `pipe.vae_scale_factor`: 8 for SD 1.5,
#    4 for `tiny`, whose 64x64 sketch gives `[1, 4, 16, 16]`.
# 3. **Add noise to the latents** up to `t_start` with `scheduler.add_noise`:
#    `z_t = sqrt(ᾱ_t)·z_0 + sqrt(1 − ᾱ_t)·ε` — the second random draw. The text embedding is never noised.
# 4. **Denoise from there** with the loop of lesson 3, over the tail only.

# %%
strength = 0.6
timesteps = img2img.start_timesteps(pipe.scheduler, steps, strength, device=choice.device)
print("all timesteps:", pipe.scheduler.timesteps.tolist())
print(f"strength {strength}: int({steps} * {strength}) = {int(steps * strength)} steps ->",
      len(timesteps), "UNet calls at", timesteps.tolist())

# %% [markdown]
# With 10 steps the PNDM list is `[901, 801, 801, 701, …, 1]` (11 entries): strength 0.6 keeps the
# last 7, so the pipeline runs **7** UNet calls for "6 steps".

# %%
small = img2img.start_timesteps(pipe.scheduler, 10, 0.6)
print("10 steps:", pipe.scheduler.timesteps.tolist())
print("strength 0.6 ->", small.tolist(), "=", len(small), "UNet calls")
assert len(small) == 7
print(type(pipe.scheduler).__name__, "order:", pipe.scheduler.order)

# %% [markdown]
# Now the four moves, with one generator that draws in the pipeline's order (VAE sample, then noise):

# %%
generator = torch.Generator(device="cpu").manual_seed(seed)
timesteps = img2img.start_timesteps(pipe.scheduler, steps, strength, device=choice.device)  # 1.
z0 = img2img.encode_image(pipe.vae, sketch, generator)                                      # 2.
zt = img2img.noise_latents(pipe.scheduler, z0, timesteps[0], generator)                     # 3.
cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
z = by_hand.denoise(pipe.unet, pipe.scheduler, zt, cond, uncond, guidance, timesteps=timesteps)  # 4.

alpha_bar = pipe.scheduler.alphas_cumprod[int(timesteps[0])]
print("image", tuple(sketch.size), "-> latents z0", tuple(z0.shape), "| text embedding", tuple(cond.shape))
print(f"t_start = {int(timesteps[0])}: z_t = {alpha_bar.sqrt():.3f}*z0 + {(1 - alpha_bar).sqrt():.3f}*noise")

reference = pipe(prompt, image=sketch, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
                 generator=torch.Generator(device="cpu").manual_seed(seed), output_type="latent").images
difference = (z.float() - reference.float()).abs().max().item()
tolerance = by_hand.tolerance(choice.dtype, reference)  # 1e-4 in float32; fp16 on a GPU rounds more
print(f"max |by hand - pipeline| = {difference:.2e} (tolerance {tolerance:.1e})")
assert difference <= tolerance

# %% [markdown]
# Same seed, same numbers. What the denoiser starts from, as pictures: the VAE's reconstruction of
# the sketch (`z0`), the noised latents at three strengths, and the result. At strength 0.3 the
# sketch is still plainly there; at 0.9 little of it is left.

# %%
views = [cu.decode_latents(pipe.vae, z0)[0]]
labels = ["z0"]
for s in (0.3, 0.6, 0.9):
    ts = img2img.start_timesteps(pipe.scheduler, steps, s)
    views += cu.decode_latents(pipe.vae, img2img.noise_latents(pipe.scheduler, z0, ts[0], torch.Generator().manual_seed(1)))
    labels.append(f"strength {s}: t={int(ts[0])}, signal x{pipe.scheduler.alphas_cumprod[int(ts[0])].sqrt():.2f}")
views += cu.decode_latents(pipe.vae, z)
labels.append("result, strength 0.6")
print(" | ".join(labels))
cu.grid(views, cols=5, size=160)

# %% [markdown]
# ## 5. Bad input
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
# `data/horse.png` is an RGBA image of 400×328 pixels.

# %%
horse = img2img.load_init_image("horse.png", size=(300, 245))
print(horse.mode, horse.size)

# %% [markdown]
# ## Exercises
#
# 1. How many UNet calls do 10, 25 and 50 steps take at strength 0.75? Predict them with the formula
#    of section 4, then check with `img2img.start_timesteps`.
# 2. Swap the scheduler for `DDIMScheduler` (lesson 3) and check that the by-hand
#    img2img (`img2img.img2img_by_hand`) still matches the pipeline. How many UNet calls now?
# 3. Turn your own picture into a castle: `data/horse.png` (RGBA, 400×328), scaled to this
#    profile's width, at strength 0.6 with `cu.prompt("restyle", ...)`. What does the course print
#    about the image?

# %% [markdown]
# ### Solution 1

# %%
for n in (10, 25, 50):
    ts = img2img.start_timesteps(pipe.scheduler, n, 0.75)
    print(f"{n} steps: int({n} * 0.75) = {int(n * 0.75)} steps -> {len(ts)} UNet calls (first t={int(ts[0])})")

# %% [markdown]
# Always `int(steps × 0.75) + 1`: PNDM's list has `steps + 1` entries, and img2img skips the same
# number from the front as a scheduler without the repeat would.

# %% [markdown]
# ### Solution 2

# %%
from diffusers import DDIMScheduler

original = pipe.scheduler
pipe.scheduler = DDIMScheduler.from_config(original.config)
mine = img2img.img2img_by_hand(pipe, sketch, prompt, strength, steps, guidance, torch.Generator().manual_seed(seed))
theirs = pipe(prompt, image=sketch, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
              generator=torch.Generator().manual_seed(seed), output_type="latent").images
difference = (mine.float() - theirs.float()).abs().max().item()
print("DDIM: UNet calls", len(img2img.start_timesteps(pipe.scheduler, steps, strength)),
      f"| max |by hand - pipeline| = {difference:.2e}")
assert difference <= tolerance
pipe.scheduler = original

# %% [markdown]
# ### Solution 3

# %%
horse = img2img.load_init_image("horse.png")  # RGBA -> RGB on white
width = settings["width"]  # the size this profile works at; keep the horse's aspect ratio
horse = img2img.load_init_image(horse, size=(width, round(width * horse.height / horse.width)))
out = pipe(castle, image=horse, strength=0.6, num_inference_steps=steps, guidance_scale=guidance,
           generator=torch.Generator().manual_seed(seed))
print("output size:", out.images[0].size)
cu.grid([horse, out.images[0]], cols=2, size=256)

# %% [markdown]
# ## Summary
# - Image to image = text to image started part-way: encode the image with the VAE, add noise to its
#   *latents* up to the step `strength` picks, then denoise the rest with the prompt.
# - `strength` 0 keeps the image, 1 nearly ignores it; it sets both how much noise is added and how
#   many UNet calls run (`int(steps × strength)`, plus PNDM's repeated first step).
# - Same generator, same draws (VAE sample, then noise): the hand-written version equals the pipeline.
# - Bad input gets a clear message: `strength` outside [0, 1]; odd image modes and sizes are converted.
