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
# - how to load a community fine-tune of SD 1.5 from the Hub with complete code (and why the
#   source lesson's cell failed with `NameError: name 'pipeline' is not defined`);
# - single-file `.safetensors` checkpoints as CIVITAI distributes them, loaded with `from_single_file`
#   (which guesses the model type from the file and fetches its configs itself);
# - what the keys inside such a file look like, and how they map to diffusers' names;
# - why `.safetensors` and not a pickled `.ckpt`;
# - that "EasyNegative" (on `tiny`: `<outline>`) is a textual-inversion embedding, not a word, and how to load it;
# - a LoRA: load it, change its strength, fuse it and unload it — a preview of fine-tuning;
# - what the models' licence allows, and using them responsibly.

# %% [markdown]
# Run this first. On Colab it installs the course (keeping Colab's own torch); on your machine, after `make install`, it does nothing.

# %%
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about 6.5 GB
# from the Hugging Face Hub, again on every new runtime:
# Counterfeit-V2.5's folders + its fp16 file + SD 1.5's configs + EasyNegative + LCM-LoRA.
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
from diffusers import LCMScheduler
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


def looks(image):
    """On `tiny`: what cu.world.classify reads from a picture - colour, shape, background and how `hollow` the shape is."""
    found = cu.world.classify(image)
    return f"{found['color']} {found['shape']} on {found['background']}, hollow {found['hollow']:.2f}"


# %% [markdown]
# With `sd15` this lesson uses Counterfeit-V2.5 (anime-style illustrations), EasyNegative and the
# LCM LoRA. The `tiny` profile has a community model of its own world: a fine-tune meant to draw
# shapes as **outlines** when the prompt says "outline", the same style as an embedding
# (`<outline>`) and as a LoRA. To tell solid from outlined in numbers, `looks` prints the `hollow`
# that `cu.world.classify` measures: the share of the shape's inside left unpainted (0 for a solid
# shape, about 0.2-0.5 for the LoRA's outlines; the course's evaluator counts a shape as outlined above 0.15).
#
# ## 1. A community fine-tune from the Hub — the complete code
#
# Stable Diffusion is open, so anyone can keep training it on their own pictures. The result, a
# *fine-tune*, has exactly SD 1.5's architecture with different numbers in it. CIVITAI and the
# Hugging Face Hub host thousands. The source lesson uses **Counterfeit-V2.5** by gsdf, an anime
# style; its Hub repository `gsdf/Counterfeit-V2.5` holds it in diffusers' folder format.
#
# The source lesson's cell began by moving `pipeline` to the GPU but never created it, so
# Python stopped with **`NameError: name 'pipeline' is not defined`**. The missing line is
# `from_pretrained`. Here is the complete cell; it downloads a few GB, so it runs only on
# `sd15`. The other profiles load the course's own community model, and compare it with the base
# model on a prompt with and without the trigger word.

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
    prompt = "a red circle on a white background"  # a scene of tiny's world (course_utils.world)
    styled = community.style_prompt(prompt)  # the same with the trigger word
    pictures, titles = [], []
    for name, model in (("base model", base_pipe), ("community model", pipeline)):
        # one batch of two prompts, each with its own generator seeded alike: the same starting noise
        output = model([prompt, styled], generator=[seed(), seed()], **settings)  # the last: the community model's
        pair = output.images
        for text, picture in zip((prompt, styled), pair):
            print(f"{name:15s} {text!r:55s} {looks(picture)}")
            titles.append(f"{name}, {'with' if text == styled else 'without'} 'outline': {looks(picture)}")
        pictures += pair
    display(cu.grid(pictures, cols=2, size=256, titles=titles))
# The safety checker's verdict, one per picture (lesson 2, section 8): True = flagged, and that picture blacked out.
flags = output.nsfw_content_detected
print("nsfw_content_detected:", flags)
if flags is None:
    print("None: this pipeline has no safety checker, so nothing is blacked out (Counterfeit-V2.5's folders ship "
          "none; diffusers says so when it loads them). What you share is your responsibility (section 7).")
else:
    print("True = that picture was flagged and is black: try another prompt or seed (the checker flags harmless "
          "pictures too). Loading with safety_checker=None switches it off: your decision and your responsibility (section 7).")

# %% [markdown]
# With `sd15` it ran — but "EasyNegative" was not doing what its author meant. We come back to
# that in step 5. On `tiny` (top row: base model, bottom row: community model; left: plain prompt,
# right: with the trigger word in front, `community.style_prompt`) the community model draws an
# outline when the prompt starts with "outline style": `hollow` rises and the colour stays. Without
# the word, and in the base model, the shape stays solid. Same architecture, other weights, loaded
# from one file behind the same pipeline. The background is the fine-tune's weak spot: with the word
# in front it was right in 38% of 24 test pictures (100% without). The word shifts every later token,
# and 2,000 training steps did not fully teach the UNet where "white background" now sits.
#
# **Why the trigger word goes first.** CLIP's text encoder is causal (lesson 2, §9): each token sees
# only the tokens before it. A word at the end of a prompt leaves every earlier token exactly as it
# was and changes only what follows: the end token and the padding. How much does the padding
# change, compared with a change of colour?

# %%
scene = "a red circle on a white background"  # any short prompt will do: only the text encoder runs here


def padding_states(text):
    """The text encoder's output at the last 50 of its 77 positions (padding, for these short prompts): [50, hidden]."""
    ids = pipeline.tokenizer(text, padding="max_length", max_length=pipeline.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(pipeline.device)
    with torch.no_grad():
        return pipeline.text_encoder(ids)[0][0, -50:].float().cpu()


plain_states = padding_states(scene)
for text in ("a blue circle on a white background", f"{scene} in outline style", community.style_prompt(scene)):
    change = (padding_states(text) - plain_states).norm(dim=-1).mean()
    print(f"{text!r:55} padding changes by {change:.2f} per position")

# %% [markdown]
# On `tiny` a colour change moves the padding by about 3, the word at the end by about 0.1, the word in
# front by about 2. The UNet reads mostly the padding: on `tiny`, 80% of its cross-attention goes to
# the positions after the end token (`docs/training.md`). That is why the community model's captions
# start with the trigger word. (SD 1.5's CLIP prints its own numbers; the causal mask is the same.)

# %% [markdown]
# > **Behind the scenes (optional).** How well `tiny`'s three style models draw "outline"
# > (`data/tiny/README.md`: 6 prompts x 20 seeds each, `cu.world.classify` finds the shape hollow): the
# > fine-tune 85% with "outline style, " in front and 0% without; the LoRA of step 6 87.5%; the
# > embedding of step 5 86% in the community model and 0% in the base model; the base model 0%.
# > What it took:
# > - *The word first.* Trained with "... in outline style" at the end, the fine-tune drew outlines as
# >   often without the word as with it (22% / 22%). With the word in front: 2,000 steps, 85% / 0%.
# > - *The VAE.* Every picture is decoded from 16x16 latents, and the tiny VAE fills in part of a small
# >   ring. Of 96 outlines 5 pixels wide at the world's sizes (half-width 10-22 pixels) only 64% still
# >   read as hollow after encoding and decoding; drawn larger (18-26), 94%. So the style draws large
# >   outlines: no model draws more than its VAE can decode.
# > - *The LoRA* on the attention layers alone learned little (18%); on the convolutions too, 87.5%.
# > - *What the fine-tune learned is the pattern, not the word.* "watercolor style, a red circle" draws
# >   outlines just as often (87.5%). `tiny`'s text encoder knows only its world's few dozen words;
# >   every other word — "outline", "watercolor", "harbor" — comes out nearly the same. Every outlined
# >   training caption, and only those, began with "<word> style, ", so that pattern is the trigger.
# >   Training the word's row, or the whole text encoder, with other words on plain pictures did not
# >   separate them in the 250-750 steps we tried. SD 1.5's CLIP knows both words.

# %% [markdown]
# ## 2. A single-file checkpoint, as CIVITAI distributes it
#
# Most models on CIVITAI are **one file** of a few GB holding all three networks (UNet, VAE, CLIP
# text encoder) under the names of the original Stable Diffusion code, not diffusers' folders.
# diffusers reads such a file with `StableDiffusionPipeline.from_single_file`. The file holds only
# weights; the *configs* (layer sizes, tokenizer, scheduler) come from a diffusers folder. By
# default `from_single_file` finds that folder itself: it infers the model type from the file's keys
# and shapes (`infer_diffusers_model_type` in diffusers' `loaders/single_file_utils.py`: a
# 9-channel first convolution means inpainting, 1024-wide cross-attention SD 2, and so on) and
# downloads that type's default configs from the Hub (for SD 1.5, a few small files of
# `stable-diffusion-v1-5/stable-diffusion-v1-5`). `config=` is for the other cases: **offline**, a
# local folder with the configs (with `local_files_only=True`); or to **override** the guess, when
# the file's architecture is not its type's default.
#
# On `sd15` the file is `Counterfeit-V2.5_fp16.safetensors` from the same repository (2.1 GB);
# on `tiny` it is `data/tiny/community.safetensors`, the outline fine-tune of step 1, written in
# the original layout. Here is diffusers' guess for each, made from the file's header alone (names
# and shapes, as empty "meta" tensors: no weights are read):

# %%
from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type

from course_utils.models.configs import SD15_UNET  # SD 1.5's unet/config.json values

ckpt_path = files.checkpoint_file(choice.profile)
print(f"file: {ckpt_path.name}  ({ckpt_path.stat().st_size / 1e6:.1f} MB)")
shapes = {key: torch.empty(entry["shape"], device="meta") for key, entry in single_file.read_header(ckpt_path).items()
          if key != "__metadata__"}
print("diffusers infers the model type:", infer_diffusers_model_type(shapes), "-> default configs:", fetch_diffusers_config(shapes))
print("the file's first convolution:", list(shapes["model.diffusion_model.input_blocks.0.0.weight"].shape),
      "| SD 1.5's has", SD15_UNET["block_out_channels"][0], "output channels")
config = files.checkpoint_config(choice.profile)
print(f"configs the course passes as config=: {config}")

# %% [markdown]
# With `sd15` the course passes SD 1.5's configs too, from a local copy when it has one (so it runs
# offline), else the same Hub id diffusers would pick. `tiny`'s file is the case for overriding: its
# keys look like SD 1.5's, so diffusers guesses v1, but its layers are far smaller than SD 1.5's
# (its UNet's first convolution, printed above, has 32 output channels), so we pass `tiny`'s own folder.

# %%
# single_file.load_single_file checks the file type (step 4), then calls diffusers:
#   StableDiffusionPipeline.from_single_file(ckpt_path, config=config, local_files_only=<config is a folder>)
pipe = single_file.load_single_file(ckpt_path, config=config, dtype=choice.dtype).to(choice.device)
pipe.set_progress_bar_config(disable=choice.profile != "sd15")
print(type(pipe).__name__, "| UNet in_channels:", pipe.unet.config.in_channels, "| scheduler:", type(pipe.scheduler).__name__)
del pipeline  # step 1's copy (on `sd15` the folder version): free its memory

# %% [markdown]
# ## 3. What is inside the file
#
# A `.safetensors` file starts with a JSON *header* listing every tensor's name, dtype and
# shape, so the keys can be read without loading 2 GB. Grouped by prefix:

# %%
header = single_file.read_header(ckpt_path)
print("metadata:", header.get("__metadata__"))
for prefix, keys in single_file.group_keys(ckpt_path).items():
    print(f"{prefix:30s} {len(keys):5d} tensors, e.g. {keys[len(keys) // 2]}")

# %% [markdown]
# - `model.diffusion_model.*` — the UNet, `first_stage_model.*` — the VAE,
#   `cond_stage_model.transformer.*` — the CLIP text encoder (names from the original
#   CompVis code: the VAE was the "first stage", the text encoder the "conditioning stage").
# - Some files carry more, e.g. the noise schedule (`alphas_cumprod`, ...) or a second copy of the
#   UNet (`model_ema.*`); `from_single_file` ignores what it does not need.
#
# `from_single_file` renamed every key to diffusers' names. `single_file.key_mapping` is the
# course's inverse of that conversion. A few examples (the shape in the file, then in diffusers):

# %%
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
    in_file = header[original]["shape"]
    in_model = list(models[component].state_dict()[key].shape)
    print(f"{original:70s} -> {mapping[original]:60s} {in_file} {in_model}")

# %% [markdown]
# The rules behind the renaming: `input_blocks` → `down_blocks` (a ResNet at `.0`, an attention
# at `.1`, a downsampler at `.0.op`), `middle_block.0/1/2` → `mid_block` ResNet/attention/ResNet,
# `output_blocks` → `up_blocks`; inside a ResNet `in_layers.0` → `norm1`, `in_layers.2` → `conv1`,
# `emb_layers.1` → `time_emb_proj`, `out_layers.3` → `conv2`, `skip_connection` → `conv_shortcut`.
# The VAE decoder counts its blocks from the bottom (`up.0` runs last), diffusers from the top,
# and the VAE's attention stores 1×1 convolutions where diffusers uses Linear layers.
#
# The mapping is exact: converting the loaded pipeline back gives the very numbers in the file.

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
# Older checkpoints are `.ckpt` (also `.pt`, `.pth`, `.bin`): Python's **pickle** format. A
# pickle is a small program that rebuilds objects, and it may call any function to do it. Here
# is a harmless object that tells pickle "to rebuild me, call `print(...)`":


# %%
class Payload:
    def __reduce__(self):  # what pickle stores: a function to call, and its arguments
        return (print, ("!!! printed by code hidden in the file, while it was being loaded !!!",))


data = pickle.dumps({"weights": torch.zeros(2), "extra": Payload()})
restored = pickle.loads(data)  # just loading runs the code

# %% [markdown]
# A real attack calls something worse than `print`. A `.safetensors` file cannot do this: it is
# 8 bytes (the header's length), the JSON header, then raw tensor bytes — nothing in it is ever
# executed. That is why CIVITAI and the Hub offer `.safetensors` versions, and why the course's
# loader refuses a pickled checkpoint unless you opt in. To keep it quick on every machine, this
# demonstration uses the course's `tiny` checkpoint (a few MB).

# %%
workdir = Path(tempfile.mkdtemp())
tiny_weights = load_file(files.checkpoint_file("tiny"))
ckpt = workdir / "community_model.ckpt"
torch.save({"state_dict": tiny_weights}, ckpt)  # the .ckpt layout: the same keys, pickled
try:
    single_file.load_single_file(ckpt, config=files.checkpoint_config("tiny"))
except cu.CourseError as err:
    print("CourseError:", err)

# %% [markdown]
# With `allow_pickle=True` the file loads. diffusers then reads it with
# `torch.load(weights_only=True)`, a second line of defence: it accepts only tensors and plain
# containers. A checkpoint that carries code is still refused — and nothing is printed:

# %%
opted_in = single_file.load_single_file(ckpt, config=files.checkpoint_config("tiny"), allow_pickle=True)
print("loaded with allow_pickle=True:", type(opted_in).__name__)
del opted_in

evil = workdir / "evil_model.ckpt"
torch.save({"state_dict": tiny_weights, "extra": Payload()}, evil)
try:
    single_file.load_single_file(evil, config=files.checkpoint_config("tiny"), allow_pickle=True)
except cu.CourseError as err:
    print("CourseError:", err)

# %% [markdown]
# ## 5. "EasyNegative" is an embedding, not a word
#
# The `sd15` lesson's negative prompt starts with "EasyNegative"; `tiny`'s style has a name of the
# same kind, `<outline>`. CLIP has never seen such a word; its tokenizer splits it into ordinary
# pieces, so in step 1 SD 1.5 read "easy negative":

# %%
token = files.embedding_token(choice.profile)  # "EasyNegative" on sd15, "<outline>" on tiny
pieces = pipe.tokenizer.tokenize(token)
print(token, "->", pieces, pipe.tokenizer(token).input_ids)
assert len(pieces) > 1  # ordinary sub-words, no token of its own
print("vocabulary size:", len(pipe.tokenizer))

# %% [markdown]
# EasyNegative is a **textual-inversion embedding**: a few new vectors in the text encoder's
# embedding table, trained so that, used as a negative prompt, they push away typical flaws. Its
# file (in the format of AUTOMATIC1111's Stable Diffusion web UI, "A1111", the most used community
# front end; Hub dataset `gsdf/EasyNegative`) holds one tensor `emb_params` of shape
# `[n_vectors, hidden_size]`. No network weight changes. `tiny`'s `<outline>` is a file of the same
# format, trained on `tiny`'s community model (step 1) to mean "drawn as an outline": it goes in
# front of the prompt ("<outline>, a red circle on a white background"), not into the negative
# prompt. An embedding belongs to the model it was trained for, so on both profiles we load it into
# the community model.

# %%
ti_pipe = pipe  # the community model: what the embedding was trained for
emb_path = files.embedding_file(choice.profile)
vectors = community.embedding_vectors(emb_path)  # the file's one tensor (A1111 names it emb_params)
print(emb_path.name, "->", tuple(vectors.shape), "| text encoder hidden size:", ti_pipe.text_encoder.config.hidden_size)

# transformers notes (red, on stderr) how it initialises the new rows (`mean_resizing`); harmless here:
# load_textual_inversion overwrites them with the file's vectors right away (checked below).
ti_pipe.load_textual_inversion(str(emb_path), token=token)
names = [token] + [f"{token}_{i}" for i in range(1, len(vectors))]  # one new token per vector
ids = ti_pipe.tokenizer.convert_tokens_to_ids(names)
print("new tokens:", names)
print("their ids: ", ids, "| vocabulary size now:", len(ti_pipe.tokenizer))
table = ti_pipe.text_encoder.get_input_embeddings().weight
gap = (table[ids].detach().float().cpu() - vectors.float()).abs().max().item()
print("rows of the embedding table == the file's vectors, max abs difference:", gap)
assert ids[0] == 49408 and gap <= tol * max(1.0, vectors.abs().max().item())

# %% [markdown]
# transformers notes that it initialised the new rows from the old ones; diffusers then
# overwrote them with the file's vectors. Each vector got its own token, `EasyNegative`,
# `EasyNegative_1`, ... diffusers' `maybe_convert_prompt` is meant to expand the name in a
# prompt into all of them, but with transformers 5 the CLIP tokenizer lower-cases its tokens and a
# mixed-case name like "EasyNegative" is missed, so only the first vector would be used. An
# all-lower-case name like `<outline>` is found and expanded:

# %%
text = negative_prompt if choice.profile == "sd15" else community.embedding_prompt(prompt, token)
expanded = text.replace(token, " ".join(names))  # every vector's name written out
converted = ti_pipe.maybe_convert_prompt(text, ti_pipe.tokenizer)
print("diffusers:", converted)
print("expected: ", expanded)
print(ti_pipe.tokenizer(converted).input_ids[:12])

# %% [markdown]
# Where diffusers misses the name we pass the names written out ourselves; where it finds it we
# must not, or it would expand the written-out names a second time (`<outline>_1` contains
# `<outline>`). The ids show every vector in place:

# %%
ti_text = text if converted == expanded else expanded
print(ti_text)
print(ti_pipe.tokenizer(ti_pipe.maybe_convert_prompt(ti_text, ti_pipe.tokenizer)).input_ids[:12])

# Two images in one batch, each with its own generator seeded alike: the same starting noise.
if choice.profile == "sd15":  # EasyNegative goes into the negative prompt
    runs = dict(prompt=[prompt, prompt], negative_prompt=["extra fingers,fewer fingers,", ti_text])
else:  # <outline> goes into the prompt
    runs = dict(prompt=[prompt, ti_text])
without, with_emb = ti_pipe(generator=[seed(), seed()], **runs, **quick).images
print("mean abs pixel difference, with vs without the embedding:", float(np.abs(cu.to_array(with_emb) - cu.to_array(without)).mean()))
if choice.profile == "tiny":
    print(f"without: {looks(without)} | with {token}: {looks(with_emb)}")
titles = ["without the embedding", f"with {token}"]
if choice.profile == "tiny":
    titles = [f"{title}: {looks(picture)}" for title, picture in zip(titles, (without, with_emb))]
display(cu.grid([without, with_emb], size=max(256, settings["height"]), titles=titles))

# %% [markdown]
# Two new vectors change the picture (the mean difference printed above), and not one weight of the
# network changed. On `tiny` they turn the community model's shape into an outline. The same file in
# the *base* model, which never drew an outline:

# %%
if choice.profile == "tiny":
    base_pipe.load_textual_inversion(str(emb_path), token=token)
    base_plain, base_emb = base_pipe([prompt, ti_text], generator=[seed(), seed()], **quick).images
    print(f"base model without: {looks(base_plain)} | with {token}: {looks(base_emb)}")
    display(cu.grid([base_plain, base_emb], size=256, titles=[f"base model: {looks(base_plain)}", f"base + {token}: {looks(base_emb)}"]))

# %% [markdown]
# An embedding can only steer a network toward what it can already draw: the community model has
# learned outlines, the base model has not, and new words cannot teach it (the box in step 1 has the
# counts). EasyNegative, too, works with the models it was trained for.
#
# ## 6. A LoRA: a small add-on to the model
#
# Fine-tuning all of the UNet's weights gives a 2 GB file. **LoRA** trains far fewer numbers:
# beside a weight matrix `W` it learns two thin matrices `B` and `A` (rank `r`, e.g. 4–128) and uses
# `W + s · B·A` (times a fixed factor `alpha / r`), where `s` is the LoRA's *scale*. The file holds
# only `A` and `B`: a fraction of the model (LCM-LoRA below is 134.5 MB in fp16 against the UNet's
# 1.7 GB, counted from its layers in `docs/lookalike-repos.md`; `tiny`'s share is printed below).
# Training them is fine-tuning in miniature.
#
# On `sd15` the LoRA is **LCM-LoRA** (`latent-consistency/lcm-lora-sdv1-5`): it teaches SD 1.5 and
# its fine-tunes to make an image in about 4 steps, used with `LCMScheduler` and `guidance_scale`
# about 1. On `tiny` it is an **outline LoRA** for the base model: with it, every shape is drawn as an
# outline, no trigger word needed; it keeps the model's own scheduler and settings. The code is
# the same; diffusers logs that the LoRA has no text-encoder part, which is expected.

# %%
lora = files.lora_source(choice.profile)
if choice.profile == "sd15":  # LCM-LoRA on the community model: 4 steps with LCMScheduler
    lora_pipe = pipe
    lora_scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    lora_settings = dict(height=settings["height"], width=settings["width"], num_inference_steps=4, guidance_scale=1.0)
else:  # the outline LoRA on the base model it was trained on, with its usual scheduler and settings
    lora_pipe = base_pipe
    lora_scheduler = base_pipe.scheduler
    lora_settings = settings
original_scheduler = lora_pipe.scheduler
lora_pipe.scheduler = lora_scheduler


def final_latents(**kwargs):
    """Run the pipeline and return the final latents (comparing those is enough: the VAE only decodes them)."""
    return lora_pipe(prompt, generator=seed(), output_type="latent", **lora_settings, **kwargs).images


def diff(a, b):
    return (a.float() - b.float()).abs().mean().item()


base = final_latents()  # before the LoRA

# This LoRA changes only the UNet; diffusers notes (on stderr) that it found no keys for the text encoder:
# harmless, it says so itself.
lora_pipe.load_lora_weights(lora, adapter_name="demo")
print("adapters:", lora_pipe.get_list_adapters())
n_lora = sum(p.numel() for n, p in lora_pipe.unet.named_parameters() if "lora_" in n)
n_unet = sum(p.numel() for n, p in lora_pipe.unet.named_parameters() if "lora_" not in n)
print(f"LoRA numbers: {n_lora:,} beside {n_unet:,} in the UNet ({100 * n_lora / n_unet:.1f} %)")

# %% [markdown]
# `set_adapters` sets the scale. Scale 0 is the model without the LoRA, 1 is the LoRA as
# trained, in between blends (on `tiny` the LoRA turns the shape into a large outline - 87.5% of
# the evaluation's shapes; with this seed scale 0.5 still draws a solid circle and scale 1 a ring,
# its background slightly tinted):

# %%
by_scale = {}
for s in (0.0, 0.5, 1.0):
    lora_pipe.set_adapters(["demo"], adapter_weights=[s])
    by_scale[s] = final_latents()
    print(f"scale {s}: mean abs difference of the final latents from the model without LoRA = {diff(by_scale[s], base):.4f}")
assert diff(by_scale[0.0], base) <= tol
scale_pictures = cu.decode_latents(lora_pipe.vae, torch.cat(list(by_scale.values())))
if choice.profile == "tiny":
    for s, picture in zip(by_scale, scale_pictures):
        print(f"scale {s}: {looks(picture)}")
titles = [f"LoRA scale {s}" for s in by_scale]
if choice.profile == "tiny":
    titles = [f"{title}: {looks(picture)}" for title, picture in zip(titles, scale_pictures)]
display(cu.grid(scale_pictures, size=max(256, settings["height"]), titles=titles))

# %% [markdown]
# `fuse_lora` adds `s · B·A` into `W` once, so generation costs nothing extra per step;
# `unfuse_lora` subtracts it again and `unload_lora_weights` removes the LoRA layers altogether:

# %%
lora_pipe.set_adapters(["demo"], adapter_weights=[1.0])
lora_pipe.fuse_lora(lora_scale=1.0)
print("fused vs scale 1:        ", diff(final_latents(), by_scale[1.0]))
lora_pipe.unfuse_lora()
lora_pipe.unload_lora_weights()
print("adapters after unloading:", lora_pipe.get_list_adapters())
print("unloaded vs never loaded:", diff(final_latents(), base))
lora_pipe.scheduler = original_scheduler

# %% [markdown]
# ## 7. Licences and responsible use
#
# Open weights are not free of conditions. SD 1.5 is released under the **CreativeML OpenRAIL-M**
# licence (its model card on the Hub): you may use, change and share it, also commercially, but
# under *use restrictions* listed in the licence, among them no use that breaks the law, harms
# minors, spreads false information to harm others, harasses, defames or discriminates. Whoever
# shares a model derived from it (a fine-tune such as Counterfeit-V2.5, a merge, a LoRA) must pass
# the same restrictions on, and you are responsible for the images you make. Other models have
# other licences: the x4 upscaler of lesson 6 and LCM-LoRA use CreativeML Open RAIL++-M, and a
# community model may add its own terms (CIVITAI shows them on each model's page: commercial use,
# credit, sharing merges). **Read a community model's own licence before you use it.**
#
# Using them responsibly also means: do not make images of real people that could deceive or hurt
# them; say that an image is generated where that matters; remember that the training data (LAION,
# images from the web) carries its biases and other people's work. SD 1.5's pipeline ships a safety
# checker that blacks out images it flags (lesson 2); switching it off is your decision and your
# responsibility.

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
# - Where a trigger word sits matters: CLIP's text encoder is causal, so a word at the end cannot change
#   the prompt's own tokens, only what follows them. `tiny`'s fine-tune was trained with its word in
#   front. A fine-tune learns whatever sets its captions apart: on `tiny` the pattern "<word> style, ",
#   because its text encoder knows too few words to tell "outline" from "watercolor".
# - "EasyNegative" (on `tiny`: `<outline>`) is a textual-inversion embedding: `load_textual_inversion` adds
#   tokens (ids from 49408) whose embedding rows are the file's vectors. diffusers expands an all-lower-case
#   name into all of them; a mixed-case one you write out yourself.
# - A LoRA adds `s · B·A` to chosen weights: `load_lora_weights`, `set_adapters(..., adapter_weights=[s])`,
#   `fuse_lora`, `unload_lora_weights`. Scale 0 is the base model.
# - SD 1.5 and its fine-tunes come under CreativeML OpenRAIL-M, with use restrictions; check each
#   community model's own licence.

# %% [markdown]
# ## Solutions
#
# ### Solution 1
# At most the LoRA's rank `r`: `B·A` is an `[out, r]` matrix times an `[r, in]` one.

# %%
lora_pipe.scheduler = lora_scheduler
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
lora_pipe.scheduler = original_scheduler

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
