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
# # Lesson 8 — Inpainting: edit one region of a photo
#
# The source lesson ends with a homework question: *can Stable Diffusion change one part of a
# picture, given a mask and a prompt?* Learners asked the same thing ("Can I edit a photo, e.g. add
# a hat?") and where the answer is. This lesson is the answer: yes, with inpainting.
#
# **What you will learn**
# - how to put a hat on the astronaut (on `tiny`: replace a red circle) with
#   `StableDiffusionInpaintPipeline`: a photo, a mask (white = repaint, black = keep) and a prompt;
# - what the inpainting UNet's **9 input channels** hold (latents + mask + masked-image latents),
#   built by hand and checked against the pipeline;
# - the alternative with a plain text-to-image model, **latent blending**, and why the dedicated
#   model makes cleaner edges;
# - how much the region outside the mask changes, and how to paste the original back.

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
import numpy as np
import torch
from diffusers import StableDiffusionInpaintPipeline
from IPython.display import display

import course_utils as cu
from course_utils import by_hand, inpaint

choice = cu.setup("inpaint")  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. The photo, the mask and the prompt
#
# Inpainting needs three things:
# - the **photo** (with `sd15` NASA's portrait of astronaut Eileen Collins, `data/astronaut.png`;
#   on `tiny`, whose model knows only its world of shapes, `data/tiny_scene.png`: a red circle on blue);
# - a **mask** of the same size: **white = repaint**, **black = keep**;
# - a **prompt** that describes what should appear in the white region (and may describe the whole picture).
#
# A mask can be painted in any image editor; here it is drawn by code (`inpaint.lesson_mask`): with
# `sd15` an ellipse over the top of her head, where a hat goes; on `tiny` a rectangle around the
# circle. Its box is in fractions of the image size, so it fits every resolution.

# %%
settings = cu.default_settings(choice.profile)  # height, width, steps, guidance that suit this profile
size = (settings["width"], settings["height"])
image, mask = inpaint.load_pair(cu.image_name("photo", choice.profile), inpaint.lesson_mask(choice.profile, size), size=size)
prompt = cu.prompt("inpaint", choice.profile)
print("prompt:", prompt)
print("image:", image.mode, image.size, "| mask:", mask.mode, mask.size)
print("mask values:", np.unique(np.asarray(mask)), f"- white (repaint) share: {np.mean(np.asarray(mask) == 255):.1%}")

# a preview: the region to repaint tinted red
red = image.copy()
red.paste((255, 0, 0), mask=mask.point(lambda v: v // 2))
cu.grid([image, mask.convert("RGB"), red], cols=3, size=256)

# %% [markdown]
# Two rules for masks:
# - **Same size as the photo, pixel for pixel.** The course checks it and says what to do (the pipeline
#   itself would silently stretch both to `height`×`width`, so a mismatched mask lands in the wrong place):

# %%
try:
    inpaint.check_mask(image, inpaint.rect_mask((300, 200), (0.3, 0.0, 0.7, 0.2)))
except cu.CourseError as err:
    print("CourseError:", err)

# %% [markdown]
# - **Black and white.** A grey value is rounded: diffusers' mask processor converts the mask to
#   grayscale, scales it to [0, 1] and *binarises* it at 0.5, so ≥ 128 means repaint and < 128
#   means keep. A soft edge in your mask does not give a soft edit (see step 6 for soft pasting).

# %% [markdown]
# ## 2. Inpainting with the pipeline: the answer to the homework
#
# `StableDiffusionInpaintPipeline` takes `image=` and `mask_image=` besides the prompt. The `sd15`
# profile loads `stable-diffusion-v1-5/stable-diffusion-inpainting`: SD 1.5's architecture, trained further for this job.
#
# We keep a copy of the tensors the pipeline uses at its last step with `callback_on_step_end`,
# to compare with our own in steps 3 and 4.

# %%
pipe = cu.load_pipeline("inpaint")
seed = 0


def keep_tensors(store):
    """A `callback_on_step_end` that copies the tensors the pipeline hands it into `store`."""
    def callback(pipe, step, t, tensors):
        store.update({name: value.detach().clone() for name, value in tensors.items()})
        return tensors
    return callback


seen = {}
result = pipe(
    prompt, image=image, mask_image=mask, generator=torch.Generator(device="cpu").manual_seed(seed),
    callback_on_step_end=keep_tensors(seen), callback_on_step_end_tensor_inputs=["latents", "mask", "masked_image_latents"],
    **settings,
).images[0]
change = inpaint.region_change(image, result, mask)
print(f"mean pixel change: inside the mask {change['inside']:.3f} | outside {change['outside']:.3f}")
if choice.profile == "tiny":
    print("before:", cu.world.classify(image))
    print("after: ", cu.world.classify(result))
cu.grid([image, mask.convert("RGB"), result], cols=3, size=256)

# %% [markdown]
# With `sd15` the astronaut gets a hat and the rest of the photo stays as it was. On `tiny` the
# red circle gives way to what the prompt asks for, inside the white box, while the blue around it
# stays: the change inside the mask is large, the change outside small (step 6 looks closer).
# Try a few seeds: as in lesson 1, each is one sample.

# %% [markdown]
# ## 3. What the 9 input channels hold
#
# The text-to-image UNet takes the 4 latent channels. The inpainting UNet takes **9**:

# %%
print("in_channels:", pipe.unet.config.in_channels, "| out_channels:", pipe.unet.config.out_channels)
print("conv_in weight:", tuple(pipe.unet.conv_in.weight.shape), "= [out, in, 3, 3]")

# %% [markdown]
# | channels | what | shape (`tiny` / SD 1.5) |
# |---|---|---|
# | 1–4 | the noisy latents being denoised, as in text-to-image | `[1, 4, 16, 16]` / `[1, 4, 64, 64]` |
# | 5 | the mask, shrunk to latent size (1 = repaint, 0 = keep) | `[1, 1, 16, 16]` / `[1, 1, 64, 64]` |
# | 6–9 | the *masked image* (the photo with the white region blanked), VAE-encoded × `scaling_factor` | `[1, 4, 16, 16]` / `[1, 4, 64, 64]` |
#
# The output is still 4 channels: the predicted noise of the latents. Only the first layer (`conv_in`)
# is wider; SD's inpainting model was made from SD's text-to-image model by adding 5 input channels
# with zero weights to `conv_in` and training further with synthetic masks (440k steps).
#
# Let us build channels 5–9 by hand, as the pipeline does (`inpaint.masked_image_inputs`):
# 1. preprocess the photo to a tensor in [-1, 1] and the mask to 0/1 (`pipe.image_processor`, `pipe.mask_processor`);
# 2. masked image = photo × (mask < 0.5): the white region becomes 0, i.e. mid-grey;
# 3. the mask shrunk to the latents' size (nearest neighbour): by `pipe.vae_scale_factor`, 8× for SD 1.5, 4× for `tiny`;
# 4. the masked image through the VAE encoder (a *sample* of its latent distribution) × `scaling_factor`.
#
# The order of random draws matters for an exact match: the pipeline draws the starting noise
# first, then the VAE sample, from the same generator. We do the same.

# %%
generator = torch.Generator(device="cpu").manual_seed(seed)
height, width = settings["height"], settings["width"]
pipe.scheduler.set_timesteps(settings["num_inference_steps"], device=choice.device)
noise = by_hand.initial_latents(1, pipe.unet, pipe.scheduler, height, width, generator, choice.device, pipe.unet.dtype,
                                vae_scale_factor=pipe.vae_scale_factor)
parts = inpaint.masked_image_inputs(pipe, image, mask, generator, height=height, width=width)
for name, value in parts.items():
    print(f"{name:22s} {str(list(value.shape)):18s} min {value.min().item():6.2f}  max {value.max().item():6.2f}")

# %%
extra = torch.cat([parts["mask"], parts["masked_image_latents"]], dim=1)  # channels 5-9
x_in = torch.cat([noise, extra], dim=1)
print("UNet input:", list(x_in.shape), "= 4 latents + 1 mask + 4 masked-image latents")
assert x_in.shape[1] == pipe.unet.config.in_channels == 9

# %%
# The pipeline's own channels 5-9, kept by the callback (two copies each: unconditional and text batch).
tol = by_hand.tolerance(choice.dtype)  # 1e-4 in float32, ~0.03 in fp16 (see its docstring)
d_mask = (seen["mask"][:1] - parts["mask"]).abs().max().item()
d_masked = (seen["masked_image_latents"][:1] - parts["masked_image_latents"]).abs().max().item()
print(f"mask: max abs difference {d_mask:.2e} | masked-image latents: max abs difference {d_masked:.2e}")
assert d_mask <= tol and d_masked <= tol

# %%
masked_picture = pipe.image_processor.postprocess(parts["masked_image"], output_type="pil")[0]
display(cu.grid([masked_picture, cu.latent_to_image(parts["mask"], tile=256)], cols=2, size=256))
cu.latent_to_image(parts["masked_image_latents"], tile=128)

# %% [markdown]
# Top: the masked image (the region to repaint blanked to grey) and channel 5, the mask at latent
# resolution (blocky: one cell per 8×8 pixels with SD 1.5, 4×4 on `tiny`). Below: channels 6–9, the
# masked image's 4 latent channels.
#
# At *every* step the UNet sees, next to the noisy latents, where the hole is and what is around
# it. That is how it learns to continue the collar, the hair and the light into the hole (on
# `tiny`: the blue background).

# %% [markdown]
# ## 4. The inpainting loop by hand
#
# The loop is lesson 3's loop, with one change: after `scale_model_input`, the 5 extra channels are
# appended to the latents before the UNet (`by_hand.denoise(..., extra_channels=...)`). The latents
# themselves stay 4 channels; the scheduler never sees the extra ones.

# %%
cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
latents = by_hand.denoise(pipe.unet, pipe.scheduler, noise, cond, uncond, settings["guidance_scale"],
                          extra_channels=extra, generator=generator)
difference = (latents - seen["latents"]).abs().max().item()
latent_tol = by_hand.tolerance(choice.dtype, seen["latents"])  # in fp16 it grows with the latents' size
print(f"by hand vs pipeline: max abs latent difference {difference:.2e} (tolerance {latent_tol:.1e})")
assert difference <= latent_tol

# %%
by_hand_image = by_hand.to_pil(by_hand.decode(pipe.vae, latents))[0]
cu.grid([result, by_hand_image], cols=2, size=256)

# %% [markdown]
# ## 5. The alternative: latent blending with a plain text-to-image model
#
# Without an inpainting model you can still inpaint with the ordinary 4-channel model. The same
# pipeline class does it when its UNet has 4 input channels: after every `scheduler.step` it
# **pastes the original photo's latents back outside the mask**, re-noised to the next timestep so
# they are as noisy as the rest:
#
# ```python
# latents = scheduler.step(noise_pred, t, latents).prev_sample
# original = scheduler.add_noise(image_latents, noise, next_t)    # the photo, as noisy as step t+1 expects
# latents = (1 - mask) * original + mask * latents                # keep the model's work only inside the mask
# ```
#
# (`inpaint.blend_latents` is this step.) `from_pipe` builds the inpainting pipeline around the
# text-to-image model's components without loading anything again:

# %%
text2img = cu.load_pipeline("text2img")
# pass dtype: from_pipe casts to it (default float32). diffusers 0.42 then logs a harmless note that
# modules "should be kept in float32: []" - the list is empty.
blend_pipe = StableDiffusionInpaintPipeline.from_pipe(text2img, dtype=choice.dtype)
print("UNet in_channels:", blend_pipe.unet.config.in_channels)

blend_seen = {}
blended = blend_pipe(
    prompt, image=image, mask_image=mask, generator=torch.Generator(device="cpu").manual_seed(seed),
    callback_on_step_end=keep_tensors(blend_seen), **settings,
).images[0]
cu.grid([image, result, blended], cols=3, size=256)

# %% [markdown]
# Left to right: the photo, the 9-channel model, latent blending. After the last step blending
# pastes the photo's clean latents, so outside the mask the final latents *are* the photo's latents:

# %%
# the photo's latents, drawn as the blending pipeline draws them: photo first, then noise, then masked photo
generator = torch.Generator(device="cpu").manual_seed(seed)
photo = inpaint.preprocess(blend_pipe, image, mask, height=height, width=width)["image"]
image_latents = inpaint.encode_image(blend_pipe, photo, generator)
blend_pipe.scheduler.set_timesteps(settings["num_inference_steps"], device=choice.device)
blend_noise = by_hand.initial_latents(1, blend_pipe.unet, blend_pipe.scheduler, height, width, generator, choice.device,
                                      blend_pipe.unet.dtype, vae_scale_factor=blend_pipe.vae_scale_factor)
blend_parts = inpaint.masked_image_inputs(blend_pipe, image, mask, generator, height=height, width=width)

outside = (blend_parts["mask"] < 0.5).expand_as(image_latents)  # the latent cells to keep
for name, final in {"latent blending": blend_seen["latents"], "9-channel model": seen["latents"]}.items():
    print(f"{name}: final latents outside the mask - photo's latents, max abs {(final - image_latents).abs()[outside].max().item():.3f}")

# %% [markdown]
# Exactly zero for blending. The 9-channel model's latents outside the mask are its own work:
# close to the photo's, because it learned to reproduce what it sees there, but not equal.

# %% [markdown]
# **Why the dedicated model does better at the mask's edge.** With blending, the plain model never
# knows what is outside the mask: at each step it denoises the whole picture as if it were free, and
# the pasted photo only *overwrites* its work outside. Inside and outside are made by two different
# processes that meet at the mask's border, so you get **seams**: a hat whose colours and light do
# not match the hair around it, a line at the edge, a hat cut off by the mask. The 9-channel model
# sees the masked photo and the mask in every step, and was trained to make the hole fit its
# surroundings. (Blending also works for any fine-tune you have, which is why tools still offer it.)
#
# Compare the edges in the two results above: the hat's with `sd15`; on `tiny` the new shape's
# border and the background right at the mask's edge. The `tiny` inpainting UNet was made like SD's:
# from its text-to-image UNet with 5 input channels added at zero, then trained on random masks
# (exercise 2 looks at those weights).

# %% [markdown]
# ## 6. What changed outside the mask — and pasting the original back
#
# The edit should touch only the white region. We measure the **mean absolute pixel change** (0 =
# unchanged, 1 = black became white) inside and outside the mask. A baseline: just encoding the
# photo with the VAE and decoding it again (no denoising at all) already changes it a little.

# %%
round_trip = by_hand.to_pil(by_hand.decode(pipe.vae, inpaint.encode_image(pipe, parts["image"], torch.Generator(device="cpu").manual_seed(seed))))[0]
rows = {"VAE round trip only": round_trip, "9-channel model": result, "latent blending": blended}
print(f"{'':22s} {'inside':>8s} {'outside':>8s}")
for name, picture in rows.items():
    change = inpaint.region_change(image, picture, mask)
    print(f"{name:22s} {change['inside']:8.3f} {change['outside']:8.3f}")

# %% [markdown]
# The outside numbers are small but not zero: both results go through the VAE's round trip, which
# blurs fine detail (text, faces, hair; on `tiny` the shape's edges) a little; the 9-channel model,
# which regenerates the whole image, can drift a bit more.
#
# The cure is to **paste the original pixels back** outside the mask. diffusers has it as
# `image_processor.apply_overlay(mask, original, result)` (`inpaint.paste_back` calls it; a PIL
# `Image.composite(result, original, mask)` does the same):

# %%
pasted = inpaint.paste_back(image, result, mask)
pasted_blend = inpaint.paste_back(image, blended, mask)
for name, picture in {"9-channel, pasted": pasted, "blending, pasted": pasted_blend}.items():
    change = inpaint.region_change(image, picture, mask)
    print(f"{name:22s} inside {change['inside']:.3f}  outside {change['outside']:.3f}")
cu.grid([result, pasted, pasted_blend], cols=3, size=256)

# %% [markdown]
# Outside the mask the pasted images are the photo, exactly. A hard paste can leave a visible line
# at the mask's border; blur the mask you paste with to fade it: `pipe.mask_processor.blur(mask, blur_factor=8)`.

# %% [markdown]
# ## Exercises
#
# 1. **Latent blending by hand.** Reproduce `blend_pipe`'s result with `by_hand.denoise` and an
#    `on_step` function that applies `inpaint.blend_latents` after every step; check the latents
#    against the pipeline's.
# 2. **The inpainting model's starting point.** Look at the `conv_in` weights that read channels 5–9.
#    Run the inpainting UNet once with the lesson's mask and once with an empty mask: does its output
#    change? Compare with the text-to-image UNet on the same latents.
# 3. **Another edit, and `strength`.** Inpaint with `cu.prompt("another_edit", ...)` and `strength=0.5`, and paste
#    back: with `sd15`, replace the helmet in the bottom right corner with a cat (draw a rectangle mask
#    with `inpaint.rect_mask`); on `tiny`, use the lesson's mask. What does `strength` do here, and how
#    many steps run?

# %% [markdown]
# ### Solution 1

# %%
timesteps = blend_pipe.scheduler.timesteps
blend_cond = by_hand.encode_text(blend_pipe.tokenizer, blend_pipe.text_encoder, prompt)
blend_uncond = by_hand.encode_text(blend_pipe.tokenizer, blend_pipe.text_encoder, "")


def paste_original(i, t, latents):
    """After step i: the photo's latents (noised to the next timestep) outside the mask."""
    next_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
    return inpaint.blend_latents(latents, image_latents, blend_noise, blend_parts["mask"], blend_pipe.scheduler, next_t)


# image_latents, blend_noise and blend_parts come from step 5, drawn in the pipeline's order
blend_latents = by_hand.denoise(blend_pipe.unet, blend_pipe.scheduler, blend_noise, blend_cond, blend_uncond,
                                settings["guidance_scale"], on_step=paste_original, generator=generator)
difference = (blend_latents - blend_seen["latents"]).abs().max().item()
latent_tol = by_hand.tolerance(choice.dtype, blend_seen["latents"])
print(f"blending by hand vs pipeline: max abs latent difference {difference:.2e} (tolerance {latent_tol:.1e})")
assert difference <= latent_tol

# %% [markdown]
# For an exact match, the random draws must come in the pipeline's order: the blending pipeline
# encodes the photo (a VAE *sample*, drawn from the generator) before it draws the noise, then
# encodes the masked photo too, although a 4-channel UNet never uses it. Step 5 did the same.

# %% [markdown]
# ### Solution 2

# %%
w = pipe.unet.conv_in.weight  # [out, 9, 3, 3]
print("mean |weight| on channels 1-4:", w[:, :4].abs().mean().item(), "| on channels 5-9:", w[:, 4:].abs().mean().item())

t = pipe.scheduler.timesteps[0]
x = noise.to(pipe.unet.dtype)
empty = inpaint.rect_mask(size, (0, 0, 0, 0))  # all black: nothing to repaint
no_hole = inpaint.masked_image_inputs(pipe, image, empty, torch.Generator(device="cpu").manual_seed(seed))
with torch.no_grad():
    with_lesson_mask = pipe.unet(torch.cat([x, extra], 1), t, encoder_hidden_states=cond).sample
    with_no_mask = pipe.unet(torch.cat([x, no_hole["mask"], no_hole["masked_image_latents"]], 1), t, encoder_hidden_states=cond).sample
    plain = text2img.unet(x, t, encoder_hidden_states=cond).sample
print(f"lesson mask vs no mask, max abs difference in the predicted noise: {(with_lesson_mask - with_no_mask).abs().max().item():.2e}")
print(f"inpainting UNet vs text-to-image UNet:                             {(with_no_mask - plain).abs().max().item():.2e}")

# %% [markdown]
# Both inpainting models started with the weights on channels 5–9 at exactly zero: then the mask
# and the masked photo could not change the output, and the inpainting UNet equalled the
# text-to-image UNet. Training with synthetic masks made those weights useful: now they are not
# zero, the mask changes the prediction, and the two UNets differ.

# %% [markdown]
# ### Solution 3

# %%
if choice.profile == "tiny":
    edit_mask = mask  # tiny's scene has no helmet: the circle's box again
else:
    edit_mask = inpaint.rect_mask(size, (0.52, 0.62, 1.0, 1.0))  # left, top, right, bottom as fractions
cat_prompt = cu.prompt("another_edit", choice.profile)
recorder = cu.LatentRecorder()  # records every step's timestep
cat = pipe(cat_prompt, image=image, mask_image=edit_mask, strength=0.5, generator=torch.Generator(device="cpu").manual_seed(seed),
           callback_on_step_end=recorder, **settings).images[0]
cat_pasted = inpaint.paste_back(image, cat, edit_mask)
print("prompt:", cat_prompt)
print(f"strength 0.5: {len(recorder.steps)} of {settings['num_inference_steps']} steps ran, from t={recorder.timesteps[0]}")
print("change after pasting back:", {k: round(v, 3) for k, v in inpaint.region_change(image, cat_pasted, edit_mask).items()})
cu.grid([image, edit_mask.convert("RGB"), cat_pasted], cols=3, size=256)

# %% [markdown]
# `strength` works as in image-to-image (lesson 4): below 1, the pipeline does not start from pure
# noise but from the photo's latents noised to an intermediate timestep, and runs only the last
# `strength` × steps. Inside the mask the result keeps the photo's colours and layout (with `sd15`,
# a cat shaped and lit like the helmet; on `tiny`, a shape that starts from the red circle); at the
# default `strength=1.0` the region is generated anew.

# %% [markdown]
# ## Summary
# - Inpainting repaints the white part of a mask and keeps the black part: `StableDiffusionInpaintPipeline(prompt, image=..., mask_image=...)`;
#   the mask must have the photo's size, and it is binarised at 0.5.
# - SD's inpainting UNet has **9 input channels**: 4 noisy latents + 1 mask (at latent size) + 4 latents of the
#   masked photo. It sees the surroundings of the hole in every step; only `conv_in` is wider than SD 1.5's.
# - A plain 4-channel model can inpaint by **latent blending**: after each step paste the photo's re-noised
#   latents outside the mask. It never sees the surroundings, so edges show seams.
# - Both go through the VAE, which changes the unmasked region slightly: paste the original back
#   (`image_processor.apply_overlay` or `Image.composite`).
