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
# # Lesson 3 — The denoising loop by hand
#
# **What you will learn**
# - why Stable Diffusion adds noise (in training) and removes it (in generation), and what is noised: the *latents*, never the text;
# - classifier-free guidance: an unconditional (empty-prompt) embedding next to the prompt's, one UNet batch of 2;
# - the loop itself: `scheduler.scale_model_input` → UNet predicts the noise ε → guidance → `scheduler.step`;
# - what the latents look like along the way, as raw 4-channel latents and as decoded images;
# - that your loop gives *exactly* the pipeline's result for the same seed, with any scheduler.

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
import time

import matplotlib.pyplot as plt
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from IPython.display import display
from PIL import Image

import course_utils as cu
from course_utils import by_hand

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why

# %% [markdown]
# ## 1. The parts, and the settings
#
# We load the pipeline only to take its five parts out; from step 4 on we drive them ourselves.
# On `sd15` the cells draw an astronaut on a horse; on `tiny` (the course's small model, trained on
# one coloured shape on a plain background) a red circle on a blue background, 64x64. The mechanics
# (the loop, the match with the pipeline) are the same; only the sizes differ. All sizes come from the
# settings and the pipeline: the image size from `cu.default_settings`, and the VAE's downsampling
# factor from `pipe.vae_scale_factor` (8 for SD 1.5, 4 for `tiny`).

# %%
pipe = cu.load_pipeline("text2img")
tokenizer, text_encoder, unet, scheduler, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.scheduler, pipe.vae
device, dtype = choice.device, choice.dtype

settings = cu.default_settings(choice.profile)
height, width = settings["height"], settings["width"]
num_inference_steps = settings["num_inference_steps"]
w = settings["guidance_scale"]  # the guidance scale w
vae_scale = pipe.vae_scale_factor  # pixels per latent cell: 2 ** (number of VAE blocks - 1)
prompt = cu.prompt("main", choice.profile)
seed = 0
print(settings, "|", prompt)
print(f"latents: {height // vae_scale}x{width // vae_scale} for a {height}x{width} image (vae_scale_factor {vae_scale})")
print("scheduler:", type(scheduler).__name__)

# %% [markdown]
# ## 2. Why add noise and then remove it?
#
# **Training.** Take a real image, encode it with the VAE into latents x₀, pick a random timestep t
# and mix in Gaussian noise ε:  x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε. The UNet gets x_t, t and the
# caption's text embedding c, and is trained to predict ε (loss: mean squared error). The noise goes
# into the **latents** of the image; the text embedding is never noised, it only tells the UNet what
# the image shows.
#
# **Generation.** Start from pure noise x_T (there is no image yet) and, step by step, let the UNet
# predict the noise and the scheduler remove a part of it, guided by c. Because the UNet learned to
# denoise *every* noise level, it can walk from pure noise to a clean image.
#
# Here is the training side on a real image (the astronaut photo for `sd15`, the red circle on blue
# for `tiny`), with the scheduler SD 1.5 was trained with (DDPM, same noise schedule as the pipeline's):

# %%
ddpm = DDPMScheduler.from_config(scheduler.config)
photo = cu.load_image(cu.image_name("photo", choice.profile), size=(width, height))
with torch.no_grad():
    pixels = pipe.image_processor.preprocess(photo).to(device, dtype)  # [1, 3, H, W] in [-1, 1]
    x0 = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # latents x₀, [1, 4, H/f, W/f], f = vae_scale
eps = torch.randn(x0.shape, generator=torch.Generator("cpu").manual_seed(seed)).to(device, dtype)

shown_t = [0, 250, 500, 750, 999]
noised = [ddpm.add_noise(x0, eps, torch.tensor([t])) for t in shown_t]
for t in shown_t:
    print(f"t={t:3d}: sqrt(alpha_bar)={ddpm.alphas_cumprod[t].sqrt():.3f} (image)  sqrt(1-alpha_bar)={(1 - ddpm.alphas_cumprod[t]).sqrt():.3f} (noise)")
display(cu.grid(cu.decode_latents(vae, torch.cat(noised)), size=128))

# %% [markdown]
# One training step, without the weight update: a random t, the noised latents, the UNet's guess of ε
# and the loss. Training pushed this loss down, averaged over all t; 1 is what always guessing ε = 0
# would score:

# %%
with torch.no_grad():
    t = torch.randint(0, ddpm.config.num_train_timesteps, (1,), generator=torch.Generator("cpu").manual_seed(seed))
    c_train = pipe.encode_prompt(prompt, device, 1, False)[0]  # the caption's embedding: not noised
    x_t = ddpm.add_noise(x0, eps, t)  # only the latents are noised
    eps_pred = unet(x_t, t.to(device), encoder_hidden_states=c_train).sample
    loss = torch.nn.functional.mse_loss(eps_pred.float(), eps.float())
print(f"t={t.item()}  loss = MSE(ε_θ(x_t, t, c), ε) = {loss.item():.3f}")

# %% [markdown]
# The same loss at the timesteps shown above. For a trained UNet it is usually lowest at high t (x_t is
# almost pure noise, so the noise is easy to tell) and highest at low t (a faint noise on a clean image
# is hard to tell from detail):

# %%
with torch.no_grad():
    for t_i, x_t in zip(shown_t, noised):
        eps_pred = unet(x_t, torch.tensor([t_i], device=device), encoder_hidden_states=c_train).sample
        print(f"t={t_i:3d}: loss {torch.nn.functional.mse_loss(eps_pred.float(), eps.float()).item():.3f}")

# %% [markdown]
# ## 3. The text embeddings for classifier-free guidance
#
# Guidance needs two predictions per step: one with the prompt's embedding c, one with an
# *unconditional* embedding — the embedding of the empty prompt `""`. Both go through the same
# tokenizer (77 tokens: start, end, then padding) and the same CLIP text encoder.

# %%
def embed(texts):
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return tokens.input_ids, text_encoder(tokens.input_ids.to(device))[0]


ids, c = embed([prompt])
ids_uncond, c_uncond = embed([""])
print("empty prompt's first token ids:", ids_uncond[0, :5].tolist(), "(start, then end tokens as padding)")

# %%
print("c        (prompt):", tuple(c.shape))
print("c_uncond (empty): ", tuple(c_uncond.shape))
text_embeddings = torch.cat([c_uncond, c])  # unconditional FIRST, then the prompt (the pipeline's order)
print("stacked:          ", tuple(text_embeddings.shape))
assert text_embeddings.shape[:2] == (2, 77)

# %% [markdown]
# They are the same embeddings the pipeline computes:

# %%
pipe_c, pipe_c_uncond = pipe.encode_prompt(prompt, device, 1, True)
print("max |c - pipe|:", (c - pipe_c).abs().max().item(), " max |c_uncond - pipe|:", (c_uncond - pipe_c_uncond).abs().max().item())
assert torch.equal(c, pipe_c) and torch.equal(c_uncond, pipe_c_uncond)

# %% [markdown]
# ## 4. The starting noise x_T
#
# x_T is Gaussian noise of the latents' shape `[1, 4, H/f, W/f]` (f = `pipe.vae_scale_factor`: `[1, 4, 64, 64]`
# for SD 1.5 at 512x512, `[1, 4, 16, 16]` for `tiny` at 64x64), times the scheduler's
# `init_noise_sigma` (1.0 for PNDM). We draw it with a **CPU** generator: the pipeline's `randn_tensor`
# then also draws on the CPU and moves the noise to the device, so a seed gives the same noise on any
# machine — and the pipeline, given the same seed, starts from exactly this x_T.

# %%
scheduler.set_timesteps(num_inference_steps, device=device)
generator = torch.Generator("cpu").manual_seed(seed)
shape = (1, unet.config.in_channels, height // vae_scale, width // vae_scale)
x_T = torch.randn(shape, generator=generator, dtype=dtype).to(device) * scheduler.init_noise_sigma
print("x_T:", tuple(x_T.shape), f"std={x_T.std().item():.3f}", "init_noise_sigma =", scheduler.init_noise_sigma)
print(len(scheduler.timesteps), "timesteps:", scheduler.timesteps[:6].tolist(), "...", scheduler.timesteps[-3:].tolist())

# %% [markdown]
# PNDM (the default scheduler of SD 1.5) visits one timestep twice at the start: a warm-up step of its
# multistep method, so it makes one step more than `num_inference_steps`.

# %% [markdown]
# ## 5. The loop
#
# For each timestep t (from noisy to clean):
# 1. duplicate the latents, x_in = [x_t, x_t], one copy per embedding;
# 2. `scheduler.scale_model_input(x_in, t)` (does nothing for PNDM, rescales for Euler — always call it);
# 3. the UNet predicts the noise: ε_θ(x_t, t, c_uncond) and ε_θ(x_t, t, c) in one batch of 2;
# 4. guidance: ε = ε_uncond + w · (ε_text − ε_uncond), pushing away from "any image" towards "this prompt";
# 5. `scheduler.step` removes the right amount of that noise: x_t → x_{t-1}.
#
# We keep the latents after every step, to look at them afterwards, and one more thing: the
# model's current **guess of the clean latents**, x̂_0. Training noised a clean z_0 as
# x_t = √ᾱ_t · z_0 + √(1 − ᾱ_t) · ε (ᾱ_t is `scheduler.alphas_cumprod[t]`), so with the predicted
# noise ε̂ in place of ε we can solve for it: x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t. x_t stays mostly
# noise until the last steps; x̂_0 shows what the model is aiming at all along. (DDIM's and Euler's
# `scheduler.step` return it as `pred_original_sample`; PNDM's does not, so we write it out.)

# %%
latents = x_T
every_latent = []  # x_{t-1} after each step, on the CPU
every_guess = []  # x̂_0 at each step: the model's guess of the clean latents
start = time.perf_counter()
with torch.no_grad():
    for i, t in enumerate(scheduler.timesteps):
        # 1. one copy of x_t for the unconditional prediction, one for the text-conditioned one
        x_in = torch.cat([latents] * 2)
        # 2. scale for this scheduler and timestep
        x_in = scheduler.scale_model_input(x_in, t)
        # 3. ε_θ(x_t, t, c) for c = c_uncond and c = prompt, in one UNet call
        unet_out = unet(x_in, t, encoder_hidden_states=text_embeddings).sample
        # 4. classifier-free guidance with scale w
        eps_uncond, eps_text = unet_out.chunk(2)
        eps = eps_uncond + w * (eps_text - eps_uncond)
        # (x̂_0 from x_t and the guided ε̂, before the step changes x_t)
        alpha_bar = scheduler.alphas_cumprod[int(t)].to(device, torch.float32)
        every_guess.append(((latents.float() - (1 - alpha_bar).sqrt() * eps.float()) / alpha_bar.sqrt()).cpu())
        # 5. x_t -> x_{t-1}
        latents = scheduler.step(eps, t, latents).prev_sample
        every_latent.append(latents.detach().to("cpu", torch.float32).clone())
print(f"{len(every_latent)} steps in {time.perf_counter() - start:.1f} s")
print(f"UNet input {tuple(x_in.shape)} -> output {tuple(unet_out.shape)} (one ε̂ per copy); guided ε̂ {tuple(eps.shape)}")
x_0 = latents

# %% [markdown]
# ## 6. Watch it happen
#
# Every few steps: the raw latent (its 4 channels side by side, each stretched to black..white), the
# image the VAE decodes from it, and below that the decoded guess x̂_0. Decoded x_t stays noisy until
# near the end; x̂_0 shows the picture forming: first the rough layout (with `sd15` the figure and the
# horse; with `tiny` the background colour and a blob where the shape will be), then its colour and,
# last, the details.

# %%
n_steps = len(every_latent)
every = max(1, n_steps // 5)
kept = [i for i in range(n_steps) if i % every == 0 or i == n_steps - 1]
print("steps shown:", kept)
display(cu.grid([cu.latent_to_image(every_latent[i], tile=64) for i in kept], cols=1))
print("top: x_t decoded after steps", [i + 1 for i in kept], "| bottom: the guess x̂_0 at those steps")
display(cu.grid(cu.decode_latents(vae, torch.cat([every_latent[i] for i in kept] + [every_guess[i] for i in kept])),
                size=128, cols=len(kept)))

# %% [markdown]
# **Where the overall colour comes from.** SD 1.5's schedule never noises a picture away
# completely: at the first timestep part of it is still in x_t, and training noised pictures the same
# way. A picture's average colour is one number per latent channel, and the noise's own average over
# a channel is small, so a model can learn to read the overall colour from the starting noise
# instead of from the prompt:

# %%
t_first = int(scheduler.timesteps[0])
signal = scheduler.alphas_cumprod[t_first].sqrt().item()
cells = x_T[0, 0].numel()
print(f"t = {t_first}: x_t = {signal:.3f} * z_0 + {(1 - signal**2) ** 0.5:.3f} * noise")
print("x_T's mean per channel:", [round(v, 3) for v in x_T.float().mean(dim=(2, 3))[0].tolist()],
      f"- typically +-1/sqrt({cells}) = +-{cells ** -0.5:.3f}")

# %% [markdown]
# On `tiny`'s 16x16 latents that average is large enough to matter (±0.06; ±0.016 on SD 1.5's
# 64x64), and the first trained `tiny` did exactly this: for 9 of 12 seeds, "a green circle on a
# black background" and "... on a red background" came out with the *same* background, and only 43%
# of backgrounds matched the prompt. The fix is in training: add a random constant per image and
# channel to the training noise (**offset noise**; diffusers' training scripts call it
# `--noise_offset`), so the noise's average says nothing and the prompt has to decide. 3,000 more
# training steps with it took backgrounds from 43% to 100% (`data/tiny/README.md`). The same leak,
# milder, is why SD 1.5 struggles to draw a very dark or very bright picture (Guttenberg, 2023,
# "Diffusion with offset noise"; Lin et al., 2024, "Common Diffusion Noise Schedules and Sample
# Steps are Flawed").

# %% [markdown]
# And every step, with a slider: x_t decoded, the guess x̂_0 decoded, and x_t's 4 latent channels.

# %%
decoded = [cu.decode_latents(vae, lat)[0] for lat in every_latent]
guessed = [cu.decode_latents(vae, g)[0] for g in every_guess]


def frame(latent, image, guess, side=256):
    strip = cu.latent_to_image(latent, tile=side // 2)
    canvas = Image.new("RGB", (2 * side + strip.width, side), "white")
    canvas.paste(image.resize((side, side), Image.Resampling.NEAREST), (0, 0))
    canvas.paste(guess.resize((side, side), Image.Resampling.NEAREST), (side, 0))
    canvas.paste(strip, (2 * side, side // 4))
    return canvas


frames = [frame(lat, im, g) for lat, im, g in zip(every_latent, decoded, guessed)]
labels = [f"step {i + 1}/{n_steps}, t={int(t)}: x_t | x̂_0 | x_t's 4 channels" for i, t in enumerate(scheduler.timesteps)]
cu.step_slider(frames, labels)

# %% [markdown]
# ## 7. The same as the pipeline
#
# Now the pipeline, with the same seed: its latents after every step (recorded by `cu.LatentRecorder`
# through `callback_on_step_end`) and its final image must equal ours. `output_type="pt"` returns the
# image as a tensor in [0, 1], which we compare with our own VAE decode.

# %%
recorder = cu.LatentRecorder(every=1)
result = pipe(prompt, height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=w,
              generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", callback_on_step_end=recorder)
with torch.no_grad():
    our_image = (vae.decode(x_0 / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

tol = by_hand.tolerance(dtype, recorder.latents[-1])  # 1e-4 in float32; fp16 on a GPU rounds more (see its docstring)
print(f"tolerance: {tol:.1e}")
step_diff = max((a - b).abs().max().item() for a, b in zip(every_latent, recorder.latents))
latent_diff = (x_0.cpu().float() - recorder.latents[-1]).abs().max().item()
flagged = any(result.nsfw_content_detected or [])  # sd15's safety checker blacks out a flagged image (lesson 2, §8)
image_diff = 0.0 if flagged else (our_image.cpu().float() - result.images.cpu().float()).abs().max().item()
print(f"steps recorded: {len(recorder.latents)} (ours: {len(every_latent)})")
print(f"max abs difference, latents at every step: {step_diff:.2e}")
print(f"max abs difference, final latents:         {latent_diff:.2e}")
print("the safety checker blacked out the pipeline's image: only the latents are compared" if flagged else
      f"max abs difference, final image:           {image_diff:.2e}")
assert len(recorder.latents) == len(every_latent) and max(step_diff, latent_diff, image_diff) <= tol
if choice.profile == "tiny":
    print("what the picture shows:", cu.world.classify(cu.decode_latents(vae, x_0)[0]))
display(cu.grid(cu.decode_latents(vae, x_0) + pipe.image_processor.postprocess(result.images.float(), output_type="pil", do_denormalize=[False]), size=256))

# %% [markdown]
# The loop is packaged as `course_utils.by_hand` (`encode_text`, `initial_latents`, `denoise`, `decode`):
# the same code as above, used by the later lessons (img2img, negative prompts, inpainting).

# %% [markdown]
# ## 8. Swap the scheduler
#
# The scheduler decides *which* timesteps to visit and *how much* noise `step` removes; the UNet is the
# same. A multistep solver such as DPM-Solver++ gets a good image in half the steps (or fewer).
# Euler shows why `init_noise_sigma` and `scale_model_input` matter: it works with σ (noise level),
# starts from noise with the std of its first σ (well above 1: about 9 to 15 depending on the number of
# steps, printed below) and divides the UNet input
# by √(σ² + 1). With PNDM both are no-ops,
# so a loop that forgets them "works" — until you swap the scheduler.
#
# For each scheduler: the pipeline with it, our loop (`by_hand.denoise`) with it, and the difference.

# %%
fewer_steps = max(4, num_inference_steps // 2)  # 25 on sd15: plenty for these two
swaps = {"DPM-Solver++": (DPMSolverMultistepScheduler, fewer_steps), "Euler": (EulerDiscreteScheduler, fewer_steps)}
finals = {"PNDM": x_0}
for name, (cls, steps) in swaps.items():
    pipe.scheduler = cls.from_config(scheduler.config)
    ref = pipe(prompt, height=height, width=width, num_inference_steps=steps, guidance_scale=w,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images

    sched = cls.from_config(scheduler.config)
    sched.set_timesteps(steps, device=device)
    g = torch.Generator("cpu").manual_seed(seed)
    x = by_hand.initial_latents(1, unet, sched, height, width, g, device, c.dtype, vae_scale_factor=vae_scale)
    print(f"{name}: {steps} steps, init_noise_sigma={float(sched.init_noise_sigma):.2f}, x_T std={x.std().item():.2f}", end="; ")
    x = by_hand.denoise(unet, sched, x, c, c_uncond, w, generator=g)
    diff = (x - ref).abs().max().item()
    print(f"max abs difference with the pipeline: {diff:.2e}")
    assert diff <= tol
    finals[name] = x
pipe.scheduler = scheduler  # put the original back
display(cu.grid(cu.decode_latents(vae, torch.cat(list(finals.values()))), size=256))
print("left to right:", list(finals))

# %% [markdown]
# ## Exercises
#
# 1. **Guidance scale 1 vs the default** (7.5 for SD 1.5, 3 for `tiny`). With `guidance_scale=1` the formula gives ε = ε_text, so the pipeline
#    skips the unconditional half altogether. Count the UNet's batch size with a forward hook for both
#    scales, time them, and check that `by_hand.denoise` still matches the pipeline at w = 1.

# %% [markdown]
# ### Solution

# %%
quick_steps = max(4, num_inference_steps // 5)  # enough to see the difference
batch_sizes = []
hook = unet.register_forward_pre_hook(lambda module, args: batch_sizes.append(args[0].shape[0]))
try:
    for scale in (1.0, w):
        batch_sizes.clear()
        start = time.perf_counter()
        ref = pipe(prompt, height=height, width=width, num_inference_steps=quick_steps, guidance_scale=scale,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
        seconds = time.perf_counter() - start
        scheduler.set_timesteps(quick_steps, device=device)
        g = torch.Generator("cpu").manual_seed(seed)
        x = by_hand.denoise(unet, scheduler, by_hand.initial_latents(1, unet, scheduler, height, width, g, device, c.dtype, vae_scale_factor=vae_scale),
                            c, c_uncond if scale > 1 else None, scale, generator=g)
        diff = (x - ref).abs().max().item()
        print(f"w={scale}: UNet batch {batch_sizes[0]}, pipeline {seconds:.2f} s for {quick_steps} steps, max abs difference {diff:.2e}")
        assert diff <= tol
finally:
    hook.remove()

# %% [markdown]
# 2. **Write the loop for `DDIMScheduler`.** Replace the scheduler, write the five steps again yourself
#    (DDIM's `step` also takes η, `eta`; the pipeline passes `eta=0.0`, a deterministic sampler) and
#    match the pipeline with DDIM.

# %% [markdown]
# ### Solution

# %%
ddim = DDIMScheduler.from_config(scheduler.config)
ddim_steps = max(4, num_inference_steps // 5)
ddim.set_timesteps(ddim_steps, device=device)
latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype).to(device) * ddim.init_noise_sigma
with torch.no_grad():
    for t in ddim.timesteps:
        x_in = ddim.scale_model_input(torch.cat([latents] * 2), t)
        eps_uncond, eps_text = unet(x_in, t, encoder_hidden_states=text_embeddings).sample.chunk(2)
        eps = eps_uncond + w * (eps_text - eps_uncond)
        latents = ddim.step(eps, t, latents, eta=0.0).prev_sample

pipe.scheduler = DDIMScheduler.from_config(scheduler.config)
ref = pipe(prompt, height=height, width=width, num_inference_steps=ddim_steps, guidance_scale=w,
           generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
pipe.scheduler = scheduler
diff = (latents - ref).abs().max().item()
print(f"DDIM, {ddim_steps} steps: max abs difference with the pipeline {diff:.2e}")
assert diff <= tol

# %% [markdown]
# 3. **Plot the latents' standard deviation per step**, for PNDM (the latents kept in step 5) and for
#    Euler (use `on_step` of `by_hand.denoise`). Where does each start, and why so differently?

# %% [markdown]
# ### Solution

# %%
euler = EulerDiscreteScheduler.from_config(scheduler.config)
euler.set_timesteps(fewer_steps, device=device)
g = torch.Generator("cpu").manual_seed(seed)
x = by_hand.initial_latents(1, unet, euler, height, width, g, device, c.dtype, vae_scale_factor=vae_scale)
euler_std = [x.std().item()]
by_hand.denoise(unet, euler, x, c, c_uncond, w, generator=g, on_step=lambda i, t, lat: euler_std.append(lat.std().item()))
pndm_std = [x_T.std().item()] + [lat.std().item() for lat in every_latent]

plt.figure(figsize=(6, 3))
plt.plot(pndm_std, label=f"PNDM, {len(pndm_std) - 1} steps")
plt.plot(euler_std, label=f"Euler, {len(euler_std) - 1} steps")
plt.yscale("log")
plt.xlabel("step")
plt.ylabel("std of the latents")
plt.legend()
plt.tight_layout()
plt.show()
print(f"start: PNDM {pndm_std[0]:.2f}, Euler {euler_std[0]:.2f};  end: PNDM {pndm_std[-1]:.2f}, Euler {euler_std[-1]:.2f}")

# %% [markdown]
# PNDM works with x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε, whose std starts at 1; Euler works with
# x₀ + σ·ε, so it starts at the std of its first σ — `init_noise_sigma` and `scale_model_input` convert
# between the two conventions. Both curves end near the std of real images' latents (about 1: the
# VAE's scaling factor was chosen for that, 0.18215 for SD 1.5, measured on its training images for `tiny`).

# %% [markdown]
# ## Summary
# - Noise is added to the image's *latents* in training and the UNet learns to predict it; generation starts from pure noise x_T and removes predicted noise step by step. The text embedding is never noised: it only conditions the UNet.
# - Classifier-free guidance: embeddings `[c_uncond, c]` in one UNet batch of 2, then ε = ε_uncond + w · (ε_text − ε_uncond); with w = 1 the unconditional half is skipped.
# - The loop is five operations per step: duplicate the latents, `scale_model_input`, the UNet (one call on a batch of 2), guidance, `scheduler.step`; with the same CPU-generator seed it reproduces the pipeline exactly (checked above, step by step).
# - The model's guess of the clean picture, x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t, shows the picture forming long before x_t stops looking like noise.
# - Schedulers change the timesteps and the update, not the UNet; `init_noise_sigma` and `scale_model_input` make the same loop work for all of them.
