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
# - What `noise_level` does, its range (0 to 350) and its default (20).
# - Why the upscaler's UNet has 7 input channels, and run its denoising loop by hand.
# - Why its VAE shrinks images only 4x (scaling factor 0.08333 instead of SD 1.5's 0.18215).
# - How to keep larger inputs within a GPU's memory.

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
import course_utils as cu
from course_utils import by_hand

choice = cu.setup("upscale")  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. A low-resolution photo
#
# To judge an upscaler we need the answer: we take a picture, shrink it 4x, let the upscaler
# enlarge it again and compare with the original. With `sd15` the picture is a photo of Chelsea
# the cat; the `tiny` upscaler was trained on the course's world of shapes, so there it is a green
# square on white (`cu.image_name("upscale", ...)` picks the file). `low_res_input` averages each 4x4
# block of pixels into one, like a camera with bigger pixels. The sizes come from the profile:
# 512 → 128 → 512 with `sd15`, 64 → 16 → 64 with `tiny`.

# %%
import torch
from PIL import Image

from course_utils.upscale import check_noise_level, low_res_input, psnr

settings = cu.default_settings(choice.profile)


def show(images):
    """The images side by side, enlarged without smoothing to at least 256 pixels wide (64 is small on screen)."""
    zoom = max(1, 256 // images[0].width)
    return cu.grid([im.resize((im.width * zoom, im.height * zoom), Image.Resampling.NEAREST) for im in images])


original = cu.load_image(cu.image_name("upscale", choice.profile), size=settings["height"])
low = low_res_input(original, factor=4)
print("original:", original.size, " low-res input:", low.size)
# nearest-neighbour enlargement shows the low-res pixels as they are
show([low.resize(original.size, Image.Resampling.NEAREST), original])

# %% [markdown]
# ## 2. Upscale with a prompt, next to bicubic
#
# `cu.load_pipeline("upscale")` gives a `StableDiffusionUpscalePipeline`. Its parts: a CLIP
# tokenizer and text encoder, a UNet, a VAE, *two* schedulers (`scheduler` denoises the latents,
# `low_res_scheduler` adds noise to the low-res image - section 3) and optional `safety_checker`,
# `feature_extractor` and `watermarker`, which the Hub model does not include (`None`).
#
# The x4 VAE overflows in float16, so we keep it in float32 (on a GPU the rest loads in float16).
# Otherwise the pipeline converts it at every call through a deprecated method.

# %%
pipe = cu.load_pipeline("upscale")
if pipe.vae.dtype != torch.float32:
    pipe.vae.float()
print({name: type(part).__name__ if part is not None else None for name, part in pipe.components.items()})
print("dtypes: unet", pipe.unet.dtype, "| vae", pipe.vae.dtype)

# %% [markdown]
# The call looks like text-to-image plus an `image`. The output size follows the input: 4x each
# side. Plain bicubic resizing (`Image.Resampling.BICUBIC`) is the baseline: it interpolates
# between known pixels and invents nothing, so edges come out soft.
#
# PSNR (peak signal-to-noise ratio, in dB) measures how close each result is to the original;
# higher is closer. With `sd15` you get sharp fur and whiskers. On `tiny` the upscaler keeps the
# shape, its colour and the background and draws sharp edges where bicubic blurs; over 20 scenes
# it scores about 2.3 dB *above* bicubic (29.9 vs 27.6 dB; `data/tiny/README.md`), though not on
# every picture. PSNR rewards blur and punishes invented detail that is not exactly in place, so
# on photos even a good upscaler often scores near or below bicubic (an earlier `tiny` upscaler,
# trained half as long, drew sharp but wobbly edges and scored 1 dB below). Look at the pictures,
# not only the number. On `tiny`, `cu.world.classify` says which of colour, shape and background
# survived.

# %%
prompt = cu.prompt("describe_photo", choice.profile)
steps = settings["num_inference_steps"]
print(f"prompt: {prompt!r}  steps: {steps}")

upscaled = pipe(prompt, image=low, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).images[0]
bicubic = low.resize(original.size, Image.Resampling.BICUBIC)
print("upscaled:", upscaled.size)
print(f"PSNR vs original: bicubic {psnr(bicubic, original):.2f} dB | x4 upscaler {psnr(upscaled, original):.2f} dB")
if choice.profile == "tiny":
    for name, picture in [("original", original), ("x4 upscaler", upscaled)]:
        print(f"{name:11s}", cu.world.classify(picture))
show([bicubic, upscaled, original])

# %% [markdown]
# ## 3. `noise_level`: how much the model may invent
#
# Before the low-res image conditions the UNet, the pipeline adds noise to it: `noise_level` is a
# timestep of the `low_res_scheduler` (a `DDPMScheduler`), so the image becomes
# `sqrt(ᾱ) * image + sqrt(1 - ᾱ) * noise`. The same number is also handed to the UNet as a label
# (`class_labels`, looked up in an embedding table of `num_class_embeds` = 1000 rows), so the
# model knows how much to trust its input. During training the inputs were noised the same way up
# to level 350; the model learned to *not* copy the blocky or noisy parts of its input.
#
# - low (`0`, the default `20`): stay close to the input;
# - high (`100` to `350`): the input counts for less and the model invents more, e.g. for generated
#   images whose small artefacts you do not want enlarged (Stability suggests about 100 for those).
#
# Note that this noise goes onto the low-res *image* in pixel space; the denoising itself, as in
# every lesson, adds and removes noise in the *latents*.

# %%
alphas_cumprod = pipe.low_res_scheduler.alphas_cumprod
levels = [0, 20, 100, 350]
for level in levels:
    a = alphas_cumprod[level]
    print(f"noise_level {level:3d}: image x {a.sqrt().item():.3f} + noise x {(1 - a).sqrt().item():.3f}")
print("max_noise_level:", pipe.config.max_noise_level)
assert pipe.config.max_noise_level == 350

# %%
sweep = []
for level in levels:
    if level == 20:  # the default: section 2 already made this one, with the same seed
        image = upscaled
    else:
        image = pipe(prompt, image=low, noise_level=level, num_inference_steps=steps,
                     generator=torch.Generator().manual_seed(0)).images[0]
    sweep.append(image)
    print(f"noise_level {level:3d}: PSNR {psnr(image, original):.2f} dB")
show(sweep)

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
# SD 1.5's UNet takes 4 channels (the noisy latents). The upscaler's takes 7:

# %%
print("in_channels:", pipe.unet.config.in_channels, "| out_channels:", pipe.unet.config.out_channels)
print("num_class_embeds:", pipe.unet.config.num_class_embeds)
print("prediction_type:", pipe.scheduler.config.prediction_type)
assert pipe.unet.config.in_channels == 7 and pipe.scheduler.config.prediction_type == "v_prediction"

# %% [markdown]
# 4 noisy latents + 3 RGB channels of the (noised) low-res image, concatenated along the channel
# axis **at every step**. That is the difference from img2img (lesson 4), which only *starts* from
# the image's noised latents and never sees the image again (so a high `strength` can drift far
# from it): here every step sees the input again, which keeps the result aligned with it. The
# latents have the same height and width as the low-res image, pixel for pixel (section 5 says why).
#
# The UNet predicts `v` (a mix of noise and clean latents, `prediction_type="v_prediction"`)
# instead of the noise; `scheduler.step` knows how to use it. Below, the whole pipeline by hand for
# a few steps, with the same seed; it must give the pipeline's latents. The generator draws the
# image noise first, then the starting latents, as the pipeline does.

# %%
from diffusers.utils.torch_utils import randn_tensor

hand_steps, level, guidance = 3, 20, 9.0  # 9.0 is the pipeline's default guidance_scale
reference = pipe(prompt, image=low, noise_level=level, num_inference_steps=hand_steps, guidance_scale=guidance,
                 generator=torch.Generator().manual_seed(0), output_type="latent").images

device = pipe.device
cond, uncond = pipe.encode_prompt(prompt, device, 1, True)  # text embeddings, with and without the prompt
text = torch.cat([uncond, cond])
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
        x = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        x = torch.cat([x, torch.cat([noisy_image] * 2)], dim=1)  # 4 + 3 = 7 channels
        v_both = pipe.unet(x, t, encoder_hidden_states=text, class_labels=noise_level.repeat(2)).sample
        v_uncond, v_text = v_both.chunk(2)
        v = v_uncond + guidance * (v_text - v_uncond)
        if i == 0:  # batch 2 = without and with the prompt (classifier-free guidance)
            print("UNet input:", list(x.shape), "= latents", list(latents.shape), "+ noisy low-res image",
                  list(noisy_image.shape), "(twice)")
            print("UNet output:", list(v_both.shape), "-> after guidance:", list(v.shape))
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
# sits on exactly one latent position (`tiny`: a 64x64 output, a 16x16 latent, a 16x16 input). Its `scaling_factor` differs too: each VAE's latents are
# multiplied by the number that gives them roughly unit variance, and for this VAE that is 0.08333.
# The pipeline insists on it: loaded with any other value, it warns and overwrites it with 0.08333.
# (The `tiny` upscaler's VAE is the `tiny` text-to-image VAE, which also has 3 blocks, but whose
# latents need a factor of ~0.34. Rather than fight the pipeline, `models.surgery.upscaler_vae` folds the
# ratio into the two 1x1 convolutions around the latent - its latents come out ~4x larger, the
# images stay the same - so that 0.08333 is right for it too. Used as it was, the UNet would
# have seen latents of std 0.25, and each of its errors would come out of the decoder 4x larger. The
# first `tiny` upscaler was trained that way, and for fewer steps: 18.7 dB against this one's 29.9.)

# %%
from course_utils.models.configs import SD15_VAE  # SD 1.5's vae/config.json values (lesson 2 loads the file)

for name, config in [("x4 upscaler", pipe.vae.config), ("SD 1.5", SD15_VAE)]:
    blocks = len(config["block_out_channels"])
    print(f"{name:11s}: scaling_factor {config['scaling_factor']} | {blocks} blocks -> {2 ** (blocks - 1)}x smaller")

decoded = cu.decode_latents(pipe.vae, latents)[0]
print("latents", list(latents.shape), "-> decoded image", decoded.size)

# %% [markdown]
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
# 1. **Does the prompt matter?** Upscale the same low-res input with the matching prompt and with a
#    wrong one (`cu.prompt("restyle", ...)`), same seed. Show both next to each other and print
#    their PSNR. (With `sd15` the wrong prompt adds odd texture; on `tiny`, check with
#    `cu.world.classify` whether it changes the colour or the shape.)
# 2. **A safe upscale.** Write `safe_upscale(pipe, image, prompt, noise_level=20)` that checks the
#    noise level with `check_noise_level`, checks that the input's sides are multiples of 8 and
#    raises `cu.CourseError` otherwise, then calls the pipeline. Try `noise_level=20`, `350.5`, `400`.
# 3. **Predict the latent's shape** for a non-square input: the picture at 256x192 (width x height)
#    with `sd15`, 96x64 with `tiny`, shrunk 4x. Which shape do the latents have, and which size the
#    output? Check with `output_type="latent"` and 2 steps. (`low_res_input` wants sides that are
#    multiples of 32, so that the low-res image's are multiples of 8.)

# %% [markdown]
# ### Solution 1

# %%
wrong_prompt = cu.prompt("restyle", choice.profile)
wrong = pipe(wrong_prompt, image=low, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).images[0]
# `upscaled` (section 2) used the matching prompt, the same seed and the same settings
for text_prompt, image in [(prompt, upscaled), (wrong_prompt, wrong)]:
    print(f"{text_prompt!r}: PSNR {psnr(image, original):.2f} dB")
    if choice.profile == "tiny":
        print("   ", cu.world.classify(image))
show([upscaled, wrong])

# %% [markdown]
# ### Solution 2

# %%
def safe_upscale(pipe, image, prompt, noise_level=20, **kwargs):
    check_noise_level(pipe, noise_level)
    w, h = image.size
    if w % 8 or h % 8:
        raise cu.CourseError(f"The input is {w}x{h}; the upscaler needs sides that are multiples of 8.")
    return pipe(prompt, image=image, noise_level=noise_level, **kwargs).images[0]


print(safe_upscale(pipe, low, prompt, 20, num_inference_steps=2).size)
for bad in (350.5, 400):
    try:
        safe_upscale(pipe, low, prompt, bad)
    except cu.CourseError as err:
        print("CourseError:", str(err).split(". ")[0])

# %% [markdown]
# ### Solution 3
#
# `sd15`: the low-res image is 64x48; the latents have its height and width, `[1, 4, 48, 64]`, and
# the output is 4x: 256x192. `tiny`: 24x16, latents `[1, 4, 16, 24]`, output 96x64.

# %%
wide_size = (96, 64) if choice.profile == "tiny" else (256, 192)  # (width, height), sides multiples of 32
wide = low_res_input(cu.load_image(cu.image_name("upscale", choice.profile), size=wide_size))
wide_latents = pipe(prompt, image=wide, num_inference_steps=2, output_type="latent").images
print("low-res:", wide.size, "latents:", list(wide_latents.shape), "output:", cu.decode_latents(pipe.vae, wide_latents)[0].size)

# %% [markdown]
# ## Summary
#
# - The x4 upscaler turns a low-res image + prompt into a 4x image; unlike bicubic it invents
#   detail, which looks sharp but is not always where the original had it (PSNR can say "worse").
# - `noise_level` (0 to `max_noise_level` = 350, default 20) noises the low-res image and tells the
#   UNet how much; higher = freer, less faithful. Above 350 is an error.
# - Its UNet has 7 input channels: 4 noisy latents + 3 low-res RGB channels, concatenated at every
#   step (img2img only starts from the image). It predicts `v`, not the noise.
# - Its VAE has 3 blocks: 4x downsampling, `scaling_factor` 0.08333 (SD 1.5: 4 blocks, 8x, 0.18215);
#   the latent is as big as the input.
# - It is memory hungry: keep inputs small, or use attention slicing and VAE tiling.
