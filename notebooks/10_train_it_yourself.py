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
# # Lesson 10 — Train it yourself
#
# Lesson 7 *loaded* what others trained; here you train. A LoRA teaches the model something it has never
# seen: on `tiny` a **diamond**, in minutes on a laptop CPU; on SD 1.5 with a GPU, one particular cat
# (DreamBooth-style). Then a new *word* gets the same job.
#
# **What you will learn**
# - the training loop: noise the latents, predict the noise, mean squared error, an optimiser step;
# - *prior preservation*; what a LoRA adds to a layer, where, and how many parameters;
# - how to tell that it learned; what goes wrong (too strong, forgetting, latents that cannot carry it);
# - textual inversion by hand: a new token and row, trained with the same loss; why it can only name what
#   the model can already draw; how it compares with a LoRA and a full fine-tune.
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
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display

import course_utils as cu
from course_utils import new_concept, precision, text_embeddings, world

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why

# imported after cu.setup(), which quiets a library note ("requires torchvision") that importing them prints
from diffusers import DDPMScheduler, StableDiffusionPipeline  # noqa: E402
from diffusers.training_utils import cast_training_params  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

TINY = choice.profile == "tiny"
settings = cu.default_settings(choice.profile)
STEPS = new_concept.training_steps(choice.profile, choice.device)  # 400 on tiny; COURSE_TRAIN_STEPS overrides
print("profile:", choice.profile, "| steps:", STEPS, "| settings:", settings)

# %% [markdown]
# ## 1. Something the model has never seen
#
# `tiny` was trained on circles, squares and triangles, never a diamond. On SD 1.5 the new thing is one
# cat, `data/chelsea.png`, named by a rare token (the DreamBooth paper's `[V]`; diffusers' DreamBooth
# example uses `sks`). We ask for it before training.
# On `tiny` a judge counts diamonds: `world.classify` with a diamond template (checked in the appendix).

# %%
pipe = cu.load_pipeline("text2img")
pipe.set_progress_bar_config(disable=True)
new_prompt = cu.prompt("new_concept", choice.profile)   # the new thing
class_prompt = cu.prompt("concept_class", choice.profile)  # what the model already draws
print("new:", new_prompt, "| class:", class_prompt)
SHAPE = "diamond"  # on tiny: the shape to teach (world.NEW_SHAPES)
if TINY:
    prompts = new_concept.concept_prompts(SHAPE, 20)  # 20 prompts, every colour, half with a background
    before_share, before_images, before_found = new_concept.share_drawn(pipe, SHAPE, prompts, **settings)
    print(f"before training, {before_share:.0%} of {len(prompts)} pictures show a {SHAPE}; what they show instead:",
          sorted({f['shape'] for f in before_found if f['shape']}))
    display(cu.grid(before_images[:10], cols=5, min_width=128, titles=[f["shape"] or "-" for f in before_found[:10]]))
else:
    before_images = [pipe(new_prompt, generator=torch.Generator().manual_seed(s), **settings).images[0] for s in range(2)]
    display(cu.grid(before_images, cols=2, titles=["before, seed 0", "before, seed 1"]))

# %% [markdown]
# ## 2. Can the latents carry it?
#
# The UNet learns in the VAE's latent space (16x16x4 on `tiny`): what the VAE cannot reconstruct, no
# UNet will draw. So first, encode and decode a diamond, and a star whose points are thinner than one
# latent pixel (4 image pixels), and compare the shape's pixels before and after (IoU, intersection over
# union: 1.0 for the same pixels).

# %%
if TINY:
    originals = [world.draw("red", "diamond", "white", 32, 32, 22), new_concept.star("red", "white", r=22),
                 world.draw("blue", "diamond", "yellow", 32, 32, 12), new_concept.star("blue", "yellow", r=14)]
    with torch.no_grad():  # the VAE's mean, then back through its decoder (decode_latents undoes the scaling)
        mean = pipe.vae.encode(cu.to_tensor(originals).to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mean
    rebuilt = cu.decode_latents(pipe.vae, mean * pipe.vae.config.scaling_factor)
    for name, a, b in zip(("diamond r22", "star r22", "diamond r12", "star r14"), originals, rebuilt):
        print(f"{name:12s} shape kept (IoU original vs decoded): {new_concept.shape_iou(a, b):.2f}")
    display(cu.grid(originals + rebuilt, cols=4, min_width=128, titles=["diamond", "star", "diamond", "star"] + ["decoded"] * 4))

# %% [markdown]
# Where the round trip loses the star's points, a model trained on these latents would learn blobs. The
# diamond's corners are bigger than a latent pixel: it is our concept. (More in the appendix, [Inside the
# teaching models](appendix_teaching_models.ipynb), "From lesson 10".)
#
# ## 3. The training data
#
# - **The new thing**: diamonds rendered by the world, with captions (SD 1.5: 8 crops of the cat photo).
# - **The prior**: as many of the model's own pictures, half of every batch: "draw a diamond when asked,
#   and leave the other prompts alone" (§9 checks it). DreamBooth generates them with the model.
#
# The VAE and the text encoder stay frozen, so we run them once over the set and keep their outputs.

# %%
if TINY:
    # 512 of each; a short run (COURSE_TRAIN_STEPS) draws only 16 of each per step, so it encodes no more than it can use
    N = min(512, 16 * STEPS)
    concept = new_concept.concept_scenes(SHAPE, N)
    prior = new_concept.prior_scenes(N)
    images, captions = [s.image for s in concept + prior], [s.caption for s in concept + prior]
else:
    images = new_concept.photo_crops(cu.load_image(cu.image_name("new_concept", choice.profile)), 8, settings["height"]) + [
        pipe(class_prompt, generator=torch.Generator().manual_seed(100 + i), **settings).images[0] for i in range(8)]  # the prior
    captions = [new_prompt] * 8 + [class_prompt] * 8
    N = 8
is_new = torch.tensor([i < N for i in range(len(images))])
print(f"{len(images)} images: {int(is_new.sum())} of the new thing, {int((~is_new).sum())} of the prior")
print("captions:", captions[:2], "...", captions[-2:])
display(cu.grid(images[:5] + images[-5:], cols=5))

start = time.perf_counter()
data = new_concept.encode_dataset(pipe, images, captions)
encode_seconds = time.perf_counter() - start
print({k: tuple(v.shape) for k, v in data.items()}, f"encoded in {encode_seconds:.1f} s")

# %% [markdown]
# ## 4. One training step, written out
#
# Lesson 3 §2 computed the loss once; a training step adds a gradient and an update. The noise is added
# by DDPM's scheduler (the pipelines' schedulers share its 1000 timesteps and noise schedule).

# %%
noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
unet = pipe.unet
scaling = pipe.vae.config.scaling_factor
BATCH = 32 if TINY else 2  # images per step: half new, half prior


def draw_batch(generator):
    """Image numbers for one batch: half of the new thing, half of the prior."""
    new_ids, prior_ids = torch.nonzero(is_new)[:, 0], torch.nonzero(~is_new)[:, 0]
    half = BATCH // 2
    return torch.cat([new_ids[torch.randint(len(new_ids), (half,), generator=generator)],
                      prior_ids[torch.randint(len(prior_ids), (BATCH - half,), generator=generator)]])


gen = torch.Generator().manual_seed(0)
index = draw_batch(gen)
x_0 = new_concept.sample_latents(data, index, scaling, gen)  # [B, 4, h, w]: one draw from the VAE's distribution
c = data["text"][index]                                      # [B, 77, hidden]
check = gen.get_state()                                      # (to redo this step with the module below)
# Simplified from course_utils.new_concept.training_loss
eps = torch.randn(x_0.shape, generator=gen)                  # the noise to predict ...
eps = eps + new_concept.NOISE_OFFSET * torch.randn((BATCH, 4, 1, 1), generator=gen)  # ... plus offset noise (lesson 3)
t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (BATCH,), generator=gen)  # a timestep per image
x_t = noise_scheduler.add_noise(x_0, eps, t)                 # sqrt(a_bar_t) x_0 + sqrt(1 - a_bar_t) eps
with torch.no_grad():
    eps_hat = unet(x_t.to(unet.device, unet.dtype), t.to(unet.device), c.to(unet.device, unet.dtype)).sample
loss = torch.nn.functional.mse_loss(eps_hat.float(), eps.to(eps_hat.device).float())
print("x_0", tuple(x_0.shape), "| c", tuple(c.shape), "| t", t[:6].tolist(), "... | loss", round(loss.item(), 5))

with torch.no_grad():
    reference = new_concept.training_loss(unet, noise_scheduler, x_0, c, torch.Generator().set_state(check))
print("the same step by new_concept.training_loss:", round(reference.item(), 5),
      "| difference:", abs(reference.item() - loss.item()))
assert abs(reference.item() - loss.item()) <= cu.by_hand.tolerance(unet.dtype)  # 0 here: the same computation

# %% [markdown]
# Training adds `loss.backward()` (a gradient for each weight that requires one) and `optimizer.step()`
# (move them against it). Training all of the UNet's weights is a full fine-tune; a LoRA trains far fewer.
#
# ## 5. A LoRA: a small trainable detour around frozen layers
#
# A LoRA leaves a layer's weight `W` (`out x in`) frozen and adds two thin matrices, `A` (`rank x in`)
# and `B` (`out x rank`): the layer computes `W x + (alpha / rank) * B A x`. `B` starts at zero, so at
# step 0 the model is the one we loaded. diffusers' `unet.add_adapter` (through `peft`) wraps the layers
# we name: the attention projections **and the ResNet convolutions**. With attention alone (most LoRA
# scripts' default) this recipe drew no diamond (`docs/training.md`): a corner is a local pattern of
# pixels, what convolutions make.

# %%
RANK = 8 if TINY else 16
unet.requires_grad_(False)
unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                            target_modules=list(new_concept.LORA_TARGETS)), adapter_name="new_concept")
cast_training_params(unet, dtype=torch.float32)  # the LoRA trains in float32; the frozen UNet keeps its dtype (§6)
trainable = [p for name, p in unet.named_parameters() if p.requires_grad]
lora_params = sum(p.numel() for p in trainable)
unet_params = sum(p.numel() for name, p in unet.named_parameters() if "lora_" not in name)
print(f"targets: {new_concept.LORA_TARGETS}, rank {RANK}")
print(f"LoRA: {lora_params:,} trainable parameters = {lora_params / unet_params:.1%} of the UNet's {unet_params:,}")
name, layer = next((n, m) for n, m in unet.named_modules() if n.endswith("attn2.to_k"))
print(name, "->", type(layer).__name__, "| A:", tuple(layer.lora_A["new_concept"].weight.shape),
      "| B:", tuple(layer.lora_B["new_concept"].weight.shape), "| B is zero:", bool((layer.lora_B["new_concept"].weight == 0).all()),
      "| dtypes: W", layer.base_layer.weight.dtype, "| A and B", layer.lora_A["new_concept"].weight.dtype)

# %% [markdown]
# ## 6. Train
#
# AdamW on the LoRA's parameters. The learning rate warms up over 20 steps, then follows a *cosine
# schedule* to 0 (half a cosine wave: slow at first, fastest in the middle, slow at the end). *Clipping*
# scales the gradients down when their overall length exceeds 1, so one bad batch cannot throw the weights
# far. Each step's batch, noise and timesteps are fresh, so its loss jumps; to see learning we also
# measure the loss on a **fixed** batch (fixed images, noise and timesteps) now and then.
#
# In float16 (a GPU) it trains as diffusers' scripts do: the LoRA in float32 (exercise 3 shows why),
# `torch.autocast`, and a `GradScaler` that scales the loss up so small gradients do not round to 0 (and
# back before clipping), skipping a step that overflowed. In float32 these lines change nothing.

# %%
LR = 4e-3 if TINY else 1e-4  # tiny: measured (docs/training.md, "Lesson 10"); SD 1.5: the usual DreamBooth-LoRA rate
WARMUP = min(20, STEPS)
optimizer = torch.optim.AdamW(trainable, lr=LR, weight_decay=0.0)
fixed_gen = torch.Generator().manual_seed(1234)
fixed_index = torch.nonzero(is_new)[:, 0][:16]
fixed_x0 = new_concept.sample_latents(data, fixed_index, scaling, fixed_gen)
fixed_state = fixed_gen.get_state()


def fixed_loss():
    """The loss on the fixed batch (same latents, noise and timesteps every time), without a gradient."""
    with torch.no_grad():
        return new_concept.training_loss(unet, noise_scheduler, fixed_x0, data["text"][fixed_index],
                                         torch.Generator().set_state(fixed_state)).item()


def learning_rate(step):
    """Linear warm-up over WARMUP steps, then a cosine down to 0 at STEPS."""
    return LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * step / STEPS))


autocast = torch.autocast(choice.device, dtype=unet.dtype, enabled=unet.dtype != torch.float32)  # half-precision arithmetic
# (a first scale of 2**10: the default, 2**16, overflows at the start and skips steps a short run cannot spare)
scaler = torch.amp.GradScaler(choice.device, init_scale=precision.INITIAL_LOSS_SCALE, enabled=unet.dtype == torch.float16)
if not TINY:
    unet.enable_gradient_checkpointing()  # SD 1.5 at 512x512: recompute activations in backward() (less memory)
losses, checks = [], [(0, fixed_loss())]
unet.train()
gen = torch.Generator().manual_seed(0)
start = time.perf_counter()
for step in range(STEPS):
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step)
    index = draw_batch(gen)
    x_0 = new_concept.sample_latents(data, index, scaling, gen)
    with autocast:
        loss = new_concept.training_loss(unet, noise_scheduler, x_0, data["text"][index], gen)  # = section 4's lines
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # (loss x scale).backward() in float16; loss.backward() otherwise
    scaler.unscale_(optimizer)  # the gradients divided back by the scale
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # clipping
    scaler.step(optimizer)  # optimizer.step(), skipped if a gradient overflowed (and the scale lowered)
    scaler.update()
    assert math.isfinite(loss.item()) and all(torch.isfinite(p).all() for p in trainable), f"not finite at step {step}"
    losses.append(loss.item())
    if (step + 1) % max(1, STEPS // 6) == 0 or step + 1 == STEPS:
        checks.append((step + 1, fixed_loss()))
        print(f"step {step + 1:4d}  batch loss {loss.item():.4f}  fixed-batch loss {checks[-1][1]:.4f}  "
              f"({time.perf_counter() - start:.0f} s)")
unet.eval()  # (checkpointing stays on: it acts only when gradients are computed)
train_seconds = time.perf_counter() - start
print(f"{STEPS} steps in {train_seconds:.0f} s = {train_seconds / STEPS:.2f} s per step on {choice.device}")
print(f"fixed-batch loss: {checks[0][1]:.4f} -> {checks[-1][1]:.4f}")
if STEPS >= 16:  # (a handful of warm-up steps, as on SD 1.5 on a CPU, need not move it yet)
    assert checks[-1][1] < checks[0][1], "the loss on the fixed batch did not fall"
plt.figure(figsize=(7, 3))
plt.plot(range(1, STEPS + 1), losses, lw=0.6, alpha=0.6, label="each step's batch")
plt.plot(*zip(*checks), "o-", label="fixed batch")
plt.xlabel("step"), plt.ylabel("MSE loss"), plt.legend(), plt.title("Training loss"), plt.show()

# %% [markdown]
# ## 7. Before and after
#
# The same prompts and seeds as in §1, with the LoRA, then with it switched off (`disable_adapters`).

# %%
if TINY:
    after_share, after_images, after_found = new_concept.share_drawn(pipe, SHAPE, prompts, **settings)
    print(f"a {SHAPE} in {after_share:.0%} of {len(prompts)} pictures with the LoRA (before training: {before_share:.0%})")
    display(cu.grid(before_images[:10] + after_images[:10], cols=10,
                    titles=["before"] * 10 + [f["shape"] or "-" for f in after_found[:10]]))
else:
    after_images = [pipe(new_prompt, generator=torch.Generator().manual_seed(s), **settings).images[0] for s in range(2)]
    display(cu.grid(before_images + after_images, cols=2, titles=["before"] * 2 + ["after"] * 2))
unet.disable_adapters()  # off: the frozen weights were never touched, so this is the model of section 1
off_images = (new_concept.share_drawn(pipe, SHAPE, prompts, **settings)[1] if TINY else  # §1's calls again
              [pipe(new_prompt, generator=torch.Generator().manual_seed(s), **settings).images[0] for s in range(2)])
unet.enable_adapters()
print("LoRA off vs before training, largest pixel difference:",
      max(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() for a, b in zip(off_images, before_images)))

# %% [markdown]
# ## 8. Save it, share it, load it back
#
# diffusers saves a LoRA in its own format, one file `pytorch_lora_weights.safetensors` (lesson 7's outline LoRA
# on `tiny` is one), and `load_lora_weights` loads it, or a kohya file like lesson 7's Light and Shadow, into any
# pipeline of the same architecture.

# %%
folder = Path(tempfile.mkdtemp()) / "my_lora"
StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet, adapter_name="new_concept"))
lora_file = folder / "pytorch_lora_weights.safetensors"
print(lora_file.name, f"{lora_file.stat().st_size / 1e6:.2f} MB")

fresh = cu.load_pipeline("text2img")
fresh.set_progress_bar_config(disable=True)
fresh.load_lora_weights(folder, adapter_name="mine")  # (its note: the file has no text-encoder part, as intended)
check_prompts = prompts[:2] if TINY else [new_prompt]
mine = fresh(check_prompts, generator=[torch.Generator().manual_seed(s) for s in range(len(check_prompts))], **settings).images
ours = pipe(check_prompts, generator=[torch.Generator().manual_seed(s) for s in range(len(check_prompts))], **settings).images
diff = max(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() for a, b in zip(mine, ours))
print("largest pixel difference, loaded file vs the model we trained:", diff)

# %% [markdown]
# ## 9. What can go wrong
#
# **Too strong.** A LoRA's scale multiplies its detour (`set_adapters`, as in lesson 7): 0 is the old
# model, 1 what we trained, above 1 the change exaggerated. Overfitting shows there first: the same
# picture for every prompt, colours drifting, artefacts.
#
# **Forgetting.** The prior was there so that old prompts keep their meaning. The check on `tiny`: the
# world's 12 trained prompts, 2 seeds each, LoRA off and on: right colour, right shape, diamonds drawn.
# On SD 1.5: the class prompt.

# %%
scales = (0.5, 1.5, 2.5)  # (1.0 is section 7)
some = prompts[:4] if TINY else [new_prompt]  # 4 prompts, 4 colours
row, titles = [], []
for scale in scales:
    fresh.set_adapters(["mine"], adapter_weights=[scale])
    if TINY:
        share, pictures, found = new_concept.share_drawn(fresh, SHAPE, some, **settings)
        print(f"scale {scale:3.1f}: {share:4.0%} diamonds")
        row, titles = row + pictures, titles + [f"x{scale} {f['shape'] or '-'}" for f in found]
    else:
        row, titles = row + fresh(new_prompt, generator=torch.Generator().manual_seed(0), **settings).images, titles + [f"x{scale}"]
display(cu.grid(row, cols=len(row) // len(scales), min_width=128, titles=titles))
if TINY:
    table = {}
    for scale in (0.0, 1.0):
        fresh.set_adapters(["mine"], adapter_weights=[scale])
        table[scale] = new_concept.old_prompts_kept(fresh, SHAPE, **settings)
    print(f"old prompts, LoRA off: colour right {table[0.0]['colour']:.2f}, shape right {table[0.0]['shape']:.2f}, "
          f"{table[0.0]['diamonds']} diamonds | LoRA on: {table[1.0]['colour']:.2f}, {table[1.0]['shape']:.2f}, "
          f"{table[1.0]['diamonds']} diamonds (of {table[1.0]['n']})")
else:
    pictures = []
    for scale in (1.0, 0.0):
        fresh.set_adapters(["mine"], adapter_weights=[scale])
        pictures += fresh(class_prompt, generator=torch.Generator().manual_seed(0), **settings).images
    display(cu.grid(pictures, cols=2, titles=["class prompt, LoRA on", "LoRA off"]))
fresh.set_adapters(["mine"], adapter_weights=[1.0])

# %% [markdown]
# Switched off, the LoRA costs nothing (§7). Switched on, it can leak: a LoRA that learned corners can
# put some into a circle; try a scale below 1, fewer steps, a lower rank. A learning rate too high shows
# in the loss curve as spikes that stay; too low, as a curve that hardly moves. Runs differing only in
# their random draws can differ by several pictures in 20: measure more seeds before believing a small
# difference. (Appendix, "From lesson 10": the runs behind this recipe.)
#
# ## 10. Textual inversion vs LoRA vs full fine-tune
#
# A LoRA changes what the UNet computes. *Textual inversion* changes only what it is told: a new word,
# whose row of the token table (lesson 2, §9: a word is its row) is trained while all else stays frozen.
# First the word, in three steps (lesson 7's `load_textual_inversion` does them with a trained row). Then
# §4's loss with one vector as the only weights that learn: fresh noise and timesteps every step, as real
# runs draw them, and the captions encoded again with the row in place, so the gradient reaches it.

# %%
ti_pipe = cu.load_pipeline("text2img")
ti_pipe.set_progress_bar_config(disable=True)
tokenizer, text_encoder = ti_pipe.tokenizer, ti_pipe.text_encoder
token, start_word = ("<diamond>", "square") if TINY else ("<sks-cat>", "cat")  # the new word; where its row starts
old_rows = text_encoder.get_input_embeddings().weight.detach().clone()
print("before:", token, "->", tokenizer.tokenize(token))
tokenizer.add_tokens(token)                                                # 1. the tokenizer learns the word
text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # 2. the table grows by one row
token_table = text_encoder.get_input_embeddings()                          #    (a new nn.Embedding)
token_id = tokenizer.convert_tokens_to_ids(token)
with torch.no_grad():
    token_table.weight[token_id] = text_embeddings.word_vector(tokenizer, text_encoder, start_word)  # 3. its row
print("after: ", token, "->", tokenizer.tokenize(token), "id", token_id, "| table", tuple(old_rows.shape), "->", tuple(token_table.weight.shape))
assert torch.equal(token_table.weight[:-1], old_rows)  # every other word keeps its row

n_ti, per_pass = (24, 24) if TINY else (8, 2)  # §3's first images; SD 1.5: 2 crops per pass (less memory)
ti_images, ti_captions = images[:n_ti], [c.replace(SHAPE if TINY else "sks cat", token) for c in captions[:n_ti]]
with torch.no_grad():
    ti_x0 = torch.cat([ti_pipe.vae.encode(cu.to_tensor(ti_images[k:k + per_pass]).to(choice.device, ti_pipe.vae.dtype))
                       .latent_dist.mean for k in range(0, n_ti, per_pass)]).float().cpu() * scaling  # x_0 [n, 4, h, w]
    ids = text_embeddings.token_ids(tokenizer, ti_captions).to(choice.device)
    frozen = token_table(ids)               # [n, 77, hidden]: the captions' rows, frozen ...
where = (ids == token_id)[..., None]        # ... except where the new word stands: [n, 77, 1]
ti_lr, ti_steps = (0.05 if TINY else 5e-3), max(4, min(30, STEPS // 4))  # 30 steps in the full recipe
ti_row = token_table.weight[token_id].detach().float().clone().requires_grad_(True)  # what learns: [hidden], float32
ti_optimizer = torch.optim.Adam([ti_row], lr=ti_lr)
ti_scaler = precision.grad_scaler(choice.device, ti_pipe.unet.dtype)  # as in §6 (float16 only)
ti_pipe.unet.requires_grad_(False)
text_encoder.requires_grad_(False)
ti_pipe.unet.enable_gradient_checkpointing()  # (less memory)
gen, ti_losses, start = torch.Generator().manual_seed(0), [], time.perf_counter()
# Simplified from course_utils.text_embeddings.train_textual_inversion
for step in range(ti_steps):
    eps = torch.randn(ti_x0.shape, generator=gen)  # fresh noise (with §4's offset) and fresh timesteps, every step
    eps = eps + new_concept.NOISE_OFFSET * torch.randn((n_ti, 4, 1, 1), generator=gen)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n_ti,), generator=gen)
    x_t = noise_scheduler.add_noise(ti_x0, eps, t)
    ti_optimizer.zero_grad()
    ti_losses.append(0.0)
    for p in [slice(k, k + per_pass) for k in range(0, n_ti, per_pass)]:  # the passes' gradients add up
        with autocast:
            text = text_embeddings.encode_embeddings(text_encoder, torch.where(where[p], ti_row.to(frozen.dtype), frozen[p]))
            eps_hat = ti_pipe.unet(x_t[p].to(choice.device, ti_pipe.unet.dtype), t[p].to(choice.device), text).sample
        loss = torch.nn.functional.mse_loss(eps_hat.float(), eps[p].to(choice.device)) * per_pass / n_ti  # §4's loss
        ti_scaler.scale(loss).backward()
        ti_losses[-1] += loss.item()
    ti_scaler.step(ti_optimizer)
    ti_scaler.update()
    if step == 1:
        after_two = ti_row.detach().clone()
ti_seconds = time.perf_counter() - start
print(f"textual inversion: {ti_steps} steps in {ti_seconds:.0f} s; each step's loss:", [round(x, 3) for x in ti_losses[:6]], "...")
reference_row, _ = text_embeddings.train_textual_inversion(
    ti_pipe, ti_images, ti_captions, token, steps=2, learning_rate=ti_lr, noise_offset=new_concept.NOISE_OFFSET,
    batch_size=per_pass, gradient_checkpointing=True)
print("max difference to text_embeddings.train_textual_inversion after two steps:", (reference_row.float() - after_two).abs().max().item())
assert (reference_row.float() - after_two).abs().max() <= cu.by_hand.tolerance(ti_pipe.unet.dtype)

# %% [markdown]
# The learned row goes into the table; we ask for the new word, then compare the three ways.

# %%
with torch.no_grad():
    token_table.weight[token_id] = ti_row.to(token_table.weight.dtype)
if TINY:
    ti_share, ti_pictures, ti_found = new_concept.share_drawn(ti_pipe, SHAPE, [p.replace(SHAPE, token) for p in prompts[:10]], **settings)
    print(f"'{token}' draws a {SHAPE} in {ti_share:.0%}; it draws:", {s: [f["shape"] for f in ti_found].count(s) for s in {f["shape"] for f in ti_found}})
    display(cu.grid(ti_pictures, cols=5, min_width=128, titles=[f["shape"] or "-" for f in ti_found]))
else:
    display(ti_pipe(new_prompt.replace("sks cat", token), generator=torch.Generator().manual_seed(0), **settings).images[0])
print(f"{'':20s} {'trains':>12s} {'file (fp16)':>12s} {'time here':>10s} {'new thing drawn':>16s}")
for name, n, size, seconds, effect in [
    ("textual inversion", token_table.weight.shape[1], token_table.weight.shape[1] * 2, f"{ti_seconds:.0f} s", f"{ti_share:.0%}" if TINY else "look"),
    ("LoRA (this lesson)", lora_params, lora_file.stat().st_size, f"{train_seconds:.0f} s", f"{after_share:.0%}" if TINY else "look"),
    ("full fine-tune", unet_params, unet_params * 2, "-", "80% (below)" if TINY else "-")]:
    print(f"{name:20s} {n:>12,} {size / 1e3:>9,.1f} kB {seconds:>10s} {effect:>16s}")

# %% [markdown]
# **Why textual inversion can only name what the model can already draw.** What the UNet draws for a
# text embedding is fixed by its frozen weights: training the row only searches the inputs, for the one
# under which the model comes closest to the pictures. A diamond is not among `tiny`'s drawings, so the
# search ends at shapes it can draw (above); the same loop names a purple triangle, which `tiny` draws
# (appendix, "From lesson 10"). SD 1.5 has drawn countless cats: an embedding of one cat gets close (Gal et al., 2022).
#
# - **Textual inversion** trains one row: it names, it cannot teach drawing.
# - **A LoRA** changes what the layers compute with a few per cent of their weights: enough for a new
#   shape, small to share, switchable and scalable.
# - **A full fine-tune** trains every UNet weight: it can learn the most, needs the most memory (AdamW's
#   two float32 states: 6.9 GB for SD 1.5's 860 M weights) and ships as a whole model. On `tiny` it drew
#   80% diamonds and moved the old prompts more (`docs/training.md`, "Lesson 10").

# %% [markdown]
# ## Exercises
#
# **1.** Predict: how many trainable parameters does the LoRA have at rank 4? At rank 16? (A layer's
# LoRA has `rank x (in + out)` numbers for a linear layer, `rank x (in x 9 + out)` for a 3x3
# convolution.) Then count them.

# %%
# your attempt

# %% [markdown]
# **2.** Predict: at which timesteps did the LoRA change the loss on diamonds most: at t = 50
# (nearly clean), t = 500, or t = 950 (nearly pure noise)? Measure the fixed batch's loss at each
# with the LoRA on and off.

# %%
# your attempt

# %% [markdown]
# **3.** Predict: §5 cast the LoRA's weights to float32 before training, although the UNet is in
# float16 on a GPU. What would one AdamW step do to a LoRA layer kept in float16? (AdamW divides each
# step by `sqrt(v) + eps`, with `eps = 1e-8`; `B` starts at 0, so `A`'s first gradient is 0.) Build a
# float16 pair `A`, `B` by hand, take one AdamW step, and look at `A`.

# %%
# your attempt

# %% [markdown]
# ## Summary
#
# - Training is the loss of lesson 3 §2 plus `backward()` and `optimizer.step()`: noise the latents
#   at a random timestep, predict the noise, mean squared error. Freeze the VAE and text encoder and
#   their outputs can be computed once.
# - A LoRA adds `B @ A` beside frozen weights; with `B = 0` at the start it begins as the old model.
#   Where it sits matters: on `tiny`, attention alone learned no shape; attention plus the ResNet
#   convolutions did.
# - Measure learning on a fixed batch; count what the pictures show with and without the LoRA;
#   check the old prompts for forgetting; mix prior images into every batch to prevent it.
# - Check first that the latents can carry the concept: the VAE's round trip is a cheap test.
# - Textual inversion: `tokenizer.add_tokens`, `resize_token_embeddings`, a new row, trained with the same loss
#   (fresh noise and timesteps every step) while all else is frozen. It names what the model can already draw;
#   a LoRA or a fine-tune teaches it to draw something new.
# - In half precision, train as diffusers' scripts do: the trained weights in float32, the frozen model
#   in float16, `torch.autocast`, and a `GradScaler` for float16 (exercise 3 shows the NaN otherwise).

# %% [markdown]
# ## Solutions
#
# ### Solution 1

# %%
def lora_count(rank):
    """Trainable parameters of a LoRA of ``rank`` on LORA_TARGETS, counted from the layers' shapes."""
    total = 0
    for name, module in unet.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None:
            continue
        if isinstance(base, torch.nn.Conv2d):
            total += rank * (base.in_channels * base.kernel_size[0] * base.kernel_size[1] + base.out_channels)
        else:
            total += rank * (base.in_features + base.out_features)
    return total


for r in (4, RANK, 16):
    print(f"rank {r:2d}: {lora_count(r):,} parameters")
assert lora_count(RANK) == lora_params  # the formula counts what peft made

# %% [markdown]
# ### Solution 2

# %%
for t_value in (50, 500, 950):
    t_fixed = torch.full((len(fixed_index),), t_value)
    noise = torch.randn(fixed_x0.shape, generator=torch.Generator().manual_seed(7))
    x_t = noise_scheduler.add_noise(fixed_x0, noise, t_fixed)
    out = {}
    for on in (True, False):
        (unet.enable_adapters if on else unet.disable_adapters)()
        with torch.no_grad():
            pred = unet(x_t.to(unet.device, unet.dtype), t_fixed.to(unet.device),
                        data["text"][fixed_index].to(unet.device, unet.dtype)).sample
        out[on] = torch.nn.functional.mse_loss(pred.float().cpu(), noise).item()
    unet.enable_adapters()
    print(f"t = {t_value:3d}: loss without LoRA {out[False]:.4f}, with {out[True]:.4f}")

# %% [markdown]
# The LoRA changes the loss most at t = 50. Predicting the noise of a nearly clean picture means
# knowing exactly where its edges are: the old model expected a rounder or squarer shape there and
# was far off. At t = 950 the noisy latent is almost all noise, so any model predicts it well, and
# the LoRA changes little. (One fixed noise draw: run it with another seed to see how much of the
# gap is this draw.)

# %% [markdown]
# ### Solution 3

# %%
print("1e-8 in float16:", torch.tensor(1e-8, dtype=torch.float16).item())
x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
for weights_dtype in (torch.float16, torch.float32):
    A = torch.nn.Parameter((0.1 * torch.randn(4, 8, generator=torch.Generator().manual_seed(1))).to(weights_dtype))
    B = torch.nn.Parameter(torch.zeros(8, 4, dtype=weights_dtype))  # starts at 0, as a LoRA's B
    out = x.to(weights_dtype) @ A.T @ B.T  # the LoRA's detour, B A x
    out.float().pow(2).mean().backward()
    print(f"{str(weights_dtype):14s} A's gradient is all 0: {bool((A.grad == 0).all())}", end=" | ")
    torch.optim.AdamW([A, B], lr=1e-3).step()
    print("after one AdamW step, A has NaN:", bool(A.isnan().any()))

# %% [markdown]
# `A`'s first gradient is exactly 0 because `B` is 0. AdamW divides the step by `sqrt(v) + eps`; in
# float16 `eps = 1e-8` is 0 and `v` is 0, so the step is `0 / 0 = NaN`, and a NaN in a weight spreads
# to every later step and every picture (they come out black). In float32 `eps` keeps the division
# finite. That is why diffusers' scripts (and §5) cast what trains to float32 with `cast_training_params`.
