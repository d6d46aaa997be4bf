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
# - why Stable Diffusion adds noise in training and removes it in generation; what is noised: the *latents*, never the text;
# - classifier-free guidance: the empty prompt's embedding next to the prompt's, one UNet batch of 2;
# - the loop: `scale_model_input` → the UNet predicts the noise ε → guidance → `scheduler.step`;
# - the latents along the way, and the model's guess of the finished picture;
# - that your loop gives *exactly* the pipeline's result, with any scheduler;
# - inside the UNet: its blocks, the timestep embedding, and cross-attention, where the text enters.
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
# We load the pipeline only to take its five parts out; from §5 on we drive them ourselves. `tiny` is
# the course's small model of one coloured shape on a plain background. The sizes come from
# `cu.default_settings` and from the VAE's downsampling factor, `pipe.vae_scale_factor`.

# %%
pipe = cu.load_pipeline("text2img")
tokenizer, text_encoder, unet, scheduler, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.scheduler, pipe.vae
device, dtype = choice.device, choice.dtype

settings = cu.default_settings(choice.profile)
height, width, num_inference_steps = settings["height"], settings["width"], settings["num_inference_steps"]
w = settings["guidance_scale"]  # the guidance scale w
vae_scale = pipe.vae_scale_factor  # pixels per latent cell
prompt, seed = cu.prompt("main", choice.profile), 0
print(settings, "|", prompt, "| scheduler:", type(scheduler).__name__)
print(f"latents: {height // vae_scale}x{width // vae_scale} for a {height}x{width} image (vae_scale_factor {vae_scale})")

# %% [markdown]
# ## 2. Why add noise and then remove it?
#
# **Training.** Encode a real image with the VAE into latents x₀, pick a random timestep t and mix in
# Gaussian noise ε: x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε (ᾱ_t is `alphas_cumprod[t]`, printed below). The
# UNet gets x_t, t and the caption's text embedding c, and learns to predict ε (mean squared error).
# Only the image's **latents** are noised; the text embedding tells the UNet what the image shows.
#
# **Generation.** Start from pure noise; at each step the UNet predicts the noise and the scheduler
# removes a part of it. Having learned every noise level, the UNet can walk all the way to a clean image.
#
# The training side on a real image, with DDPM, the scheduler SD 1.5 was trained with:

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
# The training loss at these timesteps (training draws t at random and pushes the average down;
# always guessing ε = 0 would score 1):

# %%
with torch.no_grad():
    c_train = pipe.encode_prompt(prompt, device, 1, False)[0]  # the caption's embedding: not noised
    for t_i, x_t in zip(shown_t, noised):  # only the latents are noised
        eps_pred = unet(x_t, torch.tensor([t_i], device=device), encoder_hidden_states=c_train).sample
        print(f"t={t_i:3d}: loss = MSE(ε_θ(x_t, t, c), ε) = {torch.nn.functional.mse_loss(eps_pred.float(), eps.float()).item():.3f}")

# %% [markdown]
# ## 3. The text embeddings for classifier-free guidance
#
# Guidance needs two predictions per step: one with the prompt's embedding c, one with the
# *unconditional* embedding, that of the empty prompt `""`. Both come from the same tokenizer (77
# tokens: start, end, then padding) and CLIP text encoder, and they equal the pipeline's:

# %%
# Simplified from course_utils.by_hand.encode_text
def embed(texts):
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return tokens.input_ids, text_encoder(tokens.input_ids.to(device))[0]


ids, c = embed([prompt])
ids_uncond, c_uncond = embed([""])
text_embeddings = torch.cat([c_uncond, c])  # unconditional FIRST, then the prompt (the pipeline's order)
print("empty prompt's first token ids:", ids_uncond[0, :5].tolist(), "(start, then end tokens as padding)")
print("c:", tuple(c.shape), "| c_uncond:", tuple(c_uncond.shape), "| stacked:", tuple(text_embeddings.shape))
pipe_c, pipe_c_uncond = pipe.encode_prompt(prompt, device, 1, True)
print("max |c - pipe|:", (c - pipe_c).abs().max().item(), "| max |c_uncond - pipe|:", (c_uncond - pipe_c_uncond).abs().max().item())
assert torch.equal(c, pipe_c) and torch.equal(c_uncond, pipe_c_uncond)

# %% [markdown]
# ## 4. The starting noise x_T
#
# x_T is Gaussian noise of the latents' shape `[1, 4, H/f, W/f]` (f = `vae_scale_factor`), times the
# scheduler's `init_noise_sigma`. We draw it with a **CPU** generator, as the pipeline does: a seed then
# gives the same noise on any machine, and the pipeline with that seed starts from exactly this x_T.
# PNDM (SD 1.5's default scheduler) visits its first timestep twice, a warm-up: one step more than asked.

# %%
scheduler.set_timesteps(num_inference_steps, device=device)
generator = torch.Generator("cpu").manual_seed(seed)
# Simplified from course_utils.by_hand.initial_latents
shape = (1, unet.config.in_channels, height // vae_scale, width // vae_scale)
x_T = torch.randn(shape, generator=generator, dtype=dtype).to(device) * scheduler.init_noise_sigma
print("x_T:", tuple(x_T.shape), f"std={x_T.std().item():.3f}", "init_noise_sigma =", scheduler.init_noise_sigma)
print(len(scheduler.timesteps), "timesteps:", scheduler.timesteps[:6].tolist(), "...", scheduler.timesteps[-3:].tolist())

# %% [markdown]
# ## 5. The loop
#
# For each timestep t, from noisy to clean:
# 1. duplicate the latents, x_in = [x_t, x_t], one copy per embedding;
# 2. `scheduler.scale_model_input(x_in, t)` (a no-op for PNDM, a rescale for Euler: always call it);
# 3. the UNet predicts the noise, ε_θ(x_t, t, c_uncond) and ε_θ(x_t, t, c), in one batch of 2;
# 4. guidance: ε = ε_uncond + w · (ε_text − ε_uncond), away from "any image" towards "this prompt"
#    (too far breaks the picture: exercise 2);
# 5. `scheduler.step` removes the right amount of that noise: x_t → x_{t-1}.
#
# We also keep the model's **guess of the clean latents**: §2's formula solved for x₀ with the
# predicted noise, x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t (DDIM's `step` returns it; PNDM's does not).

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
display(cu.diagrams_steps.loop_diagram(scheduler.timesteps, x_T.shape, vae_scale_factor=vae_scale))  # the loop, drawn

# %% [markdown]
# ## 6. Watch it happen
#
# Every few steps: x_t's 4 latent channels (each stretched to black..white), then x_t decoded and, below
# it, the decoded guess x̂_0. Decoded x_t stays noisy until the last steps; x̂_0 shows where the picture
# is heading long before that.

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
# `tiny` was trained with *offset noise* (a random constant per image and channel added to the training
# noise): on its small latents, the starting noise's mean had leaked the picture's overall colour. (More
# in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 03".)

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
# Now the pipeline with the same seed: its latents after every step (recorded by `cu.LatentRecorder`
# through `callback_on_step_end`) and its final image (`output_type="pt"`: a tensor in [0, 1]) must
# equal ours.

# %%
recorder = cu.LatentRecorder(every=1)
result = pipe(prompt, height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=w,
              generator=torch.Generator("cpu").manual_seed(seed), output_type="pt", callback_on_step_end=recorder)
with torch.no_grad():
    our_image = (vae.decode(x_0 / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

tol = by_hand.tolerance(dtype, recorder.latents[-1])  # 1e-4 in float32; fp16 on a GPU rounds more (see its docstring)
step_diff = max((a - b).abs().max().item() for a, b in zip(every_latent, recorder.latents))
flagged = any(result.nsfw_content_detected or [])  # sd15's safety checker blacks out a flagged image (lesson 2, §8)
image_diff = 0.0 if flagged else (our_image.cpu().float() - result.images.cpu().float()).abs().max().item()
print(f"steps recorded: {len(recorder.latents)} (ours: {len(every_latent)}); tolerance {tol:.1e}")
print(f"max abs difference, latents at every step: {step_diff:.2e}")
print("the safety checker blacked out the pipeline's image: only the latents are compared" if flagged else
      f"max abs difference, final image:           {image_diff:.2e}")
assert len(recorder.latents) == len(every_latent) and max(step_diff, image_diff) <= tol
picture = cu.decode_latents(vae, x_0)[0]
if choice.profile == "tiny":
    print("the picture:", cu.world.describe(picture))
display(cu.grid([picture] + pipe.image_processor.postprocess(result.images.float(), output_type="pil", do_denormalize=[False]),
                size=256, titles=["our loop", "the pipeline"]))

# %% [markdown]
# The loop is packaged as `course_utils.by_hand` (`encode_text`, `initial_latents`, `denoise`, `decode`):
# the same code, used by the later lessons.

# %% [markdown]
# ## 8. Swap the scheduler
#
# The scheduler decides *which* timesteps to visit and *how much* noise `step` removes; the UNet stays
# the same. Euler shows why `init_noise_sigma` and `scale_model_input` matter: it works with the noise
# level σ, starts from noise with the std of its first σ (printed) and divides the UNet's input by
# √(σ² + 1). With PNDM both are no-ops, so a loop that forgets them "works" until you swap the scheduler.
# At half the steps: the pipeline, our loop (`by_hand.denoise`), and the difference.

# %%
fewer_steps = max(4, num_inference_steps // 2)
swaps = {"DPM-Solver++": DPMSolverMultistepScheduler, "Euler": EulerDiscreteScheduler}
finals = {"PNDM": x_0}
for name, cls in swaps.items():
    pipe.scheduler = cls.from_config(scheduler.config)
    ref = pipe(prompt, height=height, width=width, num_inference_steps=fewer_steps, guidance_scale=w,
               generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images

    sched = cls.from_config(scheduler.config)
    sched.set_timesteps(fewer_steps, device=device)
    g = torch.Generator("cpu").manual_seed(seed)
    x = by_hand.initial_latents(1, unet, sched, height, width, g, device, c.dtype, vae_scale_factor=vae_scale)
    print(f"{name}: {fewer_steps} steps, init_noise_sigma={float(sched.init_noise_sigma):.2f}, x_T std={x.std().item():.2f}", end="; ")
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
# In the loop the UNet was one line: latents, a timestep and the text embedding in, a noise estimate out.
#
# **The blocks.** `unet_inside.walk` hooks each top-level block (`register_forward_hook`), runs the UNet
# once on x_T (guidance's batch of 2) and notes each block's input and output shapes. Down blocks halve the resolution and widen the channels, the mid block works
# at the lowest resolution, and up blocks double it again while taking back the features saved on the
# way down (the *skip connections*, the "U" of UNet). The `CrossAttn...` blocks also read the text.

# %%
rows = unet_inside.walk(unet, torch.cat([x_T] * 2), scheduler.timesteps[0], text_embeddings)
blocks = {r.name: r for r in rows}
for r in rows:
    skips = f"  saves {len(r.skips)} skips" if r.name.startswith("down") else (
        f"  + skips with {[s[1] for s in r.skips]} channels" if r.skips else "")
    print(f"{r.name:15} {r.kind:24} {r.parameters / 1e6:7.2f} M  {str(r.input):18} -> {str(r.output):18}{skips}")
n_params = sum(p.numel() for p in unet.parameters())
print(f"UNet: {n_params / 1e6:.1f} M parameters ({sum(r.parameters for r in rows) / 1e6:.1f} M in the rows above)")
assert sum(r.parameters for r in rows) == n_params
display(cu.diagrams.unet_diagram(unet))  # the U, drawn from unet.config: where the text is read

# %% [markdown]
# **The timestep.** `time_proj` turns t into sines and cosines at geometrically spaced frequencies (the
# *sinusoidal* embedding of the Transformer paper): cos(t · f_i) and sin(t · f_i), f_i = 10000^(−i/half).
# Written out below and checked against diffusers' `get_timestep_embedding` and the UNet's `time_proj`.
# In the plot, each half's first dimensions turn fast with t and its last ones slowly: every t gets its
# own pattern. A small MLP (`time_embedding`) widens this vector, and every ResNet block adds its own
# linear projection of it (`time_emb_proj`) to its channels.

# %%
dim = unet.time_proj.num_channels
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
print("time_embedding:", blocks["time_embedding"].input, "->", blocks["time_embedding"].output,
      "| down_blocks.0.resnets[0].time_emb_proj weight:", tuple(unet.down_blocks[0].resnets[0].time_emb_proj.weight.shape))

plt.figure(figsize=(7, 3))
plt.imshow(sinusoid, aspect="auto", cmap="RdBu", interpolation="nearest")
plt.gca().set(xlabel="dimension i (cos | sin)", ylabel="timestep t", title="time_proj(t) for every t")
plt.show()

# %% [markdown]
# **Where the text enters: cross-attention.** Each `CrossAttn...` block's transformer blocks have two
# attention layers: `attn1` (self-attention) lets latent cells look at each other; `attn2`
# (cross-attention) takes its **queries from the latents** and its **keys and values from the text
# embedding** (a weight is `[out, in]`: the `in` of `to_k`/`to_v` shows where they read from). Per head
# (d channels each), every latent cell gets a probability over the 77 tokens, softmax(Q Kᵀ / √d), and
# takes that mix of the tokens' values. diffusers lets us swap the code that does this per layer (an
# *attention processor*); `unet_inside.CrossAttentionRecorder` is the default one written out, plus a line
# that keeps these probabilities. Its core:

# %%
block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
for name in ("attn1", "attn2"):
    layer = getattr(block, name)
    print(f"{name}: to_q {tuple(layer.to_q.weight.shape)}, to_k {tuple(layer.to_k.weight.shape)},"
          f" to_v {tuple(layer.to_v.weight.shape)}, {layer.heads} heads")
print("latent channels here:", blocks["conv_in"].output[1], "| text embedding:", tuple(c.shape),
      "|", sum(".attn2." in n for n in unet.attn_processors), "cross-attention layers")
print(inspect.getsource(unet_inside.CrossAttentionRecorder.attend).split('"""')[-1])

# %% [markdown]
# **Which part of the picture reads which word.** We run the loop again with the recorder on the `attn2`
# layers (the context manager puts the original processors back): the same picture. Each token's
# probabilities are averaged over the steps and upsampled to the image; at each pixel we keep only the
# prompt's own tokens and renormalise (the start token and the padding take most of the attention;
# Attend-and-Excite, Chefer et al. 2023, also leaves the start token out). SD 1.5's word maps land on
# their objects averaged over all layers and heads (Hertz et al. 2022, "Prompt-to-Prompt",
# arXiv:2208.01626); `tiny`'s in one head of one layer, found by a measured sweep (appendix).

# %%
words = ["astronaut", "horse"] if choice.profile == "sd15" else ["red", "circle", "blue", "background"]
positions = unet_inside.token_positions(tokenizer, prompt, words)
layer, head = ("up_blocks.1.attentions.1", 1) if choice.profile == "tiny" else (None, None)  # None: all of them
scheduler.set_timesteps(num_inference_steps, device=device)  # a fresh start (PNDM remembers its last steps)
with unet_inside.recording_cross_attention(unet, guided=by_hand.guidance_enabled(unet, w)) as maps:
    x_recorded = by_hand.denoise(unet, scheduler, x_T, c, c_uncond, w)
diff = (x_recorded - x_0).abs().max().item()
print(f"recorded run vs §5's loop, max abs difference of the final latents: {diff:.1e}")
assert diff <= tol

keep = torch.zeros(77, 1, 1)
keep[1:len(tokenizer(prompt).input_ids)] = 1  # the prompt's words and end token: not the start token (0), nor the padding


def word_maps(**where):  # [77, H, W]; at each pixel the prompt's tokens sum to 1, the others are 0
    heat = maps.token_maps((height, width), latent_size=tuple(x_0.shape[-2:]), **where) * keep
    return heat / heat.sum(dim=0)


heat = word_maps(layer=layer, head=head)
raw = maps.token_maps((height, width), latent_size=tuple(x_0.shape[-2:]), layer=layer, head=head).mean(dim=(1, 2))
print(f"the start token and the padding get {1 - raw[keep.flatten() == 1].sum().item():.0%} of the attention")
picture = cu.decode_latents(vae, x_recorded)[0]
display(cu.grid([picture] + [unet_inside.overlay(picture, heat[i]) for i in positions.values()], size=192,
                titles=["image"] + [f'"{word}" (token {i})' for word, i in positions.items()]))
if choice.profile == "tiny":
    mask = cu.world.shape_mask(picture)  # the shape's pixels: those far from the border's colour
    for where, h in ((f"{layer}, head {head}", heat), ("all layers and heads", word_maps())):
        print(f"{where}: share of each word's map on the shape (which covers {mask.mean():.0%}):",
              ", ".join(f"{word} {unet_inside.mass_inside(h[i], mask):.0%}" for word, i in positions.items()))
    assert unet_inside.mass_inside(heat[positions["circle"]], mask) > mask.mean()

# %% [markdown]
# A map spread evenly would put the shape's area on the shape. Averaged over all layers and heads,
# `tiny`'s maps of "red" and "circle" miss it: its small text encoder carries the shape in the tokens
# after those words. (More in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 03".)

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
# UNet's batch size inside the pipeline at w = 1 and at the default w (printed in §1), and how much
# faster w = 1 runs. Then count the batch size with a forward pre-hook
# (`unet.register_forward_pre_hook`, as `unet_inside.walk` does with forward hooks), time both, and
# check that `by_hand.denoise` still matches the pipeline at w = 1. Then the other way: predict what
# 2.5 and 5 times the default w do to the picture, and run §5's loop with them (same x_T).

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
# - Classifier-free guidance: embeddings `[c_uncond, c]` in one UNet batch of 2, then ε = ε_uncond + w · (ε_text − ε_uncond); with w = 1 the unconditional half is skipped, and too large a w breaks the picture.
# - The loop is five operations per step: duplicate the latents, `scale_model_input`, the UNet (one call on a batch of 2), guidance, `scheduler.step`; with the same CPU-generator seed it reproduces the pipeline exactly (checked above, step by step).
# - The model's guess of the clean picture, x̂_0 = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t, shows the picture forming long before x_t stops looking like noise.
# - Schedulers change the timesteps and the update, not the UNet; `init_noise_sigma` and `scale_model_input` make the same loop work for all of them.
# - Inside the UNet: down blocks (resolution halves, channels grow), a mid block, up blocks that take the skip connections back; t enters as a sinusoidal vector added in every ResNet block; the text enters only through cross-attention, queries from the latents, keys and values from the 77 token vectors.
# - Cross-attention maps show which part of the picture reads which word: SD 1.5's averaged over its layers and heads, `tiny`'s in one head of one layer (measured above).

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
# about half the work (a bit less saved on a machine that runs a batch of 2 in parallel). Above the
# default, guidance pushes the latents beyond what the model saw in training: their standard deviation
# grows with w, and so does the share of pixel values the VAE decodes outside [-1, 1], which the picture
# clips: over-saturated colours (both printed). SD 1.5 does the same at large w (Saharia et al. 2022,
# "Imagen", arXiv:2205.11487, §2.3: high guidance weights give "highly saturated and unnatural images").

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

scales = [w, 2.5 * w, 5 * w]
guided = [x_0]  # §5's loop at the default w
for scale in scales[1:]:
    scheduler.set_timesteps(num_inference_steps, device=device)
    guided.append(by_hand.denoise(unet, scheduler, x_T, c, c_uncond, scale))
for scale, x in zip(scales, guided):
    clipped = (by_hand.decode(vae, x).abs() > 1).float().mean().item()  # pixel values the picture clips
    print(f"w={scale:g}: std of the final latents {x.float().std().item():.2f}, pixel values outside [-1, 1]: {clipped:.0%}")
display(cu.grid(cu.decode_latents(vae, torch.cat(guided)), size=192, titles=[f"w = {scale:g}" for scale in scales]))

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
    print("without:", cu.world.describe(by_hand.to_pil(plain)[0]), "| with:", cu.world.describe(by_hand.to_pil(steered)[0]))
display(cu.grid(by_hand.to_pil(plain) + by_hand.to_pil(steered), size=256, titles=["without the loss", "steered to more blue"]))
assert blueness(steered) > blueness(plain)
