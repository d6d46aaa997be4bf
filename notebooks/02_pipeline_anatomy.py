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
# - what is inside a `StableDiffusionPipeline` (tokenizer, CLIP text encoder, UNet, scheduler, VAE; in SD 1.5
#   also a safety checker), and how to load each part alone with `from_pretrained(..., subfolder=...)`;
# - the tokenizer's 77-token window, and exactly what is cut off past it;
# - the shapes on the way: text embeddings `[1, 77, 768]`, latents `[1, 4, 64, 64]`, image `[1, 3, 512, 512]`
#   (on the course's small `tiny` model: `[1, 77, 64]`, `[1, 4, 16, 16]`, `[1, 3, 64, 64]`);
# - the VAE's scaling factor, and the scheduler's timesteps and noise schedule;
# - why a picture can come out black ("Potential NSFW content"), and what to do about it;
# - inside the text encoder: a word is one row of a table. Swap or mix rows and the picture changes.
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
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from PIL import Image

import course_utils as cu
from course_utils.by_hand import tolerance  # what "the same" means: 1e-4 in float32, ~0.03 in fp16

choice = cu.setup()  # prints the profile, device and dtype this notebook runs on, and why

# imported after cu.setup(), which quiets a library note ("requires torchvision") that importing them prints
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.pipelines.stable_diffusion import StableDiffusionSafetyChecker  # noqa: E402
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextModel, CLIPTokenizer  # noqa: E402

# %% [markdown]
# ## 1. Print the pipeline
#
# A pipeline is a set of models and a recipe that calls them in order. Printing it lists its components,
# each with the library and class it is loaded with. Three groups, in the order they run:
# 1. **`tokenizer` + `text_encoder`** (CLIP): text → numbers → a text embedding;
# 2. **`unet` + `scheduler`**: start from noise *latents* and remove the noise step by step, guided by the text embedding;
# 3. **`vae`**: decode the final latents into an image.
#
# SD 1.5 also has `safety_checker` and `feature_extractor` (section 8). `tiny`, the course's own small
# model with SD 1.5's classes, trained on a world of one coloured shape on a plain background
# (`course_utils/world.py`), has none (`null`). The diagram draws the three groups: *latent* diffusion,
# because the loop runs on small latents and only the VAE sees pixels.

# %%
pipe = cu.load_pipeline("text2img")
settings = cu.default_settings(choice.profile)
prompt = cu.prompt("main", choice.profile)
print(pipe)
display(cu.diagrams.pipeline_diagram(pipe))  # drawn by code (course_utils/diagrams.py), shapes read from this pipe

# %% [markdown]
# ## 2. Load the components one by one
#
# Each component lives in a subfolder of the model's folder (`unet/`, `vae/`, ...), and each class loads
# its own part with `subfolder=`. `cu.model_source()` gives the folder (or Hub id) of this profile's model.

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
# SD 1.5 has an 860 M-parameter UNet and a 123 M-parameter text encoder (the `stable-diffusion` README of
# CompVis, its authors): the UNet is where the work is.
#
# ## 3. The tokenizer: text → token ids
#
# CLIP's tokenizer splits the text into known pieces (`</w>` marks the end of a word) and maps each to an
# id of its vocabulary. It is CLIP's real tokenizer in every profile (`tiny`'s text encoder learned its
# own vectors for these ids), so the source lesson's prompt gets SD 1.5's ids here too. The pipeline calls
# it with `padding="max_length"` and `truncation=True`: a start token (49406), the text, an end token
# (49407), then the end token again as padding, up to the **77** positions the text encoder always reads.

# %%
lesson_prompt = cu.prompt("main", "sd15")
for text in dict.fromkeys([lesson_prompt, prompt]):  # the source lesson's prompt, then this profile's (sd15: the same)
    print(text)
    for token, token_id in zip(tokenizer.tokenize(text), tokenizer(text, add_special_tokens=False).input_ids):
        print(f"{token_id:6d}  {token}")
padded = tokenizer(lesson_prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
print("model_max_length:", tokenizer.model_max_length, "| input_ids:", tuple(padded.input_ids.shape))
print(padded.input_ids[0, :14].tolist(), "...")
assert padded.input_ids[0, :10].tolist() == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # as in SD 1.5

# %% [markdown]
# ## 4. The 77-token window: what happens past it
#
# 77 positions = start token + **75 tokens of text** + end token. Anything longer is cut off: silently
# for the image, with a warning from diffusers. A long prompt shows exactly which words are lost:

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
_ = pipe.encode_prompt(long_prompt, choice.device, 1, False)  # the pipeline keeps the same 75 and says what it dropped

# %% [markdown]
# Put what matters **first**. Lesson 5 shows one way past the limit (encode the prompt in chunks of 75).
#
# ## 5. The text encoder: token ids → text embeddings
#
# CLIP's text encoder turns the 77 ids into 77 vectors: one per position, each of the encoder's hidden
# size. This `[1, 77, hidden]` tensor is what the UNet reads at every denoising step (through
# cross-attention, lesson 3). Noise is never added to it: the noise goes into the latents.
#
# **"Is the CLIP inside SD its own, or a call to a chatbot?"** Its own: a regular PyTorch model whose
# weights sit in the pipeline's folder (`text_encoder/`) and run on your device, with no call to any
# service. In SD 1.5 it is the text half of OpenAI's CLIP ViT-L/14 (`openai/clip-vit-large-patch14`),
# frozen while SD was trained; in `tiny`, a small `CLIPTextModel` trained with its UNet on the captions
# of its world. The cell prints which:

# %%
with torch.no_grad():
    embeddings = text_encoder(padded.input_ids.to(choice.device))[0]  # last_hidden_state
print("text embeddings:", tuple(embeddings.shape), "| hidden size:", text_encoder.config.hidden_size)
pipe_embeddings, _ = pipe.encode_prompt(lesson_prompt, choice.device, 1, False)
difference = (embeddings - pipe_embeddings).abs().max().item()
print("max difference to pipe.encode_prompt:", difference)
assert difference <= tolerance(choice.dtype)
print("class:     ", type(text_encoder).__module__ + "." + type(text_encoder).__name__)
print("parameters:", f"{count(text_encoder) / 1e6:.2f} M in {text_encoder.config.num_hidden_layers} layers")
print("weights:   ", text_encoder.name_or_path, "(subfolder text_encoder)")
print("runs on:   ", next(text_encoder.parameters()).device)

# %% [markdown]
# ## 6. The VAE: image ↔ latents
#
# The UNet works not on pixels but on **latents**: 4 channels at a fraction of the width and height
# (1/8 in SD 1.5, whose VAE downsamples 3 times; 1/4 in `tiny`, whose smaller VAE downsamples twice).
# The VAE's encoder makes latents from an image; its decoder turns latents back into an image. Latents
# are multiplied by `vae.config.scaling_factor` so that their values have about unit variance, which is
# what the UNet was trained on: 0.18215 in SD 1.5, another number in `tiny`'s VAE. The image is the
# profile's test photo.

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


# Simplified from course_utils.by_hand.to_pil
def to_pil(images: torch.Tensor) -> Image.Image:
    """The first image of a [-1, 1] batch [n, 3, H, W] as a PIL image."""
    array = ((images[0].float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


display(cu.grid([photo, to_pil(decoded)], cols=2, size=max(256, width), titles=["the photo", "its latents, decoded"]))
print("the 4 latent channels (each stretched to black..white)")
display(cu.latent_to_image(latents))

# %% [markdown]
# For SD 1.5 a 512x512 image gives latents `[1, 4, 64, 64]`: 48x fewer numbers. The decoded photo is
# close to the original, and each latent channel looks like a small, blurry copy of it: the latents are
# still a small picture, not a code.
#
# ## 7. The scheduler: timesteps and the noise schedule
#
# Training added noise in 1000 small steps, following a schedule of `betas` (how much noise each step
# adds). `alphas_cumprod[t]` is the share of the signal's variance still there at timestep `t`: a noisy
# latent is `sqrt(alphas_cumprod[t]) * latent + sqrt(1 - alphas_cumprod[t]) * noise`. At generation time
# the scheduler picks a few of those 1000 timesteps, from noisy to clean (the dots on the right):

# %%
steps = settings["num_inference_steps"]
scheduler.set_timesteps(steps)
timesteps = scheduler.timesteps.tolist()
print(f"{steps} steps -> {len(timesteps)} timesteps:", timesteps)
print("timestep that appears twice:", [t for i, t in enumerate(timesteps[1:]) if t == timesteps[i]])
print(f"signal kept, sqrt(alphas_cumprod): {scheduler.alphas_cumprod[0] ** 0.5:.3f} at t=0, "
      f"{scheduler.alphas_cumprod[-1] ** 0.5:.3f} at t=999")
betas, alphas_cumprod = scheduler.betas.numpy(), scheduler.alphas_cumprod.numpy()
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
left.plot(betas)
left.set(title="betas: noise added at each training step", xlabel="timestep t")
right.plot(np.sqrt(alphas_cumprod), label="signal kept: sqrt(alphas_cumprod)")
right.plot(np.sqrt(1 - alphas_cumprod), label="noise: sqrt(1 - alphas_cumprod)")
right.scatter(timesteps, np.sqrt(alphas_cumprod[timesteps]), s=12, color="black", label=f"the {steps} steps' timesteps")
right.set(title="how much of the latent survives at timestep t", xlabel="timestep t")
right.legend(fontsize=8, loc="center right")
plt.show()

# %% [markdown]
# PNDM takes its **first step twice**: it steps from the first timestep to the second, evaluates the UNet
# there, then redoes that first step with the average of both noise estimates. So one timestep appears
# twice and the UNet runs `steps + 1` times. Later steps reuse earlier estimates (a multistep method).
#
# ## 8. Put it back together — and the safety checker
#
# Our five components, assembled into a pipeline, do exactly what `pipe` does: text encoder → a loop of
# UNet + scheduler steps on latents that start as pure noise → VAE decode. We ask it for the final
# latents and decode them ourselves (lesson 3 writes the loop):

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
if choice.profile == "tiny":
    print("it shows", cu.world.describe(to_pil(by_hand * 2 - 1)))  # read back by the world's classifier
cu.grid([to_pil(by_hand * 2 - 1)], size=max(256, width), titles=["components by hand, seed 0"])

# %% [markdown]
# ### "Why is my picture black?" The safety checker
#
# SD 1.5's pipeline ends with a check. The `feature_extractor` (a `CLIPImageProcessor`) resizes and
# normalises each image; the `safety_checker` (`StableDiffusionSafetyChecker`) embeds it with a CLIP
# *image* model and compares it (cosine similarity) with embeddings of NSFW concepts, each with a
# threshold. An image above a threshold is **flagged**: the pipeline returns a black image in its place,
# logs *"Potential NSFW content was detected..."* and sets its entry of `output.nsfw_content_detected`
# (one per image) to `True`. `tiny` has no checker (`None` above). To see the case on every profile, we
# give the assembled pipeline a checker and raise the flag on purpose: every threshold set to -1, the
# lowest a cosine similarity can be. On `tiny` the checker is a small one of the same class with random
# weights; on `sd15`, the pipeline's own.

# %%
if pipe.safety_checker is None:  # tiny: SD 1.5's checker class, small, with random weights (it only has to run)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    checker = StableDiffusionSafetyChecker(CLIPConfig(vision_config=vision, projection_dim=16)).to(choice.device, choice.dtype)
    features = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
else:
    checker, features = pipe.safety_checker, pipe.feature_extractor
print(f"safety checker: {count(checker):,} parameters, {len(checker.concept_embeds)} concepts")
thresholds = checker.concept_embeds_weights.clone()
checker.concept_embeds_weights.data.fill_(-1.0)  # on purpose: every image now scores above every threshold
checked = StableDiffusionPipeline(**{**assembled.components, "safety_checker": checker, "feature_extractor": features})
flagged = checked(prompt, generator=torch.Generator(device="cpu").manual_seed(0), **settings)
print("with the checker:    nsfw_content_detected =", flagged.nsfw_content_detected, flush=True)
# the fix: no checker. Built without requires_safety_checker=False, the pipeline prints diffusers' licence note.
unchecked = StableDiffusionPipeline(**{**checked.components, "safety_checker": None, "feature_extractor": None})
fixed = unchecked(prompt, generator=torch.Generator(device="cpu").manual_seed(0), **settings)
print("without the checker: nsfw_content_detected =", fixed.nsfw_content_detected)
checker.concept_embeds_weights.data.copy_(thresholds)  # the real thresholds back
cu.grid([flagged.images[0], fixed.images[0]], size=max(256, width), titles=["flagged: black", "safety_checker=None"])

# %% [markdown]
# The flag means the checker threw the picture away, not that the picture was bad: it is a similarity
# test, and it flags harmless images now and then. The fixes:
# - another seed or prompt: the flag is per image;
# - no checker (which also frees its CLIP image model's memory):
#   `StableDiffusionPipeline.from_pretrained(cu.model_source(), safety_checker=None, requires_safety_checker=False)`.
#   `requires_safety_checker=False` only silences the note printed above. What you show is then your
#   responsibility: SD 1.5's licence (CreativeML OpenRAIL-M) forbids some uses, and diffusers asks you
#   not to show unfiltered results in public services.
#
# ## 9. A text-embedding lab: a word is a row of a table
#
# ### 9.1 The text encoder by hand
#
# Section 5 ran `text_encoder(ids)` in one call. Inside (transformers' `CLIPTextModel.forward`), it does four things:
# 1. look up each id's row in the **token table** `embeddings.token_embedding` (one learned vector per
#    token of the vocabulary);
# 2. add the row of its **position** (0..76) from `embeddings.position_embedding`;
# 3. run the `encoder.layers` with a **causal mask**: position *i* only looks at positions 0..*i*, as in a
#    language model. Each layer is self-attention (every position mixes in the positions it may look at)
#    followed by an *MLP* (two linear layers with a nonlinearity between, applied to each position alone);
# 4. a last **layer norm**, `final_layer_norm`: each position's vector shifted and scaled to mean 0 and
#    variance 1, then scaled and shifted by two learned vectors.

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
for name, reference in [("text_encoder(ids)[0] (§5)", embeddings),
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
    for title, image in zip(titles, swapped):
        print(f"{title:34s} -> {cu.world.describe(image)}")
cu.grid(swapped, size=max(192, width // 2), titles=titles)

# %% [markdown]
# The text still says "red circle" (or "horse"); the picture follows the vectors. A swap draws the other
# word. A mix is a vector between two words, but the picture need not be between two pictures: compare
# what the colour mix and the shape mix drew (printed above on `tiny`; a shape halfway between a circle
# and a square is not one the model knows). Nearby vectors mean nearby things, but the space of vectors is
# not a space of pictures. (More in the appendix, [Inside the teaching models](appendix_teaching_models.ipynb),
# "From lesson 02": the mixes at every share, and how `tiny`'s scaling factor was measured.)
#
# If a word is a row, a new word is a new row: lesson 10, §10 adds one to the table and trains it
# (*textual inversion*), beside a LoRA.

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
# - A black picture with `nsfw_content_detected == [True]` is the safety checker's flag: try another seed, or load
#   with `safety_checker=None, requires_safety_checker=False` and what you show is then your responsibility.
# - The text encoder = token table lookup + position rows + causal layers + a layer norm. A word is its row:
#   swap or mix rows and the picture follows. A new word is a new row (textual inversion, lesson 10).

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
