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
#   built by hand and checked against the pipeline; the inpainting loop written out;
# - the alternative with a plain text-to-image model, **latent blending**, written out too, and where
#   the two differ at the mask's edge;
# - how much the region outside the mask changes, and how to paste the original back.
#
# Terms are defined where they first appear, and all in one place in the [glossary](../docs/glossary.md).

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about 5.5 GB
# from the Hugging Face Hub, again on every new runtime:
# SD 1.5 inpainting in fp16 + SD 1.5 in fp16.
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
import torch.nn.functional as F
from IPython.display import display

import course_utils as cu
from course_utils import by_hand, inpaint, masks

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
# Any image editor can paint a mask; here code draws it (`masks.lesson_mask`): with `sd15` an ellipse
# over the top of her head, where a hat goes; on `tiny` a rectangle around the circle. It must have
# the photo's size, pixel for pixel: the pipeline would silently stretch both to `height`×`width`, so
# a mismatched mask lands in the wrong place. `masks.check_mask` says so (the cell tries a wrong one).

# %%
settings = cu.default_settings(choice.profile)  # height, width, steps, guidance that suit this profile
size = (settings["width"], settings["height"])
image, mask = masks.load_pair(cu.image_name("photo", choice.profile), masks.lesson_mask(choice.profile, size), size=size)
prompt = cu.prompt("inpaint", choice.profile)
print("prompt:", prompt)
print("image:", image.mode, image.size, "| mask:", mask.mode, mask.size)
print("mask values:", np.unique(np.asarray(mask)), f"- white (repaint) share: {np.mean(np.asarray(mask) == 255):.1%}")

# a preview: the region to repaint tinted red
red = image.copy()
red.paste((255, 0, 0), mask=mask.point(lambda v: v // 2))
display(cu.grid([image, mask.convert("RGB"), red], cols=3, size=256,
                titles=["the photo", "the mask (white = repaint)", "the region to repaint, tinted"]))
try:
    masks.check_mask(image, masks.rect_mask((300, 200), (0.3, 0.0, 0.7, 0.2)))
except cu.CourseError as err:
    print("CourseError:", err)

# %% [markdown]
# The mask should be **black and white**. A grey value is rounded: diffusers' mask processor converts
# the mask to grayscale, scales it to [0, 1] and *binarises* it at 0.5, so ≥ 128 means repaint and
# < 128 means keep. A soft edge in your mask does not give a soft edit (section 6 pastes softly).

# %% [markdown]
# ## 2. Inpainting with the pipeline: the answer to the homework
#
# `StableDiffusionInpaintPipeline` takes `image=` and `mask_image=` besides the prompt. The `sd15`
# profile loads `stable-diffusion-v1-5/stable-diffusion-inpainting`: SD 1.5's architecture, trained
# further for this job. A `callback_on_step_end` keeps a copy of the tensors of the pipeline's last
# step, to compare with our own in sections 3 and 4.

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
    print("before:", cu.world.describe(image), "| after:", cu.world.describe(result))
cu.grid([image, mask.convert("RGB"), result], cols=3, size=256, titles=["the photo", "the mask", "inpainted"])

# %% [markdown]
# With `sd15` the astronaut gets a hat; on `tiny` the circle gives way to what the prompt asks for.
# Outside the mask the photo should stay as it was: the printed mean pixel changes compare inside
# and outside (section 6 looks closer). Each seed is one sample, as in lesson 1.

# %% [markdown]
# ## 3. What the 9 input channels hold
#
# The text-to-image UNet takes the 4 latent channels. The inpainting UNet takes **9**:

# %%
print("in_channels:", pipe.unet.config.in_channels, "| out_channels:", pipe.unet.config.out_channels)
print("conv_in weight:", tuple(pipe.unet.conv_in.weight.shape), "= [out, in, 3, 3]")
display(cu.diagrams.input_channels_diagram("text2img"))  # lessons 1-5: the noisy latents only
display(cu.diagrams.input_channels_diagram("inpaint", unet=pipe.unet))  # checks the count against this UNet

# %% [markdown]
# | channels (as indexed in the tensor) | what | shape (`tiny` / SD 1.5) |
# |---|---|---|
# | 0–3 | the noisy latents being denoised, as in text-to-image | `[1, 4, 16, 16]` / `[1, 4, 64, 64]` |
# | 4 | the mask, shrunk to latent size (1 = repaint, 0 = keep) | `[1, 1, 16, 16]` / `[1, 1, 64, 64]` |
# | 5–8 | the *masked image* (the photo with the white region blanked), VAE-encoded × `scaling_factor` | `[1, 4, 16, 16]` / `[1, 4, 64, 64]` |
#
# The output is still 4 channels, the predicted noise; only the first layer (`conv_in`) is wider.
# SD 1.5's inpainting model started from SD v1.2's weights, trained 595k steps as a
# text-to-image model, then got 5 more input channels with zero weights in `conv_in` and 440k steps of
# inpainting training with synthetic masks (its model card). `tiny`'s was made the same way from its
# own text-to-image UNet.
#
# We build the channels by hand, one move at a time, as the pipeline does. For an exact match the
# random draws come in the pipeline's order, from one generator: at strength 1 the starting noise
# first (lesson 3's x_T), then the VAE sample of the masked photo.

# %%
generator = torch.Generator(device="cpu").manual_seed(seed)
height, width, steps = settings["height"], settings["width"], settings["num_inference_steps"]
f = pipe.vae_scale_factor  # 8 for SD 1.5, 4 for tiny
pipe.scheduler.set_timesteps(steps, device=choice.device)
shape = (1, pipe.vae.config.latent_channels, height // f, width // f)
noise = torch.randn(shape, generator=generator, dtype=pipe.unet.dtype).to(choice.device) * pipe.scheduler.init_noise_sigma  # draw 1

# Simplified from course_utils.inpaint.masked_image_inputs
# 1. the mask as numbers: [H, W] in 0..255 -> [1, 1, H, W] in [0, 1], then binarised at 0.5
mask_pixels = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None]
mask_pixels = (mask_pixels >= 0.5).float()
# 2. the photo in [-1, 1] (lesson 4), and the masked photo: 0 (mid-grey) wherever the mask is 1
pixels = pipe.image_processor.preprocess(image, height=height, width=width)
masked_pixels = pixels * (mask_pixels < 0.5)
# 3. the mask at latent size: nearest neighbour keeps one pixel of each f x f block
mask_latent = F.interpolate(mask_pixels, size=(height // f, width // f)).to(choice.device, pipe.unet.dtype)
# 4. the masked photo through the VAE encoder: a sample (draw 2), times the scaling factor
with torch.no_grad():
    posterior = pipe.vae.encode(masked_pixels.to(choice.device, pipe.vae.dtype)).latent_dist
masked_image_latents = posterior.sample(generator) * pipe.vae.config.scaling_factor

for name, value in {"noise (x_T)": noise, "mask_pixels": mask_pixels, "masked_pixels": masked_pixels,
                    "mask_latent": mask_latent, "masked_image_latents": masked_image_latents}.items():
    print(f"{name:22s} {str(list(value.shape)):18s} min {value.min().item():6.2f}  max {value.max().item():6.2f}")

# %% [markdown]
# The checks: the pipeline's own mask and masked-image latents (kept by the callback in section 2; two
# copies each, for the unconditional and the text batch), and the package's `inpaint.masked_image_inputs`
# with a fresh generator drawn in the same order. Then the concatenation along the channel dimension,
# and what the 9 channels look like:

# %%
tol = by_hand.tolerance(choice.dtype)  # 1e-4 in float32, ~0.03 in fp16 (see its docstring)
check = torch.Generator(device="cpu").manual_seed(seed)
torch.randn(shape, generator=check)  # the noise comes first
reference = inpaint.masked_image_inputs(pipe, image, mask, check, height=height, width=width)
pairs = {
    "mask_pixels vs pipe.mask_processor": (mask_pixels, pipe.mask_processor.preprocess(mask, height=height, width=width)),
    "masked_pixels vs package": (masked_pixels, reference["masked_image"]),
    "mask_latent vs pipeline": (mask_latent, seen["mask"][:1]),
    "masked_image_latents vs pipeline": (masked_image_latents, seen["masked_image_latents"][:1]),
    "masked_image_latents vs package": (masked_image_latents, reference["masked_image_latents"]),
}
for name, (mine, theirs) in pairs.items():
    difference = (mine.float().cpu() - theirs.float().cpu()).abs().max().item()
    print(f"{name:34s} max abs difference {difference:.2e}")
    assert difference <= tol

x_in = torch.cat([noise, mask_latent, masked_image_latents], dim=1)
print("UNet input:", list(x_in.shape), "= 4 latents + 1 mask + 4 masked-image latents")
assert x_in.shape[1] == pipe.unet.config.in_channels == 9

masked_picture = pipe.image_processor.postprocess(masked_pixels, output_type="pil")[0]
display(cu.grid([image, masked_picture], cols=2, size=256, titles=["the photo", "the masked photo (encoded into 5-8)"]))
names = ["x_T"] * 4 + ["mask"] + ["masked"] * 4
cu.grid([cu.latent_to_image(x_in[0, i:i + 1], tile=96) for i in range(9)], cols=9,
        titles=[f"{i}: {name}" for i, name in enumerate(names)])

# %% [markdown]
# One tile per channel (each stretched to black..white): channels 0–3 are noise; channel 4 is the
# mask at latent resolution (blocky: one cell per f×f pixels); channels 5–8 are the masked photo's
# latents, where the blanked region shows as a flat patch. At *every* step the UNet sees, next to the
# noisy latents, where the hole is and what is around it: that is how it can continue the collar,
# the hair and the light into the hole.

# %% [markdown]
# ## 4. The inpainting loop by hand
#
# The loop is lesson 3's loop with one change: after `scale_model_input`, the 5 extra channels are
# appended to the latents before the UNet. The latents themselves stay 4 channels: the scheduler
# never sees the extra ones, which are the same at every step.

# %%
cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)  # lesson 2
uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, "")
text_embeddings = torch.cat([uncond, cond])
guidance = settings["guidance_scale"]
extra = torch.cat([mask_latent, masked_image_latents], dim=1)  # channels 4-8

# Simplified from course_utils.by_hand.denoise
latents = noise
with torch.no_grad():
    for t in pipe.scheduler.timesteps:
        x_in = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)  # 4 channels, scaled
        x_in = torch.cat([x_in, torch.cat([extra] * 2)], dim=1)  # + 5 = 9 channels, after the scaling
        eps_uncond, eps_text = pipe.unet(x_in, t, encoder_hidden_states=text_embeddings).sample.chunk(2)
        eps = eps_uncond + guidance * (eps_text - eps_uncond)
        latents = pipe.scheduler.step(eps, t, latents).prev_sample  # back to 4 channels

difference = (latents - seen["latents"]).abs().max().item()
latent_tol = by_hand.tolerance(choice.dtype, seen["latents"])  # in fp16 it grows with the latents' size
print(f"by hand vs pipeline: max abs latent difference {difference:.2e} (tolerance {latent_tol:.1e})")
assert difference <= latent_tol
by_hand_image = by_hand.to_pil(by_hand.decode(pipe.vae, latents))[0]
cu.grid([result, by_hand_image], cols=2, size=256, titles=["the pipeline", "by hand"])

# %% [markdown]
# ## 5. The alternative: latent blending with a plain text-to-image model
#
# Without an inpainting model you can still inpaint with the ordinary 4-channel model. The same
# pipeline class does it when its UNet has 4 input channels: after every `scheduler.step` it
# **pastes the original photo's latents back outside the mask**, re-noised to the next timestep so
# they are as noisy as the rest. `from_pipe` builds the inpainting pipeline around the text-to-image
# model's components without loading anything again:

# %%
from diffusers import StableDiffusionInpaintPipeline

text2img = cu.load_pipeline("text2img")
# pass dtype: from_pipe casts to it (default float32). diffusers 0.42 then notes that modules "should be
# kept in float32: []"; the list is empty, so cu.setup() filters that note out.
blend_pipe = StableDiffusionInpaintPipeline.from_pipe(text2img, dtype=choice.dtype)
print("UNet in_channels:", blend_pipe.unet.config.in_channels)

blend_seen = {}
blended = blend_pipe(
    prompt, image=image, mask_image=mask, generator=torch.Generator(device="cpu").manual_seed(seed),
    callback_on_step_end=keep_tensors(blend_seen), **settings,
).images[0]
cu.grid([image, result, blended], cols=3, size=256, titles=["the photo", "9-channel model", "latent blending"])

# %% [markdown]
# By hand: the photo's latents (the blending pipeline draws them *first*, then the noise), the same
# mask at latent size as in section 3, and lesson 3's loop with the blend after every step:
#
# `latents = mask · latents + (1 − mask) · noised_original`,
#
# where `noised_original` is the photo's latents noised with the *starting* noise to the next
# timestep, and after the last step the clean photo's latents, so that outside the mask the final
# latents *are* the photo's (the cell's last lines check that). (The pipeline then also encodes the
# masked photo, a third draw that a 4-channel UNet never uses; PNDM draws nothing afterwards, so we
# leave it out.)

# %%
generator = torch.Generator(device="cpu").manual_seed(seed)
with torch.no_grad():  # draw 1: the photo's latents
    image_latents = blend_pipe.vae.encode(pixels.to(choice.device, blend_pipe.vae.dtype)).latent_dist.sample(generator)
image_latents = image_latents * blend_pipe.vae.config.scaling_factor
blend_pipe.scheduler.set_timesteps(steps, device=choice.device)
blend_noise = torch.randn(shape, generator=generator, dtype=blend_pipe.unet.dtype).to(choice.device)  # draw 2
blend_embeddings = torch.cat([by_hand.encode_text(blend_pipe.tokenizer, blend_pipe.text_encoder, text) for text in ("", prompt)])

timesteps = blend_pipe.scheduler.timesteps
latents = blend_noise * blend_pipe.scheduler.init_noise_sigma
with torch.no_grad():
    for i, t in enumerate(timesteps):
        x_in = blend_pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)  # 4 channels only
        eps_uncond, eps_text = blend_pipe.unet(x_in, t, encoder_hidden_states=blend_embeddings).sample.chunk(2)
        latents = blend_pipe.scheduler.step(eps_uncond + guidance * (eps_text - eps_uncond), t, latents).prev_sample
        # Simplified from course_utils.inpaint.blend_latents
        # the blend: outside the mask, the photo as noisy as the next step expects (clean after the last)
        if i + 1 < len(timesteps):
            noised_original = blend_pipe.scheduler.add_noise(image_latents, blend_noise, timesteps[i + 1:i + 2])
        else:
            noised_original = image_latents
        latents = mask_latent * latents + (1 - mask_latent) * noised_original
blend_latents = latents

check = torch.Generator(device="cpu").manual_seed(seed)
package_photo = inpaint.encode_image(blend_pipe, pixels, check)
for name, mine, theirs in (("photo's latents vs package", image_latents, package_photo),
                           ("blending by hand vs pipeline", blend_latents, blend_seen["latents"])):
    difference = (mine - theirs).abs().max().item()
    latent_tol = by_hand.tolerance(choice.dtype, theirs)
    print(f"{name}: max abs difference {difference:.2e} (tolerance {latent_tol:.1e})")
    assert difference <= latent_tol

outside = (mask_latent < 0.5).expand_as(image_latents)  # the latent cells to keep
for name, final in {"latent blending": blend_seen["latents"], "9-channel model": seen["latents"]}.items():
    print(f"{name}: final latents outside the mask - photo's latents, max abs {(final - image_latents).abs()[outside].max().item():.3f}")

# %% [markdown]
# The 9-channel model's latents outside the mask are its own work: close to the photo's, because it
# learned to reproduce what it sees there, but not equal.
#
# **Where the two differ: the mask's edge.** With blending, the plain model sees the photo outside
# the mask only through the latents pasted in after each step, as noisy as that step (at first,
# nearly pure noise). It was trained to make whole pictures, not to fit a hole to its surroundings,
# so inside and outside can disagree where they meet: a **seam**, such as a hat whose colours do not
# match the hair around it, a line at the edge, a hat cut off by the mask. The 9-channel model sees
# the clean masked photo at every step and was trained to fill holes. For SD 1.5 the diffusers
# inpainting guide ("Non-inpaint specific checkpoints") shows it: the regular checkpoint leaves the
# outline of the masked area visible, the inpainting one a natural transition. (Blending works with
# any fine-tune, which is why tools still offer it.) Section 6 measures the step on this profile.

# %% [markdown]
# ## 6. What changed outside the mask — and pasting the original back
#
# The edit should touch only the white region. The table measures the **mean absolute pixel change**
# (0 = unchanged, 1 = black became white) inside and outside the mask, and the **border step**
# (`inpaint.border_step`): the mean colour step between neighbouring pixels on either side of the
# mask's border, where a seam would show; the photo's own is the reference. Its first row is a
# baseline: encoding the photo with the VAE and decoding it again, no denoising at all. Its last two
# rows are the cure for changes outside the mask: **paste the original pixels back** there, with
# diffusers' `image_processor.apply_overlay(mask, original, result)` (`inpaint.paste_back` calls it;
# PIL's `Image.composite(result, original, mask)` does the same).

# %%
round_trip = by_hand.to_pil(by_hand.decode(blend_pipe.vae, image_latents))[0]  # section 5's photo latents, decoded
pasted = {"9-channel, pasted back": inpaint.paste_back(image, result, mask),
          "blending, pasted back": inpaint.paste_back(image, blended, mask)}
rows = {"VAE round trip only": round_trip, "9-channel model": result, "latent blending": blended, **pasted}
print(f"{'':24s} {'inside':>7s} {'outside':>8s} {'border step':>12s}")
print(f"{'the photo':24s} {'':7s} {'':8s} {inpaint.border_step(image, mask):12.3f}")
for name, picture in rows.items():
    change = inpaint.region_change(image, picture, mask)
    print(f"{name:24s} {change['inside']:7.3f} {change['outside']:8.3f} {inpaint.border_step(picture, mask):12.3f}")
steps = {name: inpaint.border_step(picture, mask) for name, picture in pasted.items()}
print("the smaller step at the border here:", min(steps, key=steps.get))
if choice.profile == "tiny":  # what tiny shows, and what SD 1.5 shows instead
    print("tiny: blending left the smaller step in 35 of 36 pictures of the appendix's sweep (\"From lesson 08\"): its small "
          "inpainting UNet repaints the hole, but does not yet fit it to its surroundings.\nSD 1.5: the other way round; the "
          "regular model leaves the mask's outline visible (diffusers' inpainting guide, \"Non-inpaint specific checkpoints\").")
cu.grid([result, *pasted.values()], cols=3, size=256, titles=["9-channel model", *pasted])

# %% [markdown]
# Outside the mask the pasted images are the photo, exactly. Before pasting, both results differ
# there a little: both go through the VAE's round trip, which blurs fine detail (text, faces, hair;
# on `tiny` the shape's edges). A hard paste can leave a visible line at the mask's border; blur the
# mask you paste with to fade it: `pipe.mask_processor.blur(mask, blur_factor=8)`. (More in the
# appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 08".)

# %% [markdown]
# ## 7. Other ways to condition on an image (a pointer)
#
# Other image-conditioned pipelines add inputs too. **Depth-to-image** (`StableDiffusionDepth2ImgPipeline`,
# SD 2) concatenates a depth map of your photo as a 5th input channel, so the new picture keeps the
# photo's 3D layout. **ControlNet** (`StableDiffusionControlNetPipeline`) keeps the UNet's 4 channels
# and adds a trainable copy of its down and middle blocks that reads a control image (edges, a pose, a
# depth map) and adds its features to the UNet's skip connections (the `down_block_additional_residuals`
# and `mid_block_additional_residual` arguments of `UNet2DConditionModel.forward`). Lesson 11 takes it apart.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1.** Predict, then run: a thin line in the mask, 2 pixels wide, starting at x = m + 1, and another
# starting at x = m, where m = `(width // 2 // f) * f` is a multiple of f = `pipe.vae_scale_factor` near
# the middle. How many latent cells of channel 4 does each become? Draw both with
# `masks.rect_mask(size, (left, 0, left + 2, height))` and build channel 4 by hand (moves 1 and 3 of
# section 3). What is the 9-channel model then told to repaint for the first line?

# %%
# your attempt

# %% [markdown]
# **2.** Predict, then run: the inpainting UNet started from a text-to-image UNet with the weights
# that read channels 4–8 set to zero. Are they still near zero? If you give it an *empty* mask (all
# black: nothing to repaint, and the masked photo is the whole photo), does its predicted noise change
# compared with the lesson's mask? Does it then equal the text-to-image UNet's, on the same latents?
# Build the 5 channels for the empty mask by hand and make one UNet call of each kind.

# %%
# your attempt

# %% [markdown]
# **3.** Predict, then run: inpaint with `cu.prompt("another_edit", ...)` and `strength=0.5`, and paste
# back. How many of the steps run, from which timestep (lesson 4)? What stays of the old content inside
# the mask? With `sd15`, replace the helmet in the bottom right corner with a cat (draw a rectangle mask
# with `masks.rect_mask`); on `tiny`, use the lesson's mask.

# %%
# your attempt

# %% [markdown]
# ## Summary
# - Inpainting repaints the white part of a mask and keeps the black part: `StableDiffusionInpaintPipeline(prompt, image=..., mask_image=...)`;
#   the mask must have the photo's size, and it is binarised at 0.5.
# - SD's inpainting UNet has **9 input channels**: 4 noisy latents + 1 mask (shrunk to latent size by nearest
#   neighbour) + 4 latents of the masked photo, concatenated after `scale_model_input`. It sees the surroundings of
#   the hole in every step; only `conv_in` is wider than SD 1.5's.
# - A plain 4-channel model can inpaint by **latent blending**: after each step,
#   `latents = mask · latents + (1 − mask) · noised_original`. It never sees the surroundings, so edges show seams.
# - Both go through the VAE, which changes the unmasked region slightly: paste the original back
#   (`image_processor.apply_overlay` or `Image.composite`).
# - Other image conditioning adds inputs too: a depth channel (`StableDiffusionDepth2ImgPipeline`) or a
#   ControlNet's features (`StableDiffusionControlNetPipeline`).

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# Nearest-neighbour resizing keeps the pixel at the top-left of each f×f block (x = 0, f, 2f, …). The
# line at m + 1 covers none of them and vanishes; the line at m covers x = m and becomes one whole
# column of cells, each standing for f×f pixels.

# %%
from PIL import ImageOps

m = (width // 2 // f) * f  # a multiple of f near the middle
pictures, titles = [], []
for left in (m + 1, m):
    line = masks.rect_mask(size, (left, 0, left + 2, height))
    line_pixels = (torch.from_numpy(np.asarray(line, dtype=np.float32) / 255)[None, None] >= 0.5).float()
    channel_4 = F.interpolate(line_pixels, size=(height // f, width // f))
    print(f"line at x = {left}-{left + 1}: {int(line_pixels.sum())} pixels -> {int(channel_4.sum())} latent cells")
    package = inpaint.masked_image_inputs(pipe, image, line, torch.Generator().manual_seed(seed), height=height, width=width)["mask"]
    assert torch.equal(channel_4, package.float().cpu())
    frame = dict(border=max(1, width // 64), fill="gray")  # a grey frame, so black tiles stay apart
    pictures += [ImageOps.expand(line.convert("RGB"), **frame), ImageOps.expand(cu.latent_to_image(channel_4[0], tile=width), **frame)]
    titles += [f"mask, line at x = {left}-{left + 1}", f"its channel 4: {int(channel_4.sum())} cells"]
cu.grid(pictures, cols=4, size=192, titles=titles)

# %% [markdown]
# For the first line, channel 4 says "keep everything"; only the masked photo in channels 5–8 still
# carries a thin grey stripe. The model is not told to repaint anything there. Any f neighbouring
# pixels hold one that is kept, so make every part of a mask at least f pixels wide (grow thin strokes).

# %% [markdown]
# ### Solution 2

# %%
weight = pipe.unet.conv_in.weight  # [out, 9, 3, 3]
print(f"mean |weight| on channels 0-3: {weight[:, :4].abs().mean().item():.4f} | on channels 4-8: {weight[:, 4:].abs().mean().item():.4f}")

t = pipe.scheduler.timesteps[0]
empty = masks.rect_mask(size, (0, 0, 0, 0))  # all black: nothing to repaint
empty_pixels = (torch.from_numpy(np.asarray(empty, dtype=np.float32) / 255)[None, None] >= 0.5).float()
no_hole_mask = F.interpolate(empty_pixels, size=(height // f, width // f)).to(choice.device, pipe.unet.dtype)
no_hole_pixels = pixels * (empty_pixels < 0.5)  # the whole photo
with torch.no_grad():
    no_hole_latents = pipe.vae.encode(no_hole_pixels.to(choice.device, pipe.vae.dtype)).latent_dist.sample(torch.Generator().manual_seed(seed))
    no_hole_latents = no_hole_latents * pipe.vae.config.scaling_factor
    with_lesson_mask = pipe.unet(torch.cat([noise, extra], 1), t, encoder_hidden_states=cond).sample
    with_no_mask = pipe.unet(torch.cat([noise, no_hole_mask, no_hole_latents], 1), t, encoder_hidden_states=cond).sample
    plain = text2img.unet(noise, t, encoder_hidden_states=cond).sample
print(f"lesson mask vs no mask, max abs difference in the predicted noise: {(with_lesson_mask - with_no_mask).abs().max().item():.2e}")
print(f"inpainting UNet vs text-to-image UNet:                             {(with_no_mask - plain).abs().max().item():.2e}")

# %% [markdown]
# Both inpainting models started with the weights on channels 4–8 at exactly zero: then the mask
# and the masked photo could not change the output. Training with synthetic masks made those weights
# useful: now they are not zero, and the mask changes the prediction. The last line mixes two causes
# on `sd15`: SD 1.5's inpainting model did not start from SD 1.5's UNet but from SD v1.2's, trained
# 595k more steps before its inpainting training (its model card), so it differs from SD 1.5's UNet
# even where the mask adds nothing. On `tiny` it started from this very text-to-image UNet, so there
# the difference is the inpainting training alone.

# %% [markdown]
# ### Solution 3

# %%
if choice.profile == "tiny":
    edit_mask = mask  # tiny's scene has no helmet: the circle's box again
else:
    edit_mask = masks.rect_mask(size, (0.52, 0.62, 1.0, 1.0))  # left, top, right, bottom as fractions
cat_prompt = cu.prompt("another_edit", choice.profile)
recorder = cu.LatentRecorder()  # records every step's timestep
cat = pipe(cat_prompt, image=image, mask_image=edit_mask, strength=0.5, generator=torch.Generator(device="cpu").manual_seed(seed),
           callback_on_step_end=recorder, **settings).images[0]
cat_pasted = inpaint.paste_back(image, cat, edit_mask)
print("prompt:", cat_prompt)
print(f"strength 0.5: {len(recorder.steps)} of {settings['num_inference_steps']} steps ran, from t={recorder.timesteps[0]}")
change = inpaint.region_change(image, cat_pasted, edit_mask)
print(f"mean pixel change after pasting back: inside the mask {change['inside']:.3f} | outside {change['outside']:.3f}")
if choice.profile == "tiny":
    print("what the picture shows:", cu.world.describe(cat_pasted))
cu.grid([image, edit_mask.convert("RGB"), cat_pasted], cols=3, size=256, titles=["the photo", "the mask", "strength 0.5, pasted back"])

# %% [markdown]
# `strength` works as in image-to-image (lesson 4): below 1, the pipeline does not start from pure
# noise but from the photo's latents noised to an intermediate timestep, and runs only the last
# `strength` × steps. Inside the mask the result keeps the photo's colours and layout (with `sd15`,
# a cat shaped and lit like the helmet; on `tiny`, a shape that starts from the red circle); at the
# default `strength=1.0` the region is generated anew.
