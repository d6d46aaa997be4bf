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
# # Lesson 7 — Community models
#
# **What you will learn**
# - to load a community fine-tune from the Hub with complete code (the source lesson's cell failed with
#   `NameError: name 'pipeline' is not defined`);
# - to load a single-file `.safetensors` checkpoint and map its keys to diffusers' names;
# - why `.safetensors` and not a pickled `.ckpt`;
# - that "EasyNegative" is a textual-inversion embedding, not a word, and how to load one;
# - to load, scale, fuse and unload a LoRA;
# - what the models' licences allow.
#
# Terms are defined where they first appear, and all in one place in the [glossary](../docs/glossary.md).

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about 6.6 GB
# from the Hugging Face Hub, again on every new runtime:
# Counterfeit-V2.5's folders + its fp16 file + SD 1.5's configs + EasyNegative + the Light and Shadow LoRA.
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
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
from IPython.display import display
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import course_utils as cu
from course_utils import by_hand, community, single_file
from course_utils.models import files  # where lesson 07's files come from, per profile

choice = cu.setup("community")  # prints the profile, device and dtype this notebook runs on, and why
settings = cu.default_settings(choice.profile)
# Comparisons on `sd15` use 10 steps instead of 50 to save time; `tiny` takes its full 25 (well under a second).
quick = settings if choice.profile == "tiny" else dict(settings, num_inference_steps=10)
tol = by_hand.tolerance(choice.dtype)  # what "the same" means for checks below (fp16 rounds more)


def seed(n=0):
    """A CPU generator: the same starting noise on every device."""
    return torch.Generator().manual_seed(n)


# %% [markdown]
# A *community model* is a model someone other than its original makers trained further and shared. With `sd15`
# this lesson uses Counterfeit-V2.5 (anime-style illustrations), the EasyNegative embedding and a style LoRA;
# `tiny` has stand-ins of the same kinds, for one style: shapes drawn as **outlines**. `cu.world.describe`
# says what a `tiny` picture shows.
#
# ## 1. A community fine-tune from the Hub — the complete code
#
# A *fine-tune* is Stable Diffusion trained further on someone's own pictures: SD 1.5's architecture with
# other numbers in it. Thousands are on the Hugging Face Hub and on CIVITAI (civitai.com, a community
# site for such models). The source lesson uses **Counterfeit-V2.5** by gsdf
# (`gsdf/Counterfeit-V2.5`). Its cell moved `pipeline` to the GPU but never created it: **`NameError:
# name 'pipeline' is not defined`**. The missing line is `from_pretrained`. The cell downloads a few GB, so
# it runs only on `sd15`; `tiny` compares its community model with the base model, each with and without
# the *trigger word* its training captions began with.

# %%
if choice.profile == "sd15":
    from diffusers import DiffusionPipeline

    # The missing line: DiffusionPipeline.from_pretrained("gsdf/Counterfeit-V2.5", dtype=...). cu.model_source gives
    # that Hub id, or the local copy when there is one (COURSE_MODELS_DIR, the Hub cache), so it also runs offline.
    source = cu.model_source("community")
    print("loading from:", source)
    pipeline = DiffusionPipeline.from_pretrained(source, dtype=choice.dtype)
    pipeline = pipeline.to(choice.device)
    # The lesson's prompt. It is 84 tokens long, so CLIP cuts the last few (lesson 5).
    prompt = (
        "((masterpiece,best quality)),1girl, solo, animal ears, rabbit, barefoot, knees up, dress, sitting, "
        "rabbit ears, short sleeves, looking at viewer, grass, short hair, smile, white hair, puffy sleeves, "
        "outdoors, puffy short sleeves, bangs, on ground, full body, animal, white dress, sunlight, brown eyes, "
        "dappled sunlight, day, depth of field"
    )
    negative_prompt = "EasyNegative, extra fingers,fewer fingers,"
    output = pipeline(prompt=prompt, negative_prompt=negative_prompt, generator=seed(), **settings)
    image = output.images[0]
    display(image)
else:
    pipeline = cu.load_pipeline("community")  # no download: read from one .safetensors file (step 2)
    base_pipe = cu.load_pipeline("text2img")  # the model it was fine-tuned from
    prompt = "a red circle on a white background"  # a scene of tiny's world
    styled = community.style_prompt(prompt)  # the trigger word in front: "outline style, a red circle ..."
    pictures, titles = [], []
    for name, model in (("base model", base_pipe), ("community model", pipeline)):
        # a batch of the two prompts, each generator seeded alike: the same starting noise
        output = model([prompt, styled], generator=[seed(), seed()], **settings)
        for text, picture in zip((prompt, styled), output.images):
            print(f"{name:15s} {text!r:52s} -> {cu.world.describe(picture)}")
            titles.append(f"{name}, {'with' if text == styled else 'without'} the word: {cu.world.describe(picture)}")
        pictures += output.images
    display(cu.grid(pictures, cols=2, size=256, titles=titles))
# The safety checker's verdict per picture (lesson 2): True = flagged and blacked out (it flags harmless pictures
# too: try another seed); None = this pipeline has no checker (Counterfeit-V2.5 ships none).
print("nsfw_content_detected:", output.nsfw_content_detected)

# %% [markdown]
# With `sd15` it ran, but "EasyNegative" did not work as meant (step 5). On `tiny` (bottom row:
# community model) the outline comes with the trigger word in front (`community.style_prompt`): in 85% of the
# model card's test pictures, 0% without it (`data/tiny/README.md`). The word goes first because CLIP's text encoder is causal (lesson 2): a word changes
# only the tokens after it. With it in front, `tiny`'s fine-tune often misses the background. (More in the
# appendix, [Inside the teaching models](appendix_teaching_models.ipynb), "From lesson 07".)
#
# ## 2. A single-file checkpoint, as CIVITAI distributes it
#
# Most models on CIVITAI are **one file** of a few GB holding all three networks (UNet, VAE, CLIP text
# encoder) under the names of the original Stable Diffusion code. `StableDiffusionPipeline.from_single_file`
# reads it. The file holds only weights; the *configs* (layer sizes, tokenizer, scheduler) come from a
# diffusers folder: diffusers infers the model type from the file's keys and shapes
# (`infer_diffusers_model_type`: a 9-channel first convolution means inpainting, ...) and downloads that
# type's configs. `config=` names the folder yourself: offline, or when the guess is wrong, as on `tiny`,
# whose keys look like SD 1.5's but whose layers are far smaller. The guess, from the file's header alone:

# %%
from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type

from course_utils.models.configs import SD15_UNET  # SD 1.5's unet/config.json values

ckpt_path = files.checkpoint_file(choice.profile)  # sd15: Counterfeit-V2.5_fp16.safetensors; tiny: community.safetensors
print(f"file: {ckpt_path.name}  ({ckpt_path.stat().st_size / 1e6:.1f} MB)")
# every tensor's name and shape, as an empty "meta" tensor: no weights are read
shapes = {key: torch.empty(entry["shape"], device="meta") for key, entry in single_file.read_header(ckpt_path).items()
          if key != "__metadata__"}
print("diffusers infers the model type:", infer_diffusers_model_type(shapes), "-> default configs:", fetch_diffusers_config(shapes))
print("the file's first convolution:", list(shapes["model.diffusion_model.input_blocks.0.0.weight"].shape),
      "| SD 1.5's has", SD15_UNET["block_out_channels"][0], "output channels")
config = files.checkpoint_config(choice.profile)  # sd15: SD 1.5's configs (a local copy if there is one); tiny: its own
print(f"configs the course passes as config=: {config}")
# load_single_file refuses a pickled file (step 4), then calls diffusers:
#   StableDiffusionPipeline.from_single_file(ckpt_path, config=config, local_files_only=<config is a folder>)
pipe = single_file.load_single_file(ckpt_path, config=config, dtype=choice.dtype).to(choice.device)
pipe.set_progress_bar_config(disable=choice.profile != "sd15")
print(type(pipe).__name__, "| scheduler:", type(pipe.scheduler).__name__)
del pipeline  # step 1's copy (on `sd15` the folder version): free its memory

# %% [markdown]
# ## 3. What is inside the file
#
# A `.safetensors` file starts with a JSON *header* listing every tensor's name, dtype and shape, so the keys
# can be read without loading the weights. The names come from the code of CompVis, the group that released
# the first Stable Diffusion: `model.diffusion_model.*` is the UNet, `first_stage_model.*` the VAE,
# `cond_stage_model.*` the text encoder. Some files carry more (the noise schedule, an averaged copy of the
# UNet `model_ema.*`), which `from_single_file` ignores. `single_file.key_mapping` is the course's inverse of the renaming
# `from_single_file` did. The groups, then a few keys (the shape in the file, then in diffusers):

# %%
header = single_file.read_header(ckpt_path)
print("metadata:", header.get("__metadata__"))
for prefix, keys in single_file.group_keys(ckpt_path).items():
    print(f"{prefix:30s} {len(keys):5d} tensors")
mapping = single_file.key_mapping(pipe)  # original key -> "<component>.<diffusers key>"
models = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
patterns = [
    "diffusion_model.input_blocks.0.0.weight",  # the first convolution
    "input_blocks.1.0.in_layers.0.weight",  # a ResNet's first norm
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",  # cross-attention: reads the text (768 or 64 wide)
    ".0.op.weight",  # a downsampler
    "middle_block.1.proj_in.weight",
    "output_blocks.0.0.skip_connection.weight",
    "first_stage_model.encoder.mid.attn_1.q.weight",  # 1x1 conv in the file, Linear in diffusers
    "first_stage_model.decoder.up.0.block.0.conv1.weight",  # decoder blocks are numbered backwards
    "text_model.embeddings.token_embedding.weight",
]
for pattern in patterns:
    original = next(k for k in mapping if pattern in k)
    component, key = mapping[original].split(".", 1)
    print(f"{original:70s} -> {mapping[original]:60s} {header[original]['shape']} "
          f"{list(models[component].state_dict()[key].shape)}")

# %% [markdown]
# The rules behind the renaming: `input_blocks` → `down_blocks` (a ResNet at `.0`, an attention at `.1`, a
# downsampler at `.0.op`), `middle_block.0/1/2` → `mid_block` ResNet/attention/ResNet, `output_blocks` →
# `up_blocks`; inside a ResNet `in_layers.0` → `norm1`, `in_layers.2` → `conv1`, `emb_layers.1` →
# `time_emb_proj`, `out_layers.3` → `conv2`, `skip_connection` → `conv_shortcut`. The VAE decoder counts its
# blocks from the bottom (`up.0` runs last), diffusers from the top, and the VAE's attention stores 1×1
# convolutions where diffusers uses Linear layers. The mapping is exact: converting the loaded pipeline back
# gives the very numbers in the file.

# %%
back = single_file.to_original_state_dict(pipe)
with safe_open(str(ckpt_path), framework="pt") as f:
    in_file = set(f.keys())
    shared = [k for k in back if k in in_file]
    # (cast the file's tensor to the pipeline's dtype first, as from_single_file did)
    worst = max((f.get_tensor(k).to(back[k].dtype) - back[k]).abs().max().item() for k in shared)
print(f"{len(shared)} of {len(back)} tensors compared, max abs difference {worst}")
missing = [k for k in back if k not in in_file]
if missing:  # a file written by other tools may name a few tensors otherwise (e.g. an older text-encoder layout)
    print(f"{len(missing)} converted names are not in this file, e.g. {missing[:3]}")
assert shared and worst == 0.0  # every tensor both have: the very same numbers
assert all(k in in_file for k in back if k.startswith("model.diffusion_model."))  # the UNet's names are the standard's
del back

# %% [markdown]
# ## 4. Why `.safetensors`, not a pickled `.ckpt`
#
# Older checkpoints are `.ckpt` (also `.pt`, `.pth`, `.bin`): Python's **pickle** format. A pickle is a small
# program that rebuilds objects, and it may call any function to do it. Here is a harmless object that tells
# pickle "to rebuild me, call `print(...)`":


# %%
class Payload:
    def __reduce__(self):  # what pickle stores: a function to call, and its arguments
        return (print, ("!!! printed by code hidden in the file, while it was being loaded !!!",))


data = pickle.dumps({"weights": torch.zeros(2), "extra": Payload()})
restored = pickle.loads(data)  # just loading runs the code

# %% [markdown]
# A real attack calls something worse than `print`. A `.safetensors` file cannot: it is 8 bytes (the header's
# length), the JSON header, then raw tensor bytes; nothing in it is executed. So the course's loader refuses a
# pickled checkpoint unless you pass `allow_pickle=True`; diffusers then reads it with
# `torch.load(weights_only=True)`, which accepts only tensors and plain containers and still refuses a file
# that carries code. On every profile, with the `tiny` checkpoint (a few MB):

# %%
workdir = Path(tempfile.mkdtemp())
tiny_weights = load_file(files.checkpoint_file("tiny"))
ckpt = workdir / "community_model.ckpt"
torch.save({"state_dict": tiny_weights}, ckpt)  # the .ckpt layout: the same keys, pickled
evil = workdir / "evil_model.ckpt"
torch.save({"state_dict": tiny_weights, "extra": Payload()}, evil)  # the same, with code in it
for path, allow in ((ckpt, False), (ckpt, True), (evil, True)):
    try:
        single_file.load_single_file(path, config=files.checkpoint_config("tiny"), allow_pickle=allow)
        print(f"{path.name}, allow_pickle={allow}: loaded")
    except cu.CourseError as err:
        print(f"{path.name}, allow_pickle={allow}: CourseError: {err}")

# %% [markdown]
# ## 5. "EasyNegative" is an embedding, not a word
#
# The `sd15` lesson's negative prompt starts with "EasyNegative"; `tiny`'s style has a name of the same kind,
# `<outline>`. Each is a *textual-inversion embedding*: a few new vectors for the text encoder's embedding
# table (one vector per token, lesson 2), trained to stand for a concept; no network weight changes.
# EasyNegative, used as a negative prompt, pushes away typical flaws; `<outline>` goes in front of the prompt.
# Their files are in the format of **A1111**, AUTOMATIC1111's `stable-diffusion-webui`
# (github.com/AUTOMATIC1111/stable-diffusion-webui), a popular community front end: one tensor `emb_params`
# `[n_vectors, hidden_size]`. EasyNegative was "trained with Counterfeit" (its card, Hub dataset
# `gsdf/EasyNegative`), `<outline>` with `tiny`'s community model, so each goes into its community model.
# First what CLIP's tokenizer makes of the name, then the file loaded:

# %%
token = files.embedding_token(choice.profile)  # "EasyNegative" on sd15, "<outline>" on tiny
pieces = pipe.tokenizer.tokenize(token)
print(token, "->", pieces, pipe.tokenizer(token).input_ids, "| vocabulary size:", len(pipe.tokenizer))
assert len(pieces) > 1  # ordinary sub-words, no token of its own: in step 1 SD 1.5 read "easy negative"

ti_pipe = pipe  # the community model: what the embedding was trained for
emb_path = files.embedding_file(choice.profile)
vectors = community.embedding_vectors(emb_path)  # the file's one tensor (A1111 names it emb_params)
print(emb_path.name, "->", tuple(vectors.shape), "| text encoder hidden size:", ti_pipe.text_encoder.config.hidden_size)
# transformers notes (red, on stderr) how it initialises the new rows (`mean_resizing`); harmless here:
# load_textual_inversion overwrites them with the file's vectors right away (checked below).
ti_pipe.load_textual_inversion(str(emb_path), token=token)
names = [token] + [f"{token}_{i}" for i in range(1, len(vectors))]  # one new token per vector
ids = ti_pipe.tokenizer.convert_tokens_to_ids(names)
print("new tokens:", names, "| their ids:", ids, "| vocabulary size now:", len(ti_pipe.tokenizer))
table = ti_pipe.text_encoder.get_input_embeddings().weight
gap = (table[ids].detach().float().cpu() - vectors.float()).abs().max().item()
print("rows of the embedding table == the file's vectors, max abs difference:", gap)
assert ids[0] == 49408 and gap <= tol * max(1.0, vectors.abs().max().item())

# %% [markdown]
# Each vector got its own token. diffusers' `maybe_convert_prompt` expands the name in a prompt into all of
# them, but with transformers 5 the CLIP tokenizer lower-cases its tokens and misses a mixed-case name like
# "EasyNegative", so only its first vector would be used. Where diffusers misses the name we write the names
# out ourselves; where it finds it (all lower-case, like `<outline>`) we must not, or it would expand them a
# second time (`<outline>_1` contains `<outline>`). Then with and without it, same seed:

# %%
text = negative_prompt if choice.profile == "sd15" else community.embedding_prompt(prompt, token)
expanded = text.replace(token, " ".join(names))  # every vector's name written out
converted = ti_pipe.maybe_convert_prompt(text, ti_pipe.tokenizer)
print("diffusers:", converted)
print("expected: ", expanded)
ti_text = text if converted == expanded else expanded
print("we pass:  ", ti_text, "->", ti_pipe.tokenizer(ti_pipe.maybe_convert_prompt(ti_text, ti_pipe.tokenizer)).input_ids[:12])

if choice.profile == "sd15":  # EasyNegative goes into the negative prompt
    runs = dict(prompt=[prompt, prompt], negative_prompt=["extra fingers,fewer fingers,", ti_text])
else:  # <outline> goes in front of the prompt
    runs = dict(prompt=[prompt, ti_text])
without, with_emb = ti_pipe(generator=[seed(), seed()], **runs, **quick).images  # one batch, same starting noise
print("mean abs pixel difference, with vs without the embedding:", float(np.abs(cu.to_array(with_emb) - cu.to_array(without)).mean()))
titles = ["without the embedding", f"with {token}"]
if choice.profile == "tiny":
    titles = [f"{title}: {cu.world.describe(picture)}" for title, picture in zip(titles, (without, with_emb))]
    print(" | ".join(titles))
display(cu.grid([without, with_emb], size=max(256, settings["height"]), titles=titles))

# %% [markdown]
# Two new vectors change the picture, and not one weight of the network changed. An embedding can only
# steer a model toward what it can already draw: in `tiny`'s base model, which never learned outlines,
# `<outline>` draws none (the appendix shows it, "From lesson 07").
#
# ## 6. A LoRA: a small add-on to the model
#
# **LoRA** (Low-Rank Adaptation, Hu et al. 2021, arXiv:2106.09685) fine-tunes far fewer numbers: beside a
# weight matrix `W` `[out, in]` it learns two thin matrices `B` `[out, r]` and `A` `[r, in]` of a small
# *rank* `r`, and uses `W + s · (alpha / r) · B·A` (`alpha` is stored with the LoRA, the *scale* `s` you
# choose). The file holds only `A` and `B`: community LoRAs are typically 2–200 MB against a checkpoint's
# 2–7 GB (stable-diffusion-art.com/lora). Lesson 10 trains one.
#
# On `sd15` the LoRA is **Light and Shadow** (CIVITAI model 13239), made for Counterfeit-V2.5, from its Hub copy
# `sayakpaul/civitai-light-shadow-lora` (one 151 MB file; its model card shows the diffusers code), in the format
# of kohya's training scripts, where most community LoRAs come from: such a LoRA may change the text encoder too
# (the cell prints how much of each). On `tiny` it is an **outline LoRA** for the base model: every shape an
# outline, no trigger word, UNet only (diffusers logs that it has no text-encoder part: expected). Both keep the
# pipeline's scheduler and settings. A LoRA that changes how many steps a model needs, LCM-LoRA, is lesson 9's.

# %%
lora = files.lora_source(choice.profile)
# each style LoRA on the model it was made for: Light and Shadow on Counterfeit (sd15), the outline LoRA on tiny's base
lora_pipe = pipe if choice.profile == "sd15" else base_pipe
lora_settings = quick  # on sd15 10 steps instead of 50 (six runs below); tiny's usual settings


def final_latents(**kwargs):
    """Run the pipeline and return the final latents (comparing those is enough: the VAE only decodes them)."""
    return lora_pipe(prompt, generator=seed(), output_type="latent", **lora_settings, **kwargs).images


def diff(a, b):
    return (a.float() - b.float()).abs().mean().item()


base = final_latents()  # before the LoRA
lora_pipe.load_lora_weights(lora, adapter_name="demo")
print("adapters:", lora_pipe.get_list_adapters())
n_lora = {part: sum(p.numel() for n, p in getattr(lora_pipe, part).named_parameters() if "lora_" in n)
          for part in ("unet", "text_encoder")}
n_unet = sum(p.numel() for n, p in lora_pipe.unet.named_parameters() if "lora_" not in n)
print(f"LoRA numbers: {n_lora['unet']:,} in the UNet + {n_lora['text_encoder']:,} in the text encoder = "
      f"{2 * sum(n_lora.values()) / 1e6:.2f} MB in fp16; the UNet itself: {n_unet:,} "
      f"(its LoRA part {100 * n_lora['unet'] / n_unet:.1f} % of that)")
name, layer = next((n, m) for n, m in lora_pipe.unet.named_modules()  # its first linear layer (some are convolutions)
                   if "demo" in getattr(m, "lora_B", {}) and isinstance(m.base_layer, torch.nn.Linear))
display(cu.diagrams.lora_diagram(layer, name=name))  # one of its layers: W frozen, B·A beside it

# %% [markdown]
# `set_adapters` sets the scale: 0 is the model without the LoRA, 1 the LoRA as trained, in between a blend.

# %%
by_scale = {}
for s in (0.0, 0.5, 1.0):
    lora_pipe.set_adapters(["demo"], adapter_weights=[s])
    by_scale[s] = final_latents()
    print(f"scale {s}: mean abs difference of the final latents from the model without LoRA = {diff(by_scale[s], base):.4f}")
assert diff(by_scale[0.0], base) <= tol
scale_pictures = cu.decode_latents(lora_pipe.vae, torch.cat(list(by_scale.values())))
titles = [f"LoRA scale {s}" for s in by_scale]
if choice.profile == "tiny":
    titles = [f"{title}: {cu.world.describe(picture)}" for title, picture in zip(titles, scale_pictures)]
    print("\n".join(titles))
display(cu.grid(scale_pictures, size=max(256, settings["height"]), titles=titles))

# %% [markdown]
# `fuse_lora` adds `s · (alpha / r) · B·A` into `W` once, so generation costs nothing extra per step;
# `unfuse_lora` subtracts it again and `unload_lora_weights` removes the LoRA layers altogether. Each step
# rounds `W` to its dtype, so the round trip is exact only up to rounding: the cell prints how far the layer
# drawn above moved, in this run's dtype.

# %%
w_before = layer.base_layer.weight.detach().clone()  # the layer drawn above, before fusing
lora_pipe.set_adapters(["demo"], adapter_weights=[1.0])
lora_pipe.fuse_lora(lora_scale=1.0)
print("fused vs scale 1:        ", diff(final_latents(), by_scale[1.0]))
lora_pipe.unfuse_lora()
moved = (layer.base_layer.weight.detach().float() - w_before.float()).abs().max().item()
print(f"{name}: max |W after unfuse - W before fuse| = {moved:.1e} in {w_before.dtype}")
lora_pipe.unload_lora_weights()
print("adapters after unloading:", lora_pipe.get_list_adapters())
print("unloaded vs never loaded:", diff(final_latents(), base))

# %% [markdown]
# ## 7. Licences and responsible use
#
# SD 1.5's licence, **CreativeML OpenRAIL-M** (its Hub model card), lets you use, change and share it, also
# commercially, under *use restrictions*: no use that breaks the law, harms minors, spreads false information
# to harm others, harasses, defames or discriminates. Whoever shares a model derived from it (a fine-tune, a
# *merge* — weights averaged from several models —, a LoRA) must pass them on. Light and Shadow's Hub copy
# names the same licence; lesson 6's upscaler uses CreativeML Open RAIL++-M; CIVITAI shows each model's own
# terms. **Read a community model's licence before you use it.** Make no images of real people that could
# deceive or hurt them, and say that an image is generated where that matters.

# %% [markdown]
# ## Exercises
#
# Each begins with a prediction: write it down, then run.
#
# **1. Predict, then run.** A LoRA by hand. Load the LoRA again (`adapter_name="demo"`) and take one
# of the UNet's linear layers that has one (its `lora_A["demo"]`, `lora_B["demo"]` and
# `scaling["demo"]`, beside the original `base_layer`). Predict the rank of the change
# `ΔW = scaling · B·A`, then compute it, add it to `base_layer.weight` yourself and compare with the
# weight after `fuse_lora(lora_scale=1.0)`. (Unfuse and unload afterwards.)

# %%
# your attempt

# %% [markdown]
# **2. Predict, then run.** An embedding of your own. Make an A1111-style file whose `emb_params` are
# the embedding table's rows for the words "blurry, noisy", load it as `<my-negative>`, and compare
# the text encoder's output for `<my-negative> <my-negative>_1 ...` with its output for the words.
# Predict: exactly equal, or only close?

# %%
# your attempt

# %% [markdown]
# **3. Predict, then run.** Write, from step 3's renaming rules and without `key_mapping`, the key in
# the single file of diffusers' `unet.mid_block.attentions.0.proj_in.weight` and of
# `vae.decoder.up_blocks.0.resnets.0.conv1.weight` (remember which way the VAE decoder counts). Read
# both from the file with `safe_open`, compare them with the pipeline's weights, and check your keys
# against `single_file.key_mapping`.

# %%
# your attempt

# %% [markdown]
# ## Summary
#
# - A community model is SD 1.5's architecture with other weights: `from_pretrained("gsdf/Counterfeit-V2.5")`
#   — the line the source lesson's cell was missing.
# - CIVITAI's single files use the original layout (`model.diffusion_model`, `first_stage_model`,
#   `cond_stage_model`); `from_single_file(path)` renames them into diffusers', guessing the model type
#   from the keys and fetching its default configs; `config=` gives the configs offline or overrides the guess.
# - Prefer `.safetensors`: a pickled `.ckpt` can run code when loaded. The course refuses one unless you
#   pass `allow_pickle=True`, and `torch.load(weights_only=True)` still refuses files that carry code.
# - A fine-tune is trained with a trigger word in its captions. CLIP's text encoder is causal, so a word
#   changes only the tokens after it: `tiny`'s fine-tune was trained with its word in front.
# - "EasyNegative" (on `tiny`: `<outline>`) is a textual-inversion embedding: `load_textual_inversion` adds
#   tokens (ids from 49408) whose embedding rows are the file's vectors. diffusers expands an all-lower-case
#   name into all of them; a mixed-case one you write out yourself.
# - A LoRA adds `s · (alpha / r) · B·A` to chosen weights, a file of MBs instead of GBs: `load_lora_weights`,
#   `set_adapters(..., adapter_weights=[s])`, `fuse_lora`, `unload_lora_weights`. Scale 0 is the model without
#   it. A kohya LoRA such as Light and Shadow may also change the text encoder.
# - SD 1.5 and its fine-tunes come under CreativeML OpenRAIL-M, with use restrictions; check each
#   community model's own licence.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# At most the LoRA's rank `r`: `B·A` is an `[out, r]` matrix times an `[r, in]` one.

# %%
lora_pipe.load_lora_weights(lora, adapter_name="demo")
name, layer = next((n, m) for n, m in lora_pipe.unet.named_modules()
                   if hasattr(m, "lora_A") and "demo" in m.lora_A and isinstance(m.base_layer, torch.nn.Linear))
A, B = layer.lora_A["demo"].weight, layer.lora_B["demo"].weight
delta = layer.scaling["demo"] * (B.float() @ A.float())
mine = layer.base_layer.weight.detach().float() + delta
print(f"{name}: W {list(layer.base_layer.weight.shape)}, A {list(A.shape)}, B {list(B.shape)}, scaling {layer.scaling['demo']}")
print("rank of the change:", torch.linalg.matrix_rank(delta).item())
lora_pipe.fuse_lora(lora_scale=1.0)
gap = (layer.base_layer.weight.detach().float() - mine).abs().max().item()
print(f"max |W + scaling * B @ A - fused weight| = {gap:.1e}")
assert gap <= tol * max(1.0, mine.abs().max().item())
lora_pipe.unfuse_lora()
lora_pipe.unload_lora_weights()

# %% [markdown]
# ### Solution 2
# Exactly equal: the new rows *are* the words' rows, and the text encoder sees the same vectors in
# the same positions.

# %%
words = "blurry, noisy"
word_ids = pipe.tokenizer(words).input_ids[1:-1]  # without <start> and <end>
rows = pipe.text_encoder.get_input_embeddings().weight[word_ids].detach().float().cpu()
my_file = workdir / "my_negative.safetensors"
save_file({"emb_params": rows.contiguous()}, str(my_file))
pipe.load_textual_inversion(str(my_file), token="<my-negative>")
my_names = ["<my-negative>"] + [f"<my-negative>_{i}" for i in range(1, len(word_ids))]
print(words, "->", word_ids, "| new tokens:", my_names, pipe.tokenizer.convert_tokens_to_ids(my_names))
# An all-lower-case name survives the tokenizer's lower-casing, so diffusers expands this one itself:
print(pipe.maybe_convert_prompt("<my-negative>", pipe.tokenizer))


def encode(text):
    ids_ = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids_.to(pipe.device))[0].float()


gap = (encode(" ".join(my_names)) - encode(words)).abs().max().item()
print("text encoder output, new tokens vs the words, max abs difference:", gap)
assert gap <= tol

# %% [markdown]
# ### Solution 3
# `mid_block.attentions.0` is `middle_block.1` (ResNet, attention, ResNet). The VAE decoder's
# `up_blocks.0` runs first, but the original code numbers its blocks from the last one: with `n`
# blocks it is `up.{n-1}` (`tiny`: 3 blocks, `up.2`; SD 1.5: 4, `up.3`). The weights match the file's
# (on `sd15` up to rounding: step 6 fused the LoRA into this very pipeline and took it out again).

# %%
n_blocks = len(pipe.vae.config.block_out_channels)
my_keys = {
    "unet.mid_block.attentions.0.proj_in.weight": "model.diffusion_model.middle_block.1.proj_in.weight",
    "vae.decoder.up_blocks.0.resnets.0.conv1.weight": f"first_stage_model.decoder.up.{n_blocks - 1}.block.0.conv1.weight",
}
with safe_open(str(ckpt_path), framework="pt") as f:
    for name, original in my_keys.items():
        component, key = name.split(".", 1)
        stored = f.get_tensor(original)
        ours = models[component].state_dict()[key].detach().cpu()
        gap = (stored.float() - ours.float()).abs().max().item()
        print(f"{name} <- {original} | max abs difference {gap:.1e} | key_mapping agrees: {mapping[original] == name}")
        assert mapping[original] == name and gap <= tol
