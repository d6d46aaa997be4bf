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
# # Lesson 6 — Upscaling: the x4 upscaler
#
# Stable Diffusion's x4 upscaler (`stabilityai/stable-diffusion-x4-upscaler`) turns a small
# image and a prompt into an image four times as wide and tall. It is a latent diffusion model
# like SD 1.5, but the low-resolution image steers *every* denoising step.
#
# **What you will learn**
# - Upscale a low-resolution photo 4x with `StableDiffusionUpscalePipeline`, next to plain bicubic
#   resizing, and measure both against the original (PSNR).
# - What `noise_level` does, its range and its default.
# - Why the upscaler's UNet has 7 input channels, what "v-prediction" is, and run its denoising loop by hand.
# - Why its VAE shrinks images only 4x, and why its text encoder is not SD 1.5's.
# - How to keep larger inputs within a GPU's memory.
#
# Terms are defined where they first appear, and all in one place in the [glossary](../docs/glossary.md).

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about 1.7 GB
# from the Hugging Face Hub, again on every new runtime:
# the x4 upscaler in fp16.
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
from course_utils import by_hand

choice = cu.setup("upscale")  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. A low-resolution photo
#
# To judge an upscaler we need the answer: we take a picture, shrink it 4x, let the upscaler
# enlarge it again and compare with the original. With `sd15` the picture is a photo of Chelsea
# the cat; on `tiny`, whose upscaler knows only the world of shapes, a green square on white
# (`cu.image_name("upscale", ...)` picks the file). `fit_for_upscaling` makes the original: it may
# shrink the photo (never enlarge or stretch it) and crops the centre so that each side is a
# multiple of 32. `low_res_input` then averages each 4x4 block of pixels into one, like a camera
# with bigger pixels.

# %%
import inspect

import torch
from PIL import Image

from course_utils.upscale import SCORE_SETTINGS, check_noise_level, fit_for_upscaling, low_res_input, psnr

settings = cu.default_settings(choice.profile)


photo = cu.load_image(cu.image_name("upscale", choice.profile))
original = fit_for_upscaling(photo, max_side=settings["width"])  # shrink if larger (never enlarge), keep the aspect ratio, crop
low = low_res_input(original, factor=4)
print("photo:", photo.size, "-> original:", original.size, "-> low-res input:", low.size)
# nearest-neighbour enlargement shows the low-res pixels as they are
cu.grid([low.resize(original.size, Image.Resampling.NEAREST), original], min_width=256,  # small ones enlarged, sharp
        titles=[f"low-res input, {low.width}x{low.height}", f"original, {original.width}x{original.height}"])

# %% [markdown]
# ## 2. Upscale with a prompt, next to bicubic
#
# `cu.load_pipeline("upscale")` gives a `StableDiffusionUpscalePipeline`. Its parts: a tokenizer and
# text encoder, a UNet, a VAE, *two* schedulers (`scheduler` denoises the latents,
# `low_res_scheduler` adds noise to the low-res image, section 3) and optional parts the Hub model
# leaves out (`None`).
#
# The upscaler is a Stable Diffusion **2** model: its text encoder is SD 2's OpenCLIP ViT-H/14
# (same `CLIPTextModel` class, 1024 numbers per token instead of SD 1.5's 768, read at its
# second-to-last layer), and its UNet's cross-attention is 1024 wide to match. (`tiny`'s upscaler
# reuses `tiny`'s small text encoder.) Its VAE overflows in float16, so we keep it in float32.

# %%
from course_utils.models.configs import SD15_TEXT_ENCODER, X4_UPSCALER_TEXT_ENCODER  # the real models' config values

pipe = cu.load_pipeline("upscale")
cu.cast(pipe.vae, torch.float32)  # the upscaler's VAE stays float32 (cast only if it is not)
print({name: type(part).__name__ if part is not None else None for name, part in pipe.components.items()})
print("dtypes: unet", pipe.unet.dtype, "| vae", pipe.vae.dtype)
text_config = pipe.text_encoder.config
print(f"this text encoder: {text_config.hidden_size} wide, {text_config.num_hidden_layers} layers, {text_config.hidden_act}"
      f" | UNet cross_attention_dim {pipe.unet.config.cross_attention_dim}")
for name, config in (("x4 upscaler (OpenCLIP ViT-H/14)", X4_UPSCALER_TEXT_ENCODER), ("SD 1.5 (CLIP ViT-L/14)", SD15_TEXT_ENCODER)):
    print(f"{name:31s}: {config['hidden_size']} wide, {config['num_hidden_layers']} layers, {config['hidden_act']}")

# %% [markdown]
# The call looks like text-to-image plus an `image`; the output is 4x the input on each side.
# Plain bicubic resizing (`Image.Resampling.BICUBIC`) is the baseline: it interpolates between known
# pixels and invents nothing, so edges come out soft.
#
# **Settings.** The cell reads the pipeline's defaults from its signature. With `sd15` we keep them,
# as Stability's model card does (only the steps are the profile's). On `tiny` we use the settings
# its model card scored with (`course_utils.upscale.SCORE_SETTINGS`): guidance 1, which switches
# classifier-free guidance off (lesson 5, section 4).
#
# **PSNR** (peak signal-to-noise ratio, in dB) measures how close a result is to the original;
# higher is closer. It rewards blur and punishes invented detail that is not exactly in place, so
# on photos even a good upscaler often scores near or below bicubic: look at the pictures too.
# `tiny`'s model card reports its upscaler 2.3 dB above bicubic on average over 20 scenes
# (`data/tiny/README.md`); the cell prints this picture's numbers.

# %%
defaults = {name: p.default for name, p in inspect.signature(pipe.__call__).parameters.items()
            if name in ("num_inference_steps", "guidance_scale", "noise_level")}
if choice.profile == "tiny":
    upscale_settings = dict(SCORE_SETTINGS)  # the settings of the model card's scores
else:
    upscale_settings = dict(defaults, num_inference_steps=settings["num_inference_steps"])  # the defaults, the profile's steps
print("the pipeline's defaults:", defaults)
print("this lesson's settings: ", upscale_settings)
prompt = cu.prompt("describe_photo", choice.profile)
print(f"prompt: {prompt!r}")

upscaled = pipe(prompt, image=low, generator=torch.Generator().manual_seed(0), **upscale_settings).images[0]
bicubic = low.resize(original.size, Image.Resampling.BICUBIC)
print("upscaled:", upscaled.size)
print(f"PSNR vs original: bicubic {psnr(bicubic, original):.2f} dB | x4 upscaler {psnr(upscaled, original):.2f} dB"
      f" | difference {psnr(upscaled, original) - psnr(bicubic, original):+.2f} dB")
if choice.profile == "tiny":
    print("original:", cu.world.describe(original), "| x4 upscaler:", cu.world.describe(upscaled))
cu.grid([bicubic, upscaled, original], min_width=256,
        titles=[f"bicubic, {psnr(bicubic, original):.1f} dB", f"x4 upscaler, {psnr(upscaled, original):.1f} dB", "original"])

# %% [markdown]
# ## 3. `noise_level`: how much the model may invent
#
# Before the low-res image conditions the UNet, the pipeline adds noise to it: `noise_level` is a
# timestep of the `low_res_scheduler` (a `DDPMScheduler`), so the image becomes
# `sqrt(ᾱ) * image + sqrt(1 - ᾱ) * noise`. The same number is handed to the UNet as a label
# (`class_labels`, a row of an embedding table), so the model knows how much to trust its input.
# Trained on inputs noised this way up to `max_noise_level`, it learned *not* to copy the blocky or
# noisy parts of its input: low levels (like the default, printed in section 2) stay close to the
# input, high ones let the model invent more. This noise goes onto the low-res *image*, in pixels;
# the denoising itself, as in every lesson, works on the *latents*.

# %%
alphas_cumprod = pipe.low_res_scheduler.alphas_cumprod
levels = sorted({0, defaults["noise_level"], 100, 350})
for level in levels:
    a = alphas_cumprod[level]
    print(f"noise_level {level:3d}: image x {a.sqrt().item():.3f} + noise x {(1 - a).sqrt().item():.3f}")
print("max_noise_level:", pipe.config.max_noise_level)
assert pipe.config.max_noise_level == 350

sweep = []
for level in levels:
    if level == upscale_settings["noise_level"]:  # section 2 already made this one, with the same seed
        image = upscaled
    else:
        image = pipe(prompt, image=low, generator=torch.Generator().manual_seed(0), **dict(upscale_settings, noise_level=level)).images[0]
    sweep.append(image)
    print(f"noise_level {level:3d}: PSNR {psnr(image, original):.2f} dB")
cu.grid(sweep, min_width=256, titles=[f"noise_level {level}, {psnr(image, original):.1f} dB" for level, image in zip(levels, sweep)])

# %% [markdown]
# Past 350 the model was never trained, so the pipeline refuses: diffusers raises a `ValueError`.
# It does not check negative values: `-5` would quietly pick the schedule's level 995, then crash in
# the UNet's embedding table. The course's `check_noise_level` says what is allowed and why.

# %%
try:
    pipe(prompt, image=low, noise_level=400)
except ValueError as err:
    print("diffusers:", err)

for bad in (400, -5):
    try:
        check_noise_level(pipe, bad)
    except cu.CourseError as err:
        print("course_utils:", err)

# %% [markdown]
# ## 4. Seven input channels: the loop by hand
#
# SD 1.5's UNet takes 4 channels (the noisy latents). The upscaler's takes 7: the 4 noisy latents
# and the 3 RGB channels of the (noised) low-res image, concatenated along the channel axis **at
# every step**:

# %%
display(cu.diagrams.input_channels_diagram("upscale", unet=pipe.unet))
print("in_channels:", pipe.unet.config.in_channels, "| out_channels:", pipe.unet.config.out_channels)
print("num_class_embeds:", pipe.unet.config.num_class_embeds)

# %% [markdown]
# That is the difference from img2img (lesson 4), which only *starts* from the image's noised
# latents (so a high `strength` can drift far from it): here every step sees the input again. The
# latents have the low-res image's height and width (section 5 says why).
#
# **v-prediction.** SD 1.5's UNet predicts the noise ε. This one predicts **v**: with the noisy
# latents written as `x_t = α_t·x₀ + σ_t·ε` (`α_t = sqrt(ᾱ_t)`, `σ_t = sqrt(1 − ᾱ_t)`, `x₀` the
# clean latents), its training target is `v = α_t·ε − σ_t·x₀`. At the noisiest timesteps (`α_t`
# near 0) v is nearly `−x₀`, the picture itself; near the end it is nearly ε. The scheduler's
# config says which target the UNet was trained on, and `scheduler.step` converts accordingly.
# The schedulers' `get_velocity` (used in training) computes v; the cell checks it against the formula:

# %%
print("prediction_type:", pipe.scheduler.config.prediction_type)
assert pipe.scheduler.config.prediction_type == "v_prediction"
x0, eps, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), 500
alpha, sigma = pipe.scheduler.alphas_cumprod[t].sqrt(), (1 - pipe.scheduler.alphas_cumprod[t]).sqrt()
v = alpha * eps - sigma * x0
print(f"t = {t}: alpha_t {alpha:.3f}, sigma_t {sigma:.3f} | max |formula - scheduler.get_velocity| "
      f"{(v - pipe.scheduler.get_velocity(x0, eps, torch.tensor([t]))).abs().max():.1e}")

# %% [markdown]
# Below, the whole pipeline by hand for a few steps, with the same seed and the lesson's settings;
# it must give the pipeline's latents. As in diffusers, classifier-free guidance runs only when
# `guidance_scale > 1` (with `sd15`'s 9.0: a batch of 2, without and with the prompt; with `tiny`'s
# 1: a batch of 1). The generator draws the image noise first, then the starting latents, as the
# pipeline does.

# %%
from diffusers.utils.torch_utils import randn_tensor

hand_steps, level, guidance = 3, upscale_settings["noise_level"], upscale_settings["guidance_scale"]
reference = pipe(prompt, image=low, noise_level=level, num_inference_steps=hand_steps, guidance_scale=guidance,
                 generator=torch.Generator().manual_seed(0), output_type="latent").images

device = pipe.device
cfg = guidance > 1  # diffusers' do_classifier_free_guidance
n = 2 if cfg else 1  # the UNet's batch
cond, uncond = pipe.encode_prompt(prompt, device, 1, cfg)  # text embeddings, with and (if cfg) without the prompt
text = torch.cat([uncond, cond]) if cfg else cond
dtype = text.dtype
image = pipe.image_processor.preprocess(low).to(device, dtype)  # [1, 3, h, w], values in [-1, 1]

generator = torch.Generator().manual_seed(0)
noise_level = torch.tensor([level], device=device)
noise = randn_tensor(image.shape, generator=generator, device=device, dtype=dtype)
noisy_image = pipe.low_res_scheduler.add_noise(image, noise, noise_level)  # the image's own noise
pipe.scheduler.set_timesteps(hand_steps, device=device)
latents = randn_tensor((1, 4, *image.shape[2:]), generator=generator, device=device, dtype=dtype)
latents = latents * pipe.scheduler.init_noise_sigma

with torch.no_grad():
    for i, t in enumerate(pipe.scheduler.timesteps):
        x = pipe.scheduler.scale_model_input(torch.cat([latents] * n), t)
        x = torch.cat([x, torch.cat([noisy_image] * n)], dim=1)  # 4 + 3 = 7 channels
        v = pipe.unet(x, t, encoder_hidden_states=text, class_labels=noise_level.repeat(n)).sample
        if i == 0:
            print("UNet input:", list(x.shape), "= latents", list(latents.shape), "+ noisy low-res image",
                  list(noisy_image.shape), f"(batch {n})", "| UNet output:", list(v.shape))
        if cfg:
            v_uncond, v_text = v.chunk(2)
            v = v_uncond + guidance * (v_text - v_uncond)
        latents = pipe.scheduler.step(v, t, latents).prev_sample

diff = (latents - reference).abs().max().item()
print(f"max |by hand - pipeline| = {diff:.2e}")
assert diff <= by_hand.tolerance(dtype)  # 1e-4 in float32, ~0.03 in fp16

# %% [markdown]
# ## 5. A VAE that shrinks 4x, not 8x
#
# The latents above are as big as the low-res input. SD 1.5's VAE shrinks 8x (4 blocks, 3
# halvings), so a 512x512 image is a 64x64 latent. The upscaler's VAE has 3 blocks: it shrinks 4x,
# and a 512x512 output is a 128x128 latent - the size of its 128x128 input, so each low-res pixel
# sits on exactly one latent position (`tiny`: a 64x64 output, a 16x16 latent, a 16x16 input). Its
# `scaling_factor` differs too: each VAE's latents are multiplied by the number that gives them
# roughly unit variance, and for this VAE that is 0.08333. The pipeline insists on it: loaded with
# any other value, it warns and overwrites it with 0.08333.

# %%
from course_utils.models.configs import SD15_VAE  # SD 1.5's vae/config.json values (lesson 2 loads the file)

for name, config in [("x4 upscaler", pipe.vae.config), ("SD 1.5", SD15_VAE)]:
    blocks = len(config["block_out_channels"])
    print(f"{name:11s}: scaling_factor {config['scaling_factor']} | {blocks} blocks -> {2 ** (blocks - 1)}x smaller")

decoded = cu.decode_latents(pipe.vae, latents)[0]
print("latents", list(latents.shape), "-> decoded image", decoded.size)

# %% [markdown]
# `tiny`'s upscaler has a 3-block VAE too: the text-to-image one, rescaled so that 0.08333 fits it.
# (More in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 06".)
#
# **Memory.** The x4 upscaler is hungry: for a 512x512 output its UNet works on 128x128 latents,
# 4x as many positions as SD 1.5's 64x64, and its VAE decodes 512x512 pixels from them. A 128x128 input fits a
# 16 GB Colab T4; for larger inputs (or an "out of memory" error), compute attention in slices and decode
# the VAE in tiles before calling the pipeline:
#
# ```python
# pipe.enable_attention_slicing()
# pipe.vae.enable_tiling()
# ```
#
# Each trades a little time for memory; the diffusers guide "Reduce memory usage" lists what they save.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1. Predict, then run.** How much does `noise_level` 350 damage the low-res input? Predict the
# PSNR of the noised low-res image against the clean one at levels 20 and 350. Then noise it
# yourself: `image` (section 4) `* sqrt(ᾱ) + noise * sqrt(1 − ᾱ)` with
# `ᾱ = pipe.low_res_scheduler.alphas_cumprod[level]`, check it against `low_res_scheduler.add_noise`,
# and turn it back into a picture with `pipe.image_processor.postprocess(..., output_type="pil")`.

# %%
# your attempt

# %% [markdown]
# **2. Predict, then run.** Take a strip of the original twice as wide as high (`original.crop(...)`,
# then `fit_for_upscaling` and `low_res_input`). Predict the shapes of the noised
# low-res image, the starting latents, the UNet's 7-channel input, its output and the decoded
# picture. Then build the UNet input yourself for the first timestep (`torch.cat` on the channel
# axis, as in section 4, without guidance) and call the UNet once.

# %%
# your attempt

# %% [markdown]
# **3. Predict, then run.** From v back to the clean latents: `x̂₀ = α_t·x_t − σ_t·v` (substitute
# `x_t` and `v` from section 4 to see why). Take the first timestep of a fresh run, call the UNet
# once (no guidance), compute `x̂₀` yourself and compare it with `pipe.scheduler.step(...)`'s
# `pred_original_sample`. Predict: decoded, how close is this very first guess to the original,
# compared with the finished upscale and with bicubic (PSNR)?

# %%
# your attempt

# %% [markdown]
# ## Summary
#
# - The x4 upscaler turns a low-res image + prompt into a 4x image; unlike bicubic it invents
#   detail, which looks sharp but is not always where the original had it (PSNR can say "worse").
#   Compare numbers only at the settings they were measured with (`tiny`'s: guidance 1).
# - `noise_level` (0 to `max_noise_level` = 350, default 20) noises the low-res image and tells the
#   UNet how much; higher = freer, less faithful. Above 350 is an error.
# - Its UNet has 7 input channels: 4 noisy latents + 3 low-res RGB channels, concatenated at every
#   step (img2img only starts from the image). It predicts `v = α_t·ε − σ_t·x₀`, not the noise.
# - It is an SD 2 model: its text encoder is OpenCLIP ViT-H/14 (1024 wide), not SD 1.5's CLIP (768).
# - Its VAE has 3 blocks: 4x downsampling, `scaling_factor` 0.08333 (SD 1.5: 4 blocks, 8x, 0.18215);
#   the latent is as big as the input.
# - It is memory hungry: keep inputs small, or use attention slicing and VAE tiling.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# At 20 the image keeps `sqrt(ᾱ)` ≈ 0.999 of itself and gets about 5% noise: still close. At 350
# it keeps 0.80 and gets 0.60 noise: heavily damaged, so the model must invent most of the detail.

# %%
noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(0)).to(image.device, image.dtype)
for level in (20, 350):
    a = pipe.low_res_scheduler.alphas_cumprod[level].to(image.device)
    mine = a.sqrt() * image + (1 - a).sqrt() * noise
    theirs = pipe.low_res_scheduler.add_noise(image, noise, torch.tensor([level], device=image.device))
    noisy = pipe.image_processor.postprocess(mine.float(), output_type="pil")[0]
    print(f"noise_level {level:3d}: max |mine - add_noise| {(mine - theirs).abs().max():.1e} | PSNR vs the clean input {psnr(noisy, low):.1f} dB")

# %% [markdown]
# ### Solution 2
# The latents have the low-res picture's height and width; the input has 4 + 3 channels; the
# output has 4; the decoder makes it 4x larger again.

# %%
strip = original.crop((0, 0, original.width, min(original.height, original.width // 2)))  # the top of the picture
half = fit_for_upscaling(strip, max_side=original.width)
half_low = low_res_input(half)
half_image = pipe.image_processor.preprocess(half_low).to(device, dtype)
half_noisy = pipe.low_res_scheduler.add_noise(half_image, torch.randn_like(half_image), noise_level)
pipe.scheduler.set_timesteps(upscale_settings["num_inference_steps"], device=device)
t = pipe.scheduler.timesteps[0]
x_t = torch.randn((1, 4, *half_image.shape[2:]), generator=torch.Generator().manual_seed(0)).to(device, dtype)
x = torch.cat([pipe.scheduler.scale_model_input(x_t, t), half_noisy], dim=1)
with torch.no_grad():
    out = pipe.unet(x, t, encoder_hidden_states=cond, class_labels=noise_level).sample
print("low-res", half_low.size, "| noised image", list(half_noisy.shape), "| latents", list(x_t.shape),
      "| UNet input", list(x.shape), "| output", list(out.shape), "| decoded", cu.decode_latents(pipe.vae, out)[0].size)

# %% [markdown]
# ### Solution 3
# `α_t·x_t − σ_t·v = α_t²·x₀ + α_t·σ_t·ε − σ_t·α_t·ε + σ_t²·x₀ = x₀`, since `α_t² + σ_t² = 1`. At
# the noisiest timestep the UNet can only predict the average picture that fits the low-res input,
# soft edges included, which PSNR rewards; the later steps sharpen edges, and an edge that is not
# exactly in place costs PSNR (section 2). So the first guess can score close to the finished
# upscale, or even above it: compare the printed numbers, and the pictures.

# %%
pipe.scheduler.set_timesteps(upscale_settings["num_inference_steps"], device=device)
t = pipe.scheduler.timesteps[0]
x_t = randn_tensor((1, 4, *image.shape[2:]), generator=torch.Generator().manual_seed(1), device=device, dtype=dtype)
x_t = x_t * pipe.scheduler.init_noise_sigma
x = torch.cat([pipe.scheduler.scale_model_input(x_t, t), noisy_image], dim=1)
with torch.no_grad():
    v = pipe.unet(x, t, encoder_hidden_states=cond, class_labels=noise_level).sample
a = pipe.scheduler.alphas_cumprod[int(t)]
x0_guess = a.sqrt() * x_t - (1 - a).sqrt() * v
from_step = pipe.scheduler.step(v, t, x_t).pred_original_sample
print(f"t = {int(t)}: max |mine - pred_original_sample| {(x0_guess - from_step).abs().max():.1e}")
guess = cu.decode_latents(pipe.vae, x0_guess)[0]
print(f"PSNR vs original: first guess {psnr(guess, original):.2f} dB | finished upscale {psnr(upscaled, original):.2f} dB"
      f" | bicubic {psnr(bicubic, original):.2f} dB")
cu.grid([guess, upscaled, original], min_width=256, titles=["first guess x̂₀", "finished upscale", "original"])
