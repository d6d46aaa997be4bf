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
# # Lesson 2 — Pipeline anatomy
#
# **What you will learn**
# - what is inside a `StableDiffusionPipeline`: tokenizer, CLIP text encoder, UNet, scheduler, VAE
#   (and, in SD 1.5, a safety checker with its feature extractor);
# - how to load each part on its own with `from_pretrained(..., subfolder=...)`;
# - the 77-token window of the tokenizer, and exactly what is cut off past it;
# - the shapes on the way: text embeddings `[1, 77, 768]`, latents `[1, 4, 64, 64]`, image `[1, 3, 512, 512]`
#   (on the course's small `tiny` model: `[1, 77, 64]`, `[1, 4, 16, 16]`, `[1, 3, 64, 64]`);
# - the VAE's scaling factor, and the scheduler's timesteps and noise schedule;
# - inside the text encoder: a word is one row of a table. Swap or mix rows and the picture changes;
#   add one row and train it, and you have *textual inversion*: a new word for something the model can draw.

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
import random
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from PIL import Image

import course_utils as cu
from course_utils.by_hand import tolerance  # what "the same" means: 1e-4 in float32, ~0.03 in fp16

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why

# imported after cu.setup(), which quiets a library note ("requires torchvision") that importing them prints
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

# %% [markdown]
# ## 1. Print the pipeline
#
# A pipeline is a set of models and a recipe that calls them in order. Printing it shows its
# components — each with the library and class it is loaded with — and its settings.

# %%
pipe = cu.load_pipeline("text2img")
settings = cu.default_settings(choice.profile)
prompt = cu.prompt("main", choice.profile)
print(pipe)

# %% [markdown]
# Three groups, in the order they run:
# 1. **`tokenizer` + `text_encoder`** (CLIP): text → numbers → a text embedding;
# 2. **`unet` + `scheduler`**: start from noise *latents* and remove the noise step by step, guided by the text embedding;
# 3. **`vae`**: decode the final latents into an image.
#
# In SD 1.5 you also see `safety_checker` and `feature_extractor` (section 8). The `tiny` profile has
# none (`null`). `tiny` is the course's own small model with SD 1.5's classes, trained on a synthetic
# world of one coloured shape on a plain background (`course_utils/world.py`); its prompt here is
# *"a red circle on a blue background"*. Smaller sizes, same mechanics.
#
# The same three groups as a picture: *latent* diffusion, because the loop runs on small latents and
# only the VAE sees pixels.

# %%
display(cu.diagrams.pipeline_diagram(pipe))  # drawn by code (course_utils/diagrams.py), shapes read from this pipe

# %% [markdown]
# ## 2. Load the components one by one
#
# Each component lives in a subfolder of the model's folder (`unet/`, `vae/`, ...), and each class
# can load its own part with `subfolder=`. `cu.model_source()` gives the folder (or Hub id) of this
# profile's model.

# %%
src = cu.model_source()
# SD 1.5's folder also has half-precision copies of the weights (the "fp16" variant); use them when we run in fp16.
variant = "fp16" if choice.dtype == torch.float16 and any(Path(src).glob("unet/*.fp16.*")) else None
print("source:", src, "| variant:", variant)

tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", dtype=choice.dtype, variant=variant).to(choice.device)
unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", dtype=choice.dtype, variant=variant).to(choice.device)
scheduler = PNDMScheduler.from_pretrained(src, subfolder="scheduler")
vae = AutoencoderKL.from_pretrained(src, subfolder="vae", dtype=choice.dtype, variant=variant).to(choice.device)


def count(model) -> int:
    """Number of parameters (weights) of a model."""
    return sum(p.numel() for p in model.parameters())


for name, model in [("text_encoder", text_encoder), ("unet", unet), ("vae", vae)]:
    print(f"{name:13s} {type(model).__name__:22s} {count(model) / 1e6:9.2f} M parameters")
print(f"{'tokenizer':13s} {type(tokenizer).__name__:22s} vocabulary of {tokenizer.vocab_size} tokens")
print(f"{'scheduler':13s} {type(scheduler).__name__:22s} no weights, {scheduler.config.num_train_timesteps} training timesteps")
assert count(unet) == count(pipe.unet)  # the same model the pipeline loaded

# %% [markdown]
# For SD 1.5 the counts are about 123 M (text encoder), 860 M (UNet) and 84 M (VAE): the UNet is
# where the work is. `tiny` has the same classes with far fewer weights.

# %% [markdown]
# ## 3. The tokenizer: text → token ids
#
# CLIP's tokenizer splits the text into known pieces (`</w>` marks the end of a word) and maps each
# to an id in its vocabulary. It adds a start token (49406) and an end token (49407). The tokenizer is
# CLIP's real one in every profile (`tiny` included), so we look at the source lesson's prompt:

# %%
lesson_prompt = cu.prompt("main", "sd15")
print(lesson_prompt)
print(tokenizer.tokenize(lesson_prompt))

# %%
ids = tokenizer(lesson_prompt).input_ids
print(ids)
assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # CLIP's real ids, as in SD 1.5

# %% [markdown]
# And this profile's prompt, the one the rest of the lesson generates with (on `sd15` it is the same one):

# %%
print(prompt)
for token, token_id in zip(tokenizer.tokenize(prompt), tokenizer(prompt, add_special_tokens=False).input_ids):
    print(f"{token_id:6d}  {token}")

# %% [markdown]
# Every word of the `tiny` prompt is one token, so "red" is id 736 whatever the profile: `tiny`'s
# text encoder learned its own vectors for the words of its world, on CLIP's vocabulary.

# %% [markdown]
# The text encoder always reads **77** positions, so the pipeline pads the ids to 77 (with the end
# token, 49407, as padding):

# %%
padded = tokenizer(lesson_prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
print("model_max_length:", tokenizer.model_max_length)
print("without padding: ", len(tokenizer(lesson_prompt).input_ids), "ids (start + the text's tokens + end)")
print("input_ids shape: ", tuple(padded.input_ids.shape))
print(padded.input_ids[0, :14].tolist(), "...")
assert tuple(padded.input_ids.shape) == (1, 77)

# %% [markdown]
# ## 4. The 77-token window: what happens past it
#
# 77 positions = start token + **75 tokens of text** + end token. Anything longer is cut off,
# silently for the image (diffusers logs a warning). A long prompt shows exactly which words are lost:

# %%
details = [
    "in a white spacesuit with a golden visor", "on a brown horse with a long flowing mane",
    "galloping across the grey surface of the moon", "the blue earth rising over the horizon",
    "countless stars in a black sky", "dramatic rim lighting", "highly detailed", "sharp focus",
    "film photograph", "wide angle lens", "cinematic composition", "award winning",
    "a red flag planted in the dust", "deep footprints behind them", "a small lunar lander far away",
]
long_prompt = lesson_prompt + ", " + ", ".join(details)
all_ids = tokenizer(long_prompt).input_ids  # no truncation: every token (transformers warns that it is too long)
kept = tokenizer(long_prompt, padding="max_length", max_length=77, truncation=True).input_ids
limit = tokenizer.model_max_length - 1  # position 76 is the end token
print(f"{len(all_ids) - 2} text tokens; the window holds {limit - 1}")
print("kept:    ", tokenizer.decode(kept[1:limit]))
print("cut off: ", tokenizer.decode(all_ids[limit:-1]))
assert kept[:limit] == all_ids[:limit] and kept[limit] == tokenizer.eos_token_id

# %% [markdown]
# The pipeline keeps the first 75 tokens and tells you what it dropped (the warning below says the same):

# %%
_ = pipe.encode_prompt(long_prompt, choice.device, 1, False)

# %% [markdown]
# Put what matters **first**. Lesson 5 shows one way past the limit (encode the prompt in chunks of 75).

# %% [markdown]
# ## 5. The text encoder: token ids → text embeddings
#
# CLIP's text encoder turns the 77 ids into 77 vectors: one per position, each of the encoder's
# hidden size. This `[1, 77, hidden]` tensor is what the UNet "reads" at every denoising step
# (through cross-attention). Noise is never added to it: the noise goes into the latents.

# %%
with torch.no_grad():
    embeddings = text_encoder(padded.input_ids.to(choice.device))[0]  # last_hidden_state
print("text embeddings:", tuple(embeddings.shape), "| hidden size:", text_encoder.config.hidden_size)

pipe_embeddings, _ = pipe.encode_prompt(lesson_prompt, choice.device, 1, False)
difference = (embeddings - pipe_embeddings).abs().max().item()
print("max difference to pipe.encode_prompt:", difference)
assert difference <= tolerance(choice.dtype)

# %% [markdown]
# SD 1.5 gives `[1, 77, 768]`; `tiny` gives `[1, 77, 64]`: same layout, smaller vectors. Section 9
# opens the encoder up and plays with its input.
#
# ### "Is the CLIP inside SD its own, or a call to a chatbot?"
# Its own. The text encoder is a regular PyTorch model whose weights sit in the pipeline's own folder
# (`text_encoder/`); it runs on your device, with no call to any service. In SD 1.5 it is the text half of
# OpenAI's CLIP ViT-L/14 (`openai/clip-vit-large-patch14`), frozen while SD was trained. In `tiny` it is a
# 2-layer `CLIPTextModel` trained together with its UNet on the captions of its world. See for yourself:

# %%
print("class:     ", type(text_encoder).__module__ + "." + type(text_encoder).__name__)
print("parameters:", f"{count(text_encoder) / 1e6:.2f} M")
print("weights:   ", text_encoder.name_or_path, "(subfolder text_encoder)")
print("runs on:   ", next(text_encoder.parameters()).device)

# %% [markdown]
# ## 6. The VAE: image ↔ latents
#
# The UNet does not work on pixels but on **latents**: 4 channels at a fraction of the width and height
# (1/8 in SD 1.5, whose VAE downsamples 3 times; 1/4 in `tiny`, whose smaller VAE downsamples twice).
# The VAE's encoder makes latents from an image; its decoder turns latents back into an image. Latents
# are multiplied by `vae.config.scaling_factor` so that their values have about unit variance, which is
# what the UNet was trained on. Each VAE has its own factor: SD 1.5's is 0.18215, `tiny`'s was measured
# on its training images.
#
# The image is the profile's test photo: the astronaut for `sd15`, a red circle on blue for `tiny`.

# %%
height, width = settings["height"], settings["width"]
photo = cu.load_image(cu.image_name("photo", choice.profile), size=(width, height))
x = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float() / 127.5 - 1  # [1, 3, H, W] in [-1, 1] (cu.to_tensor does this; written out here)
scaling = vae.config.scaling_factor
print("scaling_factor from the VAE's config:", scaling)

generator = torch.Generator(device="cpu").manual_seed(0)
with torch.no_grad():
    posterior = vae.encode(x.to(choice.device, vae.dtype)).latent_dist  # a Gaussian per latent value
    latents = posterior.sample(generator) * scaling
    decoded = vae.decode(latents / scaling).sample
print("image:  ", tuple(x.shape), f"= {x.numel():,} numbers")
print("latents:", tuple(latents.shape), f"= {latents.numel():,} numbers")
print(f"{x.shape[-1] // latents.shape[-1]}x smaller per side; the latents hold {x.numel() / latents.numel():.0f}x fewer numbers")

# %%
# Simplified from course_utils.by_hand.to_pil
def to_pil(images: torch.Tensor) -> Image.Image:
    """The first image of a [-1, 1] batch [n, 3, H, W] as a PIL image."""
    array = ((images[0].float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


display(cu.grid([photo, to_pil(decoded)], cols=2, size=max(256, width), titles=["the photo", "its latents, decoded"]))
print("the 4 latent channels (each stretched to black..white)")
display(cu.latent_to_image(latents))

# %% [markdown]
# For SD 1.5 a 512x512 image gives latents `[1, 4, 64, 64]`: 8x smaller per side, 48x fewer numbers.
# The decoded photo looks almost like the original, and the latent channels look like a blurry, small
# version of it. `tiny` turns its 64x64 image into `[1, 4, 16, 16]`: 4x per side, 12x fewer numbers. Its
# decoded image shows the same circle on the same blue, and the circle is visible in the 16x16 channels
# too: the latents are still a small picture, not a code.

# %% [markdown]
# ## 7. The scheduler: timesteps and the noise schedule
#
# Training added noise in 1000 small steps, following a schedule of `betas` (how much noise each step
# adds). `alphas_cumprod[t]` is the share of the signal's variance still there at timestep `t`:
# a noisy latent is `sqrt(alphas_cumprod[t]) * latent + sqrt(1 - alphas_cumprod[t]) * noise`.
# At generation time the scheduler picks a few of those 1000 timesteps, from noisy to clean:

# %%
steps = settings["num_inference_steps"]
scheduler.set_timesteps(steps)
timesteps = scheduler.timesteps.tolist()
print(f"{steps} steps -> {len(timesteps)} timesteps:", timesteps)
repeated = [t for i, t in enumerate(timesteps[1:]) if t == timesteps[i]]
print("timestep that appears twice:", repeated)

# %% [markdown]
# PNDM takes its **first step twice**: it steps from the first timestep to the second, evaluates the UNet
# there, then redoes that first step with the average of both noise estimates. So one timestep appears
# twice and the UNet runs `steps + 1` times. Later steps reuse earlier estimates (a multistep method).

# %%
betas = scheduler.betas.numpy()
alphas_cumprod = scheduler.alphas_cumprod.numpy()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
left.plot(betas)
left.set(title="betas: noise added at each training step", xlabel="timestep t")
right.plot(np.sqrt(alphas_cumprod), label="signal kept: sqrt(alphas_cumprod)")
right.plot(np.sqrt(1 - alphas_cumprod), label="noise: sqrt(1 - alphas_cumprod)")
right.scatter(timesteps, np.sqrt(alphas_cumprod[timesteps]), s=12, color="black", label=f"the {steps} steps' timesteps")
right.set(title="how much of the latent survives at timestep t", xlabel="timestep t")
right.legend(fontsize=8, loc="center right")
plt.show()
print(f"at t=0: {np.sqrt(alphas_cumprod[0]):.3f} signal; at t=999: {np.sqrt(alphas_cumprod[-1]):.3f} signal")

# %% [markdown]
# ## 8. Put it back together — and the safety checker
#
# The full pipeline is: **text encoder** → a loop of **UNet + scheduler** steps on latents that start as
# pure noise → **VAE decode**. Our five components, assembled into a pipeline, do exactly what `pipe`
# does. Here we ask it for the final latents and decode them with the VAE ourselves (lesson 3 writes the loop):

# %%
assembled = StableDiffusionPipeline(
    vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
    safety_checker=None, feature_extractor=None, requires_safety_checker=False,
)
final_latents = assembled(prompt, generator=torch.Generator(device="cpu").manual_seed(0), output_type="latent", **settings).images
with torch.no_grad():
    by_hand = (vae.decode(final_latents / scaling).sample / 2 + 0.5).clamp(0, 1)  # [1, 3, H, W] in [0, 1]
print("final latents:", tuple(final_latents.shape), "-> image:", tuple(by_hand.shape))

output = pipe(prompt, generator=torch.Generator(device="cpu").manual_seed(0), output_type="np", **settings)
from_pipe = torch.from_numpy(output.images).permute(0, 3, 1, 2)
print("nsfw_content_detected:", output.nsfw_content_detected)
if not any(output.nsfw_content_detected or []):
    difference = (by_hand.float().cpu() - from_pipe).abs().max().item()
    print("max difference, components by hand vs pipe:", difference)
    assert difference <= tolerance(choice.dtype)
title = "components by hand, seed 0"
if choice.profile == "tiny":
    shows = cu.world.classify(to_pil(by_hand * 2 - 1))
    print("what the picture shows:", {k: round(v, 2) if isinstance(v, float) else v for k, v in shows.items()})
    title += f": {shows['color']} {shows['shape']} on {shows['background']}"
cu.grid([to_pil(by_hand * 2 - 1)], size=max(256, width), titles=[title])

# %% [markdown]
# **Safety checker and feature extractor.** SD 1.5's pipeline ends with a check: the
# `feature_extractor` (a `CLIPImageProcessor`) resizes and normalises each image, and the
# `safety_checker` (`StableDiffusionSafetyChecker`, a CLIP *image* model) compares it with a list of
# NSFW concepts. A flagged image is replaced by a **black image**, diffusers logs *"Potential NSFW
# content was detected in one or more images. A black image will be returned instead. Try again with
# a different prompt and/or seed."*, and `output.nsfw_content_detected` is `True` for that image
# (a list with one entry per image). It sometimes flags harmless images: try another seed.
#
# `tiny` has no checker, so `nsfw_content_detected` is `None` above. What this pipeline carries:

# %%
print("safety_checker:   ", type(pipe.safety_checker).__name__, "| is None:", pipe.safety_checker is None)
print("feature_extractor:", type(pipe.feature_extractor).__name__)
if pipe.safety_checker is not None:
    print(f"the safety checker has {count(pipe.safety_checker) / 1e6:.0f} M parameters")
print("assembled pipeline (built with safety_checker=None):", assembled.safety_checker, "| requires_safety_checker:", assembled.config.requires_safety_checker)

# %% [markdown]
# To load SD 1.5 without the checker (it saves its ~300 M parameters, about 0.6 GB in fp16, and the occasional false black image):
#
# ```python
# pipe = StableDiffusionPipeline.from_pretrained(cu.model_source(), safety_checker=None, requires_safety_checker=False, dtype=torch.float16)
# ```
#
# With `requires_safety_checker=False`, diffusers does not warn. The responsibility becomes yours: the
# model's licence (CreativeML OpenRAIL-M) forbids some uses, and images you show or publish are yours
# to check.

# %% [markdown]
# ## 9. A text-embedding lab: a word is a row of a table
#
# ### 9.1 The text encoder by hand
#
# Section 5 ran `text_encoder(ids)` in one call. Inside (transformers' `CLIPTextModel.forward`), it does four things:
# 1. look up each id's row in the **token table** `embeddings.token_embedding` (one learned vector per
#    word of the vocabulary: 49,408 rows);
# 2. add the row of its **position** (0..76) from `embeddings.position_embedding`;
# 3. run the `encoder.layers` with a **causal mask**: position *i* only looks at positions 0..*i*, as in a
#    language model. Each layer is self-attention (every position mixes in the positions it may look at)
#    followed by an MLP (two linear layers with a nonlinearity between, applied to each position alone);
# 4. a last **layer norm**, `final_layer_norm`: each position's vector shifted and scaled to mean 0 and
#    variance 1, then by two learned vectors.

# %%
token_table = text_encoder.embeddings.token_embedding        # nn.Embedding: one row per token of the vocabulary
position_table = text_encoder.embeddings.position_embedding  # nn.Embedding: one row per position 0..76
print("token table:   ", tuple(token_table.weight.shape), "(vocabulary x hidden)")
print("position table:", tuple(position_table.weight.shape), "(positions x hidden)")
print("layers:        ", len(text_encoder.encoder.layers), "x", type(text_encoder.encoder.layers[0]).__name__)


# Simplified from course_utils.text_embeddings.encode_embeddings
def encode_by_hand(token_vectors: torch.Tensor) -> torch.Tensor:
    """CLIP's text encoder from the token vectors [batch, 77, hidden] on: positions, layers, final norm."""
    n = token_vectors.shape[1]
    x = token_vectors + position_table.weight[:n]                                   # [batch, 77, hidden]
    causal = torch.full((n, n), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device).triu(1)  # "-inf" above the diagonal
    for layer in text_encoder.encoder.layers:                                       # position i sees 0..i only
        x = layer(x, causal[None, None])
    return text_encoder.final_layer_norm(x)


ids = padded.input_ids.to(choice.device)  # §3's 77 ids of the astronaut prompt, [1, 77]
with torch.no_grad():
    by_hand_text = encode_by_hand(token_table(ids))  # step 1 is the table lookup
print("by hand:", tuple(by_hand_text.shape))
for name, reference in [("text_encoder(ids)[0] (§5)", embeddings), ("pipe.encode_prompt (§5)", pipe_embeddings),
                        ("text_embeddings.encode_by_hand", cu.text_embeddings.encode_by_hand(text_encoder, ids))]:
    difference = (by_hand_text - reference).abs().max().item()
    print(f"max difference to {name}: {difference}")
    assert difference <= tolerance(choice.dtype)

# %% [markdown]
# The prompt's words enter in step 1 only, as their rows. So a word *is* its row, for the model: give
# the encoder another vector in that place and the model reads another word.
#
# ### 9.2 Swap and mix two words
#
# Same prompt, same seed; only the vector that stands at one word changes: the other word's row (a swap)
# or half of each (a mix). Each row of text embeddings goes to the pipeline as `prompt_embeds`:

# %%
# Simplified from course_utils.text_embeddings.word_vector
def row(word: str) -> torch.Tensor:
    """The token-table row of a one-token word: [hidden]."""
    (word_id,) = tokenizer(word, add_special_tokens=False).input_ids
    return token_table.weight[word_id].detach().clone()


def encode_with(prompt: str, word: str, vector: torch.Tensor) -> torch.Tensor:
    """The prompt's text embedding [1, 77, hidden], with `vector` wherever `word` stands."""
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    (word_id,) = tokenizer(word, add_special_tokens=False).input_ids
    with torch.no_grad():
        vectors = token_table(ids.to(choice.device))  # [1, 77, hidden]
        vectors[ids.to(choice.device) == word_id] = vector
        return encode_by_hand(vectors)


if choice.profile == "tiny":  # (word in the prompt, other word, share of the other word)
    edits = [("red", "green", 1.0), ("red", "blue", 0.5), ("circle", "square", 0.5)]
else:
    edits = [("horse", "zebra", 1.0), ("horse", "zebra", 0.5), ("astronaut", "knight", 1.0)]
prompt_embeds, titles = [], ["as written (§8)"]
for word, other, share in edits:
    prompt_embeds.append(encode_with(prompt, word, (1 - share) * row(word) + share * row(other)))
    titles.append(f"{word} := {other}" if share == 1 else f"{word} := {1 - share:g} {word} + {share:g} {other}")
print(prompt)
swapped = assembled(prompt_embeds=torch.cat(prompt_embeds), generator=[torch.Generator("cpu").manual_seed(0) for _ in edits],
                    **settings).images
swapped = [to_pil(by_hand * 2 - 1)] + swapped  # §8's picture: same prompt, same seed, nothing swapped
if choice.profile == "tiny":
    for i, image in enumerate(swapped):
        shows = cu.world.classify(image)
        titles[i] += f" -> {shows['color']} {shows['shape']}"
        print(f"{titles[i]:45s} (on {shows['background']})")
cu.grid(swapped, size=max(192, width // 2), titles=titles)

# %% [markdown]
# The text still says "red circle" (or "horse"); the picture follows the vectors. On `tiny`, the swap
# draws the other word. The half-and-half mix of two colours lands on a colour between them (the
# classifier reads it as the nearest colour of the world, printed above); the half-and-half mix of two
# shapes is not a shape halfway between: the model draws one shape it knows. Nearby vectors mean nearby
# things, but the space of vectors is not a space of pictures.
#
# ### 9.3 A new word: textual inversion
#
# If a word is a row, a new word is a new row. CLIP has no token for a made-up word like `<my-shape>`:
# its tokenizer cuts it into ordinary pieces. Three steps make it one word — what diffusers' `pipe.load_textual_inversion(vector,
# token=...)` does (lesson 7 loads a file with it):

# %%
if choice.profile == "tiny":
    token, start_word = "<my-shape>", "shape"  # start from a vague word of the same kind
else:
    token, start_word = "<my-cat>", "cat"
print("before:", token, "->", tokenizer.tokenize(token))
old_rows = token_table.weight.detach().clone()

tokenizer.add_tokens(token)                                                # 1. the tokenizer learns the word
text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # 2. the table grows by one row
token_table = text_encoder.embeddings.token_embedding                      #    (a new nn.Embedding)
token_id = tokenizer.convert_tokens_to_ids(token)
with torch.no_grad():
    token_table.weight[token_id] = row(start_word)                         # 3. its row: for now, start_word's

print("after: ", token, "->", tokenizer.tokenize(token), "id", token_id)
print("table:", tuple(old_rows.shape), "->", tuple(token_table.weight.shape))
print(f"'a {token}' ->", tokenizer(f"a {token}").input_ids)
assert torch.equal(token_table.weight[:-1], old_rows)  # every other word keeps its row

# %% [markdown]
# Now teach the row a meaning. *Textual inversion* trains it with Stable Diffusion's own training loss,
# everything else frozen: take pictures of the concept, noise their latents, ask the UNet to predict
# the noise given a caption that contains the new word, and move **only the new row** down the gradient
# of the error. It can only pick, among all possible vectors, the one under which the frozen UNet
# already draws these pictures best.
#
# The concept must be something the model can draw. On `tiny`: a purple triangle, drawn by the world's
# own renderer (`cu.world.draw`) at random places on random backgrounds, 24 pictures. On `sd15`: the
# cat of the course's photo (three square crops of it).

# %%
if choice.profile == "tiny":
    rng = random.Random(0)
    concept_images, captions = [], []
    for _ in range(24):
        background = rng.choice([b for b in cu.world.BACKGROUNDS if b != "purple"])
        r = rng.uniform(10, 22)  # half the shape's width, in pixels
        cx, cy = rng.uniform(r + 2, 64 - r - 2), rng.uniform(r + 2, 64 - r - 2)
        concept_images.append(cu.world.draw("purple", "triangle", background, cx, cy, r))
        captions.append(f"a {token}" if rng.random() < 0.5 else f"a {token} on a {background} background")
    ti_steps, ti_lr = 8, 0.15
else:
    cat = cu.load_image(cu.image_name("upscale", choice.profile))  # 451 x 300
    side = min(cat.size)
    concept_images = [cat.crop((x, 0, x + side, side)).resize((width, height), Image.Resampling.LANCZOS)
                      for x in (0, (cat.width - side) // 2, cat.width - side)]
    captions = [f"a photograph of {token}"] * len(concept_images)
    ti_steps, ti_lr = 30, 5e-3  # smaller steps for SD 1.5's 768-wide rows; real runs take thousands of them
    unet.enable_gradient_checkpointing()  # recompute activations in the backward pass: SD 1.5's would fill a 16 GB GPU
print(len(concept_images), "pictures; captions like", captions[:2])
cu.grid(concept_images[:8], size=max(128, width // 4), titles=captions[:8])

# %% [markdown]
# The loop. Each picture is noised once, at a timestep spread over the noisier half of the schedule,
# t = 500..999, where the latents do not show the picture yet and the caption must decide it (at small
# t the picture is nearly there whatever the text). Every step sees the same problem, so one step's
# loss can be compared with the next. That is a simplification for this demonstration: real textual
# inversion (diffusers' training script, and lesson 10) draws fresh noise and a fresh `t` for every
# picture at every step, over thousands of steps, so its loss jumps from one step to the next.

# %%
# Simplified from course_utils.text_embeddings.train_textual_inversion
pixels = cu.to_tensor(concept_images)  # [n, 3, H, W] in [-1, 1], as the pipeline's image processor makes it
with torch.no_grad():
    x0 = vae.encode(pixels.to(choice.device, vae.dtype)).latent_dist.mean * scaling  # [n, 4, h, w]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(x0)  # the noise to predict
    t = torch.linspace(500, 999, len(x0)).round().long()[torch.randperm(len(x0), generator=torch.Generator().manual_seed(0))]
    t = t.to(choice.device)
    noisy = scheduler.add_noise(x0, noise, t)  # x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) noise
    caption_ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    caption_ids = caption_ids.to(choice.device)
    frozen_rows = token_table(caption_ids)  # [n, 77, hidden]
where = (caption_ids == token_id)[..., None]  # [n, 77, 1]: where the new word stands

new_row = token_table.weight[token_id].detach().float().clone().requires_grad_(True)  # the only thing that learns
optimizer = torch.optim.Adam([new_row], lr=ti_lr)
# In float16 (a GPU), as diffusers' training scripts do: the learned row stays float32, the forward pass runs under
# autocast, and a GradScaler scales the loss so small gradients do not round to 0 (lesson 10 §6). In float32: no-ops.
autocast = torch.autocast(choice.device, dtype=choice.dtype, enabled=choice.dtype != torch.float32)
scaler = torch.amp.GradScaler(choice.device, init_scale=cu.precision.INITIAL_LOSS_SCALE, enabled=choice.dtype == torch.float16)
unet.requires_grad_(False)
text_encoder.requires_grad_(False)
losses, started = [], time.perf_counter()
for step in range(ti_steps):
    with autocast:
        text = encode_by_hand(torch.where(where, new_row.to(frozen_rows.dtype), frozen_rows))  # [n, 77, hidden]
        eps_hat = unet(noisy, t, encoder_hidden_states=text).sample
    loss = F.mse_loss(eps_hat.float(), noise.float())
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # (skipped if a float16 gradient overflowed)
    scaler.update()
    losses.append(loss.item())
    if step == 0:
        after_one_step = new_row.detach().clone()
seconds = time.perf_counter() - started
print(f"{ti_steps} steps on {len(x0)} pictures in {seconds:.1f} s; loss {losses[0]:.5f} -> {losses[-1]:.5f}")
print(f"the row moved from length {row(start_word).float().norm():.2f} to {new_row.norm():.2f}")
assert losses[-1] < losses[0]

# the course's reference, one step from the same start: the same row and loss
reference_row, reference_losses = cu.text_embeddings.train_textual_inversion(
    assembled, concept_images, captions, token, steps=1, learning_rate=ti_lr, timesteps=(500, 1000), seed=0)
print("max difference to text_embeddings.train_textual_inversion after one step:",
      (reference_row.float() - after_one_step).abs().max().item())
assert (reference_row.float() - after_one_step).abs().max() <= tolerance(choice.dtype)

# %% [markdown]
# Put the learned row in the table, and ask for the new word:

# %%
with torch.no_grad():
    token_table.weight[token_id] = new_row.to(token_table.weight.dtype)
similarity = F.cosine_similarity(old_rows.float(), new_row.detach()[None], dim=-1)  # against every old word
print("the old words nearest to the new row:", [tokenizer.convert_ids_to_tokens(i) for i in similarity.topk(3).indices.tolist()])

ti_prompt = f"a {token}" if choice.profile == "tiny" else f"a photograph of {token} on a sofa"
n_seeds = 4 if choice.profile == "tiny" else 2
before = encode_with(ti_prompt, token, row(start_word))  # the prompt with the starting row: as before training
after = encode_with(ti_prompt, token, row(token))        # the same with the learned row
assert (after - assembled.encode_prompt(ti_prompt, choice.device, 1, False)[0]).abs().max() <= tolerance(choice.dtype)
generators = [torch.Generator("cpu").manual_seed(seed) for seed in list(range(n_seeds)) * 2]  # one generator each
ti_images = assembled(prompt_embeds=torch.cat([before] * n_seeds + [after] * n_seeds), generator=generators, **settings).images
labels = [f"{when}, seed {seed}" for when in ("before", "after") for seed in range(n_seeds)]
print(ti_prompt)
if choice.profile == "tiny":
    shows = [cu.world.classify(image) for image in ti_images]
    labels = [f"{label}: {s['color']} {s['shape']}" for label, s in zip(labels, shows)]
    for when, part in (("before training", shows[:n_seeds]), ("after training", shows[n_seeds:])):
        drawn = sum(s["color"] == "purple" and s["shape"] == "triangle" for s in part)
        print(f"{when}: purple triangles {drawn}/{n_seeds}  ", [f"{s['color']} {s['shape']}" for s in part])
cu.grid(ti_images, cols=n_seeds, size=max(192, width // 2), titles=labels)

# %% [markdown]
# On `tiny` the row that started as "shape" (top row: any colour, any shape) now draws purple triangles,
# after a few seconds of training one vector of 64 numbers (the shares are printed above; another seed
# for the training noise gives another row, and other shares). The old words nearest to it are
# printed too: the row only has to work, it need not sit next to "purple" or "triangle". On `sd15` a
# particular cat needs far more than the 30 steps here (published runs train thousands); the mechanism
# is the same.
#
# **Why textual inversion can only name what the model can already draw.** The UNet, the VAE and every
# other row stay frozen; the training moves one input vector of the text encoder. What the UNet draws
# for a given text embedding is fixed by its weights, so the search can only find the input under which
# the frozen model already comes closest to the pictures. A purple triangle is one of `tiny`'s drawings,
# so a vector reaches it. For something `tiny` never learned to draw (a star, a cat) there is no such
# drawing to find: the search ends at the nearest thing the model can draw. Teaching the model something
# new takes changing the UNet's weights: fine-tuning, or a LoRA (lesson 7).
#
# `course_utils/text_embeddings.py` holds this section's mechanisms as functions (`encode_by_hand`,
# `encode_with_vectors`, `add_token`, `train_textual_inversion`); `tests/test_text_embeddings.py` checks them.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1. Predict, then run.** The text encoder's mask is causal. Swap one word of the prompt for another
# (the first edit of §9.2: "red" -> "green" on `tiny`, "horse" -> "zebra" on `sd15`). Which of the 77
# output vectors change: only the word's own, all 77, or the word's and those after it? Write it
# yourself: look the ids up in `token_table`, put the other word's row where the word stands, run both
# through `encode_by_hand`, and print the largest difference at each position.

# %%
# your attempt

# %% [markdown]
# **2. Predict, then run.** How many numbers does the latent of a 768x512 (width x height) image hold in
# SD 1.5, and how many the image? Predict the ratio first (hint: section 6). And with this profile's VAE?

# %%
# your attempt

# %% [markdown]
# **3. Predict, then run.** At which timestep are signal and noise equally strong: before t = 500, or
# after? Plot the signal-to-noise ratio `alphas_cumprod / (1 - alphas_cumprod)` against `t` on a log
# scale, and find where it crosses 1.

# %%
# your attempt

# %% [markdown]
# ## Summary
# - A pipeline = tokenizer + CLIP text encoder → UNet + scheduler on latents → VAE decoder
#   (+ SD 1.5's safety checker and feature extractor); `print(pipe)` lists them.
# - Each part loads alone: `Class.from_pretrained(folder, subfolder="unet")`.
# - With `padding="max_length"` and `truncation=True`, as the pipeline calls it, the tokenizer produces exactly
#   77 ids: start + up to 75 text tokens + end, then padding; longer text is cut off. Without them it returns as many ids as the text needs.
# - Text embeddings are `[1, 77, 768]` in SD 1.5 (`[1, 77, 64]` in `tiny`), computed locally by the model's own CLIP text encoder.
# - SD 1.5's VAE maps an image `[1, 3, 512, 512]` to latents `[1, 4, 64, 64]` (48x fewer numbers); `tiny`'s maps
#   `[1, 3, 64, 64]` to `[1, 4, 16, 16]` (12x fewer). Latents are scaled by `vae.config.scaling_factor` (0.18215 for SD 1.5).
# - The scheduler picks timesteps from 1000 training steps; `alphas_cumprod` says how much signal is left at each.
# - The text encoder = token table lookup + position rows + causal layers + a layer norm. A word is its row:
#   swap or mix rows and the picture follows; a new row, trained with the UNet's loss while all else is
#   frozen, is textual inversion. It names what the model can already draw, and teaches it nothing new.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# The word's position and every position after it change, none before: position *i* only attends to
# 0..*i*. That includes all the padding positions after the end token, which the UNet reads too.

# %%
word, other = edits[0][0], edits[0][1]
ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(choice.device)
(word_id,) = tokenizer(word, add_special_tokens=False).input_ids
with torch.no_grad():
    vectors = token_table(ids)                          # [1, 77, hidden]
    changed = vectors.clone()
    changed[ids == word_id] = row(other)                # the other word's row in the word's place
    difference = (encode_by_hand(changed) - encode_by_hand(vectors)).abs().amax(dim=-1)[0]  # [77]
position = int((ids[0] == word_id).nonzero()[0])
moved = difference > tolerance(choice.dtype)
print(f"'{word}' stands at position {position}; the first position that changes: {int(moved.nonzero()[0])}")
print("largest difference per position:", [round(d, 3) for d in difference[: position + 4].tolist()], "...")
print(f"positions that change: {int(moved.sum())} of 77")
assert not moved[:position].any() and moved[position:].all()

# %% [markdown]
# ### Solution 2
# The ratio is 3 x 8 x 8 / 4 = 48 for SD 1.5, whatever the size:

# %%
w, h = 768, 512
# SD 1.5's VAE: 4 blocks, 3 downsamplings -> 8 pixels per latent cell; this profile's VAE: from its config
factors = {"SD 1.5": 8, f"{choice.profile}'s VAE": 2 ** (len(vae.config.block_out_channels) - 1)}
for name, factor in factors.items():
    latent_shape = (1, vae.config.latent_channels, h // factor, w // factor)
    image_numbers, latent_numbers = 3 * h * w, int(np.prod(latent_shape))
    print(f"{name} (factor {factor}): image [1, 3, {h}, {w}]: {image_numbers:,} numbers; "
          f"latents {list(latent_shape)}: {latent_numbers:,} numbers; {image_numbers / latent_numbers:.0f}x fewer")

# %% [markdown]
# ### Solution 3

# %%
snr = alphas_cumprod / (1 - alphas_cumprod)
equal = int(np.argmin(np.abs(np.log(snr))))
plt.figure(figsize=(6, 3.5))
plt.semilogy(snr)
plt.axhline(1, color="gray", linestyle="--")
plt.axvline(equal, color="gray", linestyle=":")
plt.title("signal-to-noise ratio alphas_cumprod / (1 - alphas_cumprod)")
plt.xlabel("timestep t")
plt.show()
print(f"SNR goes from {snr[0]:.0f} at t=0 to {snr[-1]:.4f} at t=999; signal = noise near t={equal}")
