"""The style stages, made from the trained base models: the community fine-tune, the outline LoRA and the
``<outline>`` textual inversion (lesson 7's three ways to add a style).
"""

import copy
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from course_utils import latents, world
from course_utils.images import to_tensor

from . import config, data
from .checkpoints import ddpm, load_ckpt, save_checkpoint, trained_text2img, trained_vae, weights, with_weights
from .stages import DiffusionStage, text2img_pipeline


class FinetuneStage(DiffusionStage):
    """The "community" fine-tune: text2img's UNet learns outlined shapes for captions with the trigger word."""

    name = "finetune"  # the stage's folder (its latent cache goes there)
    scores_other_word = True  # its evaluation also asks for another word in the trigger's place (not the LoRA, TI)

    def unet_from(self, cfg) -> str:
        """The stage whose UNet this one starts from: text2img's here (TIStage: its settings say)."""
        return "text2img"

    def __init__(self, cfg, out):
        super().__init__(cfg, out)
        self.vae, self.sched = trained_vae(out), ddpm()
        te, self.unet = trained_text2img(out)
        if self.unet_from(cfg) == "finetune":  # TI for the community model: its (EMA) weights
            ck = load_ckpt(out, "finetune")
            self.unet.load_state_dict(weights(ck, "unet"))
            if "text_encoder" in ck["modules"]:
                te.load_state_dict(weights(ck, "text_encoder"))
        self.text_encoder = te.requires_grad_(False).eval()
        self.tokenizer = data.tokenizer()
        self.setup()
        self.cache = (
            style_cache(self.vae, cfg.cache_scenes, cfg.seed, Path(out) / self.name) if cfg.cache_scenes else None
        )

    def setup(self):
        """What is trained (LoRA and TI train other parameters of the same models)."""
        self.modules = dict(unet=self.unet)
        if self.cfg.train_text_encoder:
            self.modules["text_encoder"] = self.text_encoder.requires_grad_(True).train()
        self.trains(self.modules)

    def trigger(self) -> str:
        return self.cfg.trigger

    def styled(self, caption: str) -> str:
        """An outlined picture's caption: ``"outline style, a red circle"`` (the LoRA's: the caption itself)."""
        return data.with_trigger(caption, self.trigger())

    def loss(self, step, gen):
        c = self.cfg
        if self.cache is None:
            b = data.style_batch(c.seed, step, c.batch_size, c.style_share, self.styled, tok=self.tokenizer)
            lat, ids = self.encode(b["pixels"], gen), b["input_ids"]
        else:  # cached scenes: plain or outlined, a fresh latent sample and a fresh caption each time
            idx = torch.randint(0, len(self.cache["labels"]), (c.batch_size,), generator=gen)
            styled = torch.rand(c.batch_size, generator=gen) < c.style_share
            lat = latents.draw(self.cache, idx, self.vae.config.scaling_factor, gen, styled=styled)
            rng = random.Random(f"style-captions-{c.seed}-{step}")
            captions = [data.caption(*self.cache["labels"][i], rng) for i in idx.tolist()]
            captions = [self.styled(t) if s else t for t, s in zip(captions, styled.tolist())]
            ids = data.tokenize(captions, self.tokenizer)
        noisy, noise, t = self.noised(lat, gen)
        pred = self.unet(noisy, t, self.text(ids)).sample
        if c.loss_guidance:  # as the pipeline samples: classifier-free guidance with the empty prompt
            with torch.no_grad():
                empty = self.text_encoder(data.tokenize([""] * len(ids), self.tokenizer))[0]
                uncond = self.unet(noisy, t, empty).sample
            pred = uncond + c.loss_guidance * (pred - uncond)
        return F.mse_loss(pred, noise), {}

    def pipeline(self, run) -> StableDiffusionPipeline:
        """The pipeline the stage's evaluation samples from (the EMA UNet)."""
        ema = run.ema.shadow
        unet = with_weights(self.unet, ema["unet"]) if "unet" in ema else self.unet.eval()
        te = with_weights(self.text_encoder, ema["text_encoder"]) if "text_encoder" in ema else self.text_encoder.eval()
        return text2img_pipeline(self.vae, te, unet)

    @torch.no_grad()
    def evaluate(self, run):
        """Share of outlined shapes (``course_utils.scores.outline_share``) over ``eval_seeds`` seeds of its
        6 prompts: with the trigger (``style``) and, where there is one, without it (``style_plain``); the
        fine-tune also with another word in the trigger's place (``style_other_word``)."""
        from course_utils.scores import STYLE_PROMPTS, outline_share

        c = self.cfg
        pipe = self.pipeline(run)
        pipe.tokenizer = self.tokenizer
        settings = dict(
            height=world.SIZE, width=world.SIZE, num_inference_steps=c.eval_steps, guidance_scale=c.eval_guidance
        )
        seeds = range(c.eval_seeds)
        out = dict(style=outline_share(pipe, [self.styled(p) for p in STYLE_PROMPTS], seeds, **settings))
        if self.trigger():
            out["style_plain"] = outline_share(pipe, STYLE_PROMPTS, seeds, **settings)
        if self.scores_other_word:  # another word in the trigger's place ("watercolor style, ...")
            out["style_other_word"] = outline_share(
                pipe, [data.with_trigger(p, data.OTHER_WORD) for p in STYLE_PROMPTS], seeds, **settings
            )
        for m in self.modules.values():
            m.train()
        return out


@torch.no_grad()
def style_cache(vae, n: int, seed: int, folder: Path, chunk: int = 256) -> dict:
    """Encode ``n`` world scenes once, plain and outlined (``data.styled_sample``; ``course_utils.latents.encode``):
    posterior ``mean``/``std`` and ``styled_mean``/``styled_std`` ``[n, 4, 16, 16]``, and their ``labels``
    (``latents.draw(..., styled=...)`` draws from either).

    Saved as ``<folder>/latents.pt``, so a resumed run does not encode again. The outlined scene of a
    seed has the plain one's colours and shape (its own size and place).
    """
    path = Path(folder) / "latents.pt"
    if path.exists():
        cache = torch.load(path, weights_only=False)
        if len(cache["labels"]) == n and cache.get("outline") == (config.OUTLINE_WIDTH, config.OUTLINE_RADIUS):
            return cache
    parts = dict(mean=[], std=[], styled_mean=[], styled_std=[])
    labels = []
    t0 = time.perf_counter()
    for i in range(0, n, chunk):
        seeds = [data.world_seed(seed + 100, i // chunk, j, chunk) for j in range(min(chunk, n - i))]
        plain = [world.sample(s, "train") for s in seeds]
        for key, images in (("", [p.image for p in plain]), ("styled_", [data.styled_sample(s)[0] for s in seeds])):
            part = latents.encode(vae, to_tensor(images))
            parts[key + "mean"].append(part["mean"])
            parts[key + "std"].append(part["std"])
        labels += [(p.color, p.shape, p.background) for p in plain]
    cache = dict(
        {k: torch.cat(v) for k, v in parts.items()},
        labels=labels,
        outline=(config.OUTLINE_WIDTH, config.OUTLINE_RADIUS),
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, cache)
    print(f"[style] encoded {n} scenes, plain and outlined, in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return cache


class LoraStage(FinetuneStage):
    """A LoRA (peft, rank ``cfg.rank``) on the UNet's ``cfg.target_modules``; everything else frozen."""

    name = "lora"
    scores_other_word = False

    def setup(self):
        from peft import LoraConfig

        self.unet.requires_grad_(False)
        self.unet.add_adapter(
            LoraConfig(
                r=self.cfg.rank,
                lora_alpha=self.cfg.rank,
                init_lora_weights="gaussian",
                target_modules=list(self.cfg.target_modules),
            )
        )
        self.trains(dict(unet=self.unet), [p for n, p in self.unet.named_parameters() if "lora_" in n], ema=False)

    def pipeline(self, run):
        return text2img_pipeline(self.vae, self.text_encoder, self.unet.eval())


class TIStage(FinetuneStage):
    """Textual inversion: only the embedding rows of ``<outline>``, ``<outline>_1``, ... are learned."""

    name = "ti"
    keep_float32 = ("text_encoder",)  # as diffusers' textual_inversion.py: the text encoder stays float32
    scores_other_word = False

    def unet_from(self, cfg) -> str:
        """``cfg.unet_from``: ``"finetune"`` trains the embedding for the community model (its EMA weights)."""
        return cfg.unet_from

    def setup(self):
        c = self.cfg
        self.tokenizer = copy.deepcopy(self.tokenizer)
        self.tokens = [c.trigger] + [f"{c.trigger}_{i}" for i in range(1, c.n_vectors)]
        self.tokenizer.add_tokens(self.tokens)
        self.ids = self.tokenizer.convert_tokens_to_ids(self.tokens)
        init = self.tokenizer(c.init_word, add_special_tokens=False).input_ids[0]
        self.unet.requires_grad_(False)
        te = self.text_encoder
        te.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        emb = te.get_input_embeddings().weight
        with torch.no_grad():
            emb[self.ids] = emb[init].clone()
        te.requires_grad_(False)
        emb.requires_grad_(True)
        self.frozen = emb.detach().clone()
        self.trains(dict(text_encoder=te), [emb], ema=False)

    def trigger(self) -> str:
        return " ".join(self.tokens)  # every vector in every caption

    def styled(self, caption: str) -> str:
        """``"<outline> <outline>_1, a red circle"`` (``data.with_embedding``)."""
        return data.with_embedding(caption, self.trigger())

    def pipeline(self, run):
        return text2img_pipeline(self.vae, self.text_encoder.eval(), self.unet.eval())

    @torch.no_grad()
    def after_step(self):
        emb = self.text_encoder.get_input_embeddings().weight
        keep = torch.ones(emb.shape[0], dtype=torch.bool)
        keep[self.ids] = False
        emb[keep] = self.frozen[keep]  # only the new tokens' rows change

    def checkpoint_extra(self):
        vectors = self.text_encoder.get_input_embeddings().weight[self.ids].detach().clone()
        return dict(tokens=self.tokens, vectors=vectors)
