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
# - that your loop gives *exactly* the pipeline's result for the same seed, with any scheduler;
# - inside the UNet: its blocks and their shapes, the timestep embedding, where the text enters (cross-attention),
#   and which part of the picture reads which word of the prompt.

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
import inspect
import math
import time

import matplotlib.pyplot as plt
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.models.embeddings import get_timestep_embedding
from IPython.display import display
from PIL import Image

import course_utils as cu
from course_utils import by_hand, unet_inside

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
display(cu.grid(cu.decode_latents(vae, torch.cat(noised)), size=192, titles=[f"x_t at t={t}" for t in shown_t]))

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
# Simplified from course_utils.by_hand.encode_text
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
# Simplified from course_utils.by_hand.initial_latents
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
# Simplified from course_utils.by_hand.denoise
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
display(cu.grid([cu.latent_to_image(every_latent[i], tile=64) for i in kept], cols=1,
                titles=[f"x_t after step {i + 1}/{n_steps}" for i in kept]))
display(cu.grid(cu.decode_latents(vae, torch.cat([every_latent[i] for i in kept] + [every_guess[i] for i in kept])),
                size=192, cols=len(kept), titles=[f"x_t, step {i + 1}" for i in kept] + [f"x̂_0, step {i + 1}" for i in kept]))

# %% [markdown]
# > **Behind the scenes (optional).** Why `tiny` was trained with *offset noise*. SD 1.5's schedule
# > never noises a picture away completely: at the first timestep a little of it is still in x_t
# > (printed below), and training noised pictures the same way. A picture's overall colour is the
# > mean of each latent channel, and the starting noise's own mean per channel is not quite zero
# > (about ±1/√cells), so a model can learn to read the overall colour from the noise instead of the
# > prompt. On `tiny`'s 16x16 latents that mean is large enough to matter (±0.06; ±0.016 on SD 1.5's
# > 64x64): the first trained `tiny` got only 43% of its backgrounds right. Adding a random constant per
# > image and channel to the training noise (**offset noise**, `--noise_offset` in diffusers' training
# > scripts) makes the noise's mean useless: 3,000 more steps with it took backgrounds to 100%
# > (`data/tiny/README.md`). The same leak, milder, is why SD 1.5 struggles with very dark or very
# > bright pictures (Guttenberg, 2023, "Diffusion with offset noise"; Lin et al., 2024, "Common
# > Diffusion Noise Schedules and Sample Steps are Flawed").

# %%
# (optional) how much of the picture is left at the first timestep, and the noise's mean per channel
t_first = int(scheduler.timesteps[0])
signal = scheduler.alphas_cumprod[t_first].sqrt().item()
cells = x_T[0, 0].numel()
print(f"t = {t_first}: x_t = {signal:.3f} * z_0 + {(1 - signal**2) ** 0.5:.3f} * noise")
print("x_T's mean per channel:", [round(v, 3) for v in x_T.float().mean(dim=(2, 3))[0].tolist()],
      f"- typically +-1/sqrt({cells}) = +-{cells ** -0.5:.3f}")

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
display(cu.grid(cu.decode_latents(vae, x_0) + pipe.image_processor.postprocess(result.images.float(), output_type="pil", do_denormalize=[False]),
                size=256, titles=["our loop", "the pipeline"]))

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
display(cu.grid(cu.decode_latents(vae, torch.cat(list(finals.values()))), size=256, titles=list(finals)))

# %% [markdown]
# ## 9. Open the UNet
#
# In the loop the UNet was one line, `unet(x_in, t, encoder_hidden_states=text_embeddings).sample`:
# latents, a timestep and the text embedding in, a noise estimate of the latents' shape out. Here is what
# happens in between: the blocks the latents pass through, how t gets in, how the text gets in, and
# which part of the picture listens to which word.
#
# **The blocks, for one call.** `unet_inside.walk` puts a forward hook
# (`module.register_forward_hook`) on each top-level block, runs the UNet once on x_T (the batch of 2 of
# guidance) and removes the hooks; each hook writes down the block's input and output shapes.
# The down blocks halve the resolution and widen the channels, the mid block works at the
# lowest resolution, and each up block doubles it again while it takes back the features saved
# on the way down (the *skip connections*, the "U" of UNet). Every `CrossAttn...` block also reads the text.
# The parameters per block add up to the UNet's (about 860 M on SD 1.5):

# %%
rows = unet_inside.walk(unet, torch.cat([x_T] * 2), scheduler.timesteps[0], text_embeddings)
blocks = {r.name: r for r in rows}
for r in rows:
    skips = f"  saves {len(r.skips)} skips" if r.name.startswith("down") else (
        f"  + skips with {[s[1] for s in r.skips]} channels" if r.skips else "")
    print(f"{r.name:15} {r.kind:24} {r.parameters / 1e6:7.2f} M  {str(r.input):18} -> {str(r.output):18}{skips}")
saved = 1 + sum(len(r.skips) for r in rows if r.name.startswith("down"))
print(f"skip connections: {saved} saved (conv_in's output and the down blocks'),",
      sum(len(r.skips) for r in rows if r.name.startswith("up")), "taken back by the up blocks")
n_params = sum(p.numel() for p in unet.parameters())
print(f"UNet: {n_params / 1e6:.1f} M parameters ({sum(r.parameters for r in rows) / 1e6:.1f} M in the rows above)")
assert sum(r.parameters for r in rows) == n_params

# %% [markdown]
# **The timestep.** The UNet does not take t as one bare number: `time_proj` turns it into a
# vector of sines and cosines at geometrically spaced frequencies (the *sinusoidal* embedding of the
# Transformer paper): half of the entries are cos(t · f_i), half sin(t · f_i), with f_i = 10000^(−i/half).
# Written out, and checked against diffusers' `get_timestep_embedding` and the UNet's own `time_proj`:

# %%
dim = unet.time_proj.num_channels  # 320 on SD 1.5, 32 on tiny
half = dim // 2
all_t = torch.arange(scheduler.config.num_train_timesteps)  # every training timestep, 0..999
freqs = torch.exp(-math.log(10000) * torch.arange(half) / (half - unet.config.freq_shift))  # f_i
angles = all_t[:, None].float() * freqs[None, :]  # t · f_i, [1000, half]
sinusoid = torch.cat([angles.cos(), angles.sin()] if unet.config.flip_sin_to_cos else [angles.sin(), angles.cos()], dim=1)
reference = get_timestep_embedding(all_t, dim, flip_sin_to_cos=unet.config.flip_sin_to_cos,
                                   downscale_freq_shift=unet.config.freq_shift)
with torch.no_grad():
    ours_vs_unet = (sinusoid - unet.time_proj(all_t.to(device)).float().cpu()).abs().max().item()
print(f"[{len(all_t)}, {dim}]; max abs difference with get_timestep_embedding: {(sinusoid - reference).abs().max().item():.1e},"
      f" with unet.time_proj: {ours_vs_unet:.1e}")
assert torch.allclose(sinusoid, reference, atol=1e-5) and ours_vs_unet <= 1e-5

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
left.imshow(sinusoid, aspect="auto", cmap="RdBu", interpolation="nearest")
left.set(xlabel="dimension i (cos | sin)", ylabel="timestep t", title="time_proj(t) for every t")
for t_i in (0, 250, 500, 999):
    right.plot(sinusoid[t_i], label=f"t={t_i}", lw=1)
right.set(xlabel="dimension i", title="a few timesteps' vectors")
right.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: in each half, the first dimensions turn fast with t and the last ones slowly, so every t gets
# its own pattern and nearby t's similar ones. A small MLP (`time_embedding` in the table) widens this
# vector, and every ResNet block adds its own linear projection of it to its channels:

# %%
resnet = unet.down_blocks[0].resnets[0]
print("time_embedding:", blocks["time_embedding"].input, "->", blocks["time_embedding"].output)
print("down_blocks.0.resnets[0].time_emb_proj weight:", tuple(resnet.time_emb_proj.weight.shape), "[channels, time embedding]")

# %% [markdown]
# **Where the text enters: cross-attention.** Each transformer block in the `CrossAttn...` blocks has
# two attention layers. `attn1` (self-attention) lets latent cells look at each other; `attn2`
# (cross-attention) takes its **queries from the latents** and its **keys and values from the text
# embedding**, `[*, 77, 768]` on SD 1.5 (`[*, 77, 64]` on `tiny`). A weight matrix has shape
# `[out, in]`, so the `in` of `to_k`/`to_v` shows where they read from:

# %%
block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
for name in ("attn1", "attn2"):
    layer = getattr(block, name)
    print(f"{name}: to_q {tuple(layer.to_q.weight.shape)}, to_k {tuple(layer.to_k.weight.shape)},"
          f" to_v {tuple(layer.to_v.weight.shape)}, {layer.heads} heads")
print("latent channels here:", blocks["conv_in"].output[1], "| text embedding:", tuple(c.shape))
cross_layers = [n for n in unet.attn_processors if ".attn2." in n]
print(len(cross_layers), "cross-attention layers, e.g.", cross_layers[0])

# %% [markdown]
# In each of them, for every head (d = channels per head), every latent cell gets a probability over the
# 77 tokens, softmax(Q Kᵀ / √d), and takes that mix of the tokens' values. diffusers lets us swap the code
# that does this per layer (an *attention processor*). `unet_inside.CrossAttentionRecorder` is the default
# one (`AttnProcessor2_0`) written out, plus two lines that compute the probabilities and keep them
# (for the text half of the batch, averaged over the heads). Its core:

# %%
print(inspect.getsource(unet_inside.CrossAttentionRecorder.attend).split('"""')[-1])

# %% [markdown]
# **Which part of the picture reads which word.** We run the loop again with the recorder on the
# `attn2` layers only (`unet.set_attn_processor`; the context manager puts the original processors back),
# and check that the image is the same. Then, per token: its probabilities averaged over all steps and all
# cross-attention layers (each layer's map upsampled to the image from its resolution), drawn over the
# image (each map stretched to its own maximum). We also draw the first end token `<|endoftext|>`.

# %%
words = ["astronaut", "horse"] if choice.profile == "sd15" else ["red", "circle", "blue", "background"]
positions = unet_inside.token_positions(tokenizer, prompt, words + ["<|endoftext|>"])
scheduler.set_timesteps(num_inference_steps, device=device)  # a fresh start (PNDM remembers its last steps)
with unet_inside.recording_cross_attention(unet, guided=by_hand.guidance_enabled(unet, w)) as maps:
    x_recorded = by_hand.denoise(unet, scheduler, x_T, c, c_uncond, w)
print("attn2 processors now:", {type(p).__name__ for n, p in unet.attn_processors.items() if ".attn2." in n})
diff = (x_recorded - x_0).abs().max().item()
print(f"recorded run vs the loop of §5, max abs difference of the final latents: {diff:.1e}")
assert diff <= tol

heat = maps.token_maps((height, width), latent_size=tuple(x_0.shape[-2:]))  # [77, H, W]: summed over tokens, 1 per pixel
picture = cu.decode_latents(vae, x_recorded)[0]
print("share of all attention:", {word: f"{heat[i].mean().item():.1%}" for word, i in positions.items()},
      f"| start token: {heat[0].mean().item():.1%}, the {77 - len(tokenizer(prompt).input_ids)} padding tokens:"
      f" {heat[len(tokenizer(prompt).input_ids):].mean(dim=(1, 2)).sum().item():.1%}")
display(cu.grid([picture] + [unet_inside.overlay(picture, heat[i]) for i in positions.values()], size=192,
                titles=["image"] + [f'"{word}" (token {i})' for word, i in positions.items()]))

# %% [markdown]
# On `tiny` we can measure where a map lies: the share of its mass on the shape's pixels
# (`cu.world.shape_mask`: the pixels far from the border's colour), against the shape's share of the
# image, what a map spread evenly would give. And the same for the prompt with its words reordered,
# "a circle that is red":

# %%
if choice.profile == "tiny":
    mask = cu.world.shape_mask(picture)
    share = {word: unet_inside.mass_inside(heat[i], mask) for word, i in positions.items()}
    print(f"the shape covers {mask.mean():.0%} of the image; share of each map on it:",
          {word: f"{s:.0%}" for word, s in share.items()})

    reordered = "a circle that is red"
    scheduler.set_timesteps(num_inference_steps, device=device)
    with unet_inside.recording_cross_attention(unet) as maps_reordered:
        x_reordered = by_hand.denoise(unet, scheduler, x_T, embed([reordered])[1], c_uncond, w)
    picture_reordered = cu.decode_latents(vae, x_reordered)[0]
    heat_reordered = maps_reordered.token_maps((height, width), latent_size=tuple(x_0.shape[-2:]))
    mask_reordered = cu.world.shape_mask(picture_reordered)
    positions_reordered = unet_inside.token_positions(tokenizer, reordered, ["circle", "red", "<|endoftext|>"])
    share_reordered = {word: unet_inside.mass_inside(heat_reordered[i], mask_reordered) for word, i in positions_reordered.items()}
    print(f'"{reordered}": the shape covers {mask_reordered.mean():.0%}; share of each map on it:',
          {word: f"{s:.0%}" for word, s in share_reordered.items()})
    display(cu.grid([picture_reordered] + [unet_inside.overlay(picture_reordered, heat_reordered[i]) for i in positions_reordered.values()],
                    size=192, titles=[reordered] + [f'"{word}" (token {i})' for word, i in positions_reordered.items()]))
    assert share["red"] < mask.mean() < share["<|endoftext|>"] and share_reordered["red"] > mask_reordered.mean()

# %% [markdown]
# On `tiny` the words do *not* land where their meaning is: in "a red circle on a blue background" the
# maps of "red" and "circle" lie mostly on the background, and those of "blue", "background" and the
# end token on the circle; put "red" last and its map moves onto the shape. What counts is the position:
# CLIP's text encoder is *causal*, the vector at position k has read only tokens 0..k. Append words to the
# prompt and the vectors before them do not change:

# %%
ids_longer, c_longer = embed([prompt + " and more words"])
n = len(tokenizer(prompt).input_ids) - 1  # the start token and the prompt's words; the end token follows
print(f"positions 0..{n - 1} (start + prompt): max abs change {(c_longer[0, :n] - c[0, :n]).abs().max().item():.1e};"
      f" position {n} on: {(c_longer[0, n:] - c[0, n:]).abs().max().item():.2f}")
assert torch.allclose(c_longer[0, :n], c[0, :n], atol=1e-5)

# %% [markdown]
# So in `tiny`'s 2-layer text encoder, trained from scratch together with its UNet, only the vectors after
# "red circle" know that the shape is a red circle, and the UNet learned to read the shape from them.
# SD 1.5's text encoder is OpenAI's CLIP (12 layers, trained on 400 million captioned images before SD),
# whose vectors keep each word's meaning at its own position; that is why published maps of Stable
# Diffusion (Hertz et al., 2022, "Prompt-to-Prompt"; Tang et al., 2023, "What the DAAM") put an object's word
# on the object. On `sd15`, see whether "astronaut" and "horse" land on the rider and the horse above.
# Much of the attention goes to tokens without a word of their own, the start token and the padding: the
# shares printed with the maps say how much.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1. Predict, then run.** Write the loop for `DDIMScheduler` yourself: the five steps of §5 with a
# DDIM scheduler made from `scheduler.config` and a fifth of the steps (DDIM's `step` also takes η,
# `eta`; the pipeline passes `eta=0.0`, a deterministic sampler). Predict: does it match the pipeline
# with DDIM as closely as §7's loop matched with PNDM? And does the `pred_original_sample` that DDIM's
# `step` returns equal your x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t of §5? Check both.

# %%
# your attempt

# %% [markdown]
# **2. Predict, then run.** With `guidance_scale=1` the guidance formula gives ε = ε_text. Predict the
# UNet's batch size inside the pipeline at w = 1 and at the default w (7.5 for SD 1.5, 3 for `tiny`),
# and how much faster w = 1 runs. Then count the batch size with a forward pre-hook
# (`unet.register_forward_pre_hook`, as `unet_inside.walk` does with forward hooks), time both, and
# check that `by_hand.denoise` still matches the pipeline at w = 1.

# %%
# your attempt

# %% [markdown]
# **3. Predict, then run: steer the loop with a loss.** Guidance by a prompt is not the only way to
# steer: any loss you can differentiate on the decoded image can push the latents. Take "more blue":
# blueness = the mean of the blue channel minus the mean of red and green (pixels in [0, 1]).
# In §5's loop, every 2nd step, before `scheduler.step`: compute x̂_0 from the current latents (with this
# step's guided ε̂, held fixed), decode it with the VAE, take loss = −blueness and its gradient with
# respect to the latents (`torch.autograd.grad`), and move the latents a small step against it
# (scale the gradient to a root mean square of 1 and step 0.05). Predict: what becomes of the red circle
# (on `sd15`: of the astronaut picture)? Does it stay a clean picture? Measure blueness with and
# without the loss, and show both images.

# %%
# your attempt

# %% [markdown]
# ## Summary
# - Noise is added to the image's *latents* in training and the UNet learns to predict it; generation starts from pure noise x_T and removes predicted noise step by step. The text embedding is never noised: it only conditions the UNet.
# - Classifier-free guidance: embeddings `[c_uncond, c]` in one UNet batch of 2, then ε = ε_uncond + w · (ε_text − ε_uncond); with w = 1 the unconditional half is skipped.
# - The loop is five operations per step: duplicate the latents, `scale_model_input`, the UNet (one call on a batch of 2), guidance, `scheduler.step`; with the same CPU-generator seed it reproduces the pipeline exactly (checked above, step by step).
# - The model's guess of the clean picture, x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t, shows the picture forming long before x_t stops looking like noise.
# - Schedulers change the timesteps and the update, not the UNet; `init_noise_sigma` and `scale_model_input` make the same loop work for all of them.
# - Inside the UNet: down blocks (resolution halves, channels grow), a mid block, up blocks that take the skip connections back; t enters as a sinusoidal vector added in every ResNet block; the text enters only through cross-attention, queries from the latents, keys and values from the 77 token vectors.
# - Cross-attention maps show which part of the picture reads which token; CLIP's text encoder is causal, so a token's vector knows only the words up to it (on `tiny`, the shape is read from the tokens after its words).

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# Yes to both: the same five steps with DDIM's `step` match the pipeline with DDIM, and DDIM's
# `pred_original_sample` is the same formula as §5's x̂_0.

# %%
ddim = DDIMScheduler.from_config(scheduler.config)
ddim_steps = max(4, num_inference_steps // 5)
ddim.set_timesteps(ddim_steps, device=device)
latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype).to(device) * ddim.init_noise_sigma
guess_diff = 0.0
with torch.no_grad():
    for t in ddim.timesteps:
        x_in = ddim.scale_model_input(torch.cat([latents] * 2), t)
        eps_uncond, eps_text = unet(x_in, t, encoder_hidden_states=text_embeddings).sample.chunk(2)
        eps = eps_uncond + w * (eps_text - eps_uncond)
        alpha_bar = ddim.alphas_cumprod[int(t)].to(device, torch.float32)
        guess = (latents.float() - (1 - alpha_bar).sqrt() * eps.float()) / alpha_bar.sqrt()
        out = ddim.step(eps, t, latents, eta=0.0)
        guess_diff = max(guess_diff, (out.pred_original_sample.float() - guess).abs().max().item())
        latents = out.prev_sample

pipe.scheduler = DDIMScheduler.from_config(scheduler.config)
ref = pipe(prompt, height=height, width=width, num_inference_steps=ddim_steps, guidance_scale=w,
           generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
pipe.scheduler = scheduler
diff = (latents - ref).abs().max().item()
print(f"DDIM, {ddim_steps} steps: max abs difference with the pipeline {diff:.2e};"
      f" pred_original_sample vs our x̂_0: {guess_diff:.2e}")
assert diff <= tol and guess_diff <= tol

# %% [markdown]
# ### Solution 2
# The pipeline skips the unconditional half at w = 1: a batch of 1 instead of 2, so each step does
# about half the work (a bit less saved on a machine that runs a batch of 2 in parallel).

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
# ### Solution 3
# §5's loop with the loss step added. The UNet's ε̂ is computed without gradients and held fixed, so the
# gradient flows only through x̂_0 and the VAE decoder (cheap); the step is scaled to a fixed size, the
# same on both profiles.

# %%
def blueness(images):
    """Mean blue minus the mean of red and green, for VAE output images [B, 3, H, W] in [-1, 1]."""
    rgb = images.float() / 2 + 0.5
    return (rgb[:, 2] - (rgb[:, 0] + rgb[:, 1]) / 2).mean()


every_k, step_size = 2, 0.05
scheduler.set_timesteps(num_inference_steps, device=device)
latents = x_T
start = time.perf_counter()
for i, t in enumerate(scheduler.timesteps):
    with torch.no_grad():
        x_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        eps_uncond, eps_text = unet(x_in, t, encoder_hidden_states=text_embeddings).sample.chunk(2)
        eps = eps_uncond + w * (eps_text - eps_uncond)
    if i % every_k == 0:  # the loss step: x̂_0 -> decode -> loss -> gradient -> nudge the latents
        latents = latents.detach().requires_grad_()
        alpha_bar = scheduler.alphas_cumprod[int(t)].to(device, latents.dtype)
        guess = (latents - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
        # times 2**16, as a GradScaler scales a loss: a mean over 512x512 pixels gives each pixel a gradient near
        # 1e-6, which float16 (a GPU) rounds to 0 on the way back through the decoder; the step below is
        # normalised, so the scale cancels
        loss = -blueness(vae.decode(guess / vae.config.scaling_factor).sample) * 2**16
        grad = torch.autograd.grad(loss, latents)[0].float()
        latents = latents.detach()
        rms = grad.pow(2).mean().sqrt()
        if torch.isfinite(grad).all() and rms > 0:  # (float16 can overflow on an early, far-off x̂_0: then skip)
            latents = (latents - step_size * grad / rms).to(latents.dtype)
    with torch.no_grad():
        latents = scheduler.step(eps, t, latents).prev_sample
print(f"{len(scheduler.timesteps)} steps with a loss step every {every_k}: {time.perf_counter() - start:.1f} s")

with torch.no_grad():
    plain, steered = by_hand.decode(vae, x_0), by_hand.decode(vae, latents)
print(f"blueness without the loss {blueness(plain).item():.3f}, with it {blueness(steered).item():.3f}")
if choice.profile == "tiny":
    print("without:", cu.world.classify(by_hand.to_pil(plain)[0]), "\nwith:   ", cu.world.classify(by_hand.to_pil(steered)[0]))
display(cu.grid(by_hand.to_pil(plain) + by_hand.to_pil(steered), size=256, titles=["without the loss", "steered to more blue"]))
assert blueness(steered) > blueness(plain)
