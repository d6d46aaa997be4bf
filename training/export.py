"""Write the trained models as ``.safetensors`` diffusers folders (what ``from_pretrained`` loads).

Every model folder holds its weights in fp16 under the default file names (``diffusion_pytorch_model.safetensors``,
``model.safetensors``) and loads as float32 when no ``dtype`` is passed, as a Hub repo's default files do:
diffusers builds a model in torch's default dtype (float32) and casts what it reads to it, and the text
encoder's ``config.json`` declares ``"dtype": "float32"`` (transformers 5 loads a model in its config's dtype,
else in its file's; :func:`_declare_float32`). ``dtype=torch.float16`` gives the stored fp16 tensors. fp32
files (56 MB, 77 MB with ``*.fp16.safetensors`` variants beside them, as SD 1.5 ships) would not fit the
40 MB budget; fp16 variants alone would not load without ``variant="fp16"``.

``python -m training export --out training/runs --to data/tiny`` writes (``--stages finetune,lora,ti``: only those)::

    text2img/    StableDiffusionPipeline (EMA UNet + text encoder, VAE with its measured scaling_factor, PNDM)
    inpaint/unet/   the 9-channel inpainting UNet (the rest of that pipeline is text2img's)
    upscale/unet/   the x4 upscaler's 7-channel UNet
    upscale/vae/    its VAE: text2img's, rescaled to the upscale pipeline's scaling_factor 0.08333 (upscaler_vae)
    community.safetensors   the outline fine-tune as ONE file in the original SD layout
    outline_lora/pytorch_lora_weights.safetensors   the outline LoRA
    outline_embedding.safetensors   the "<outline>" textual-inversion embedding (A1111 format, key emb_params)
    controlnet/     the canny ControlNet (ControlNetModel) for text2img's UNet; its training record goes into
                    training_results.json (lesson 11 plots it: course_utils.controlnet.training_record)
    training_results.json   sizes and each stage's final measurements (the model card, README.md, is written by hand from it
                            and from `python -m course_utils evaluate`)
"""

import json
import shutil
from pathlib import Path

import torch
from diffusers import ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file

from course_utils.models import builders, configs
from course_utils.models.original_layout import save_single_file
from course_utils.models.surgery import upscaler_vae

from . import config, data
from .checkpoints import load_ckpt, new_text_encoder, trained_text2img, trained_vae, weights

COMMON = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _half(pipe):
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            comp.half()
    return pipe


def _declare_float32(folder: Path):
    """Make every transformers ``config.json`` under ``folder`` declare ``"dtype": "float32"``; the weights stay fp16.

    transformers' ``save_pretrained`` writes the saved tensors' dtype there, and transformers 5 loads a model in
    that dtype when none is passed: a float16 text encoder beside diffusers' float32 UNet and VAE, and a
    pipeline that fails on its first call. Declared float32, ``from_pretrained()`` upcasts the fp16 values
    exactly (diffusers' configs hold no dtype: its models always load in float32 unless told otherwise).
    """
    for path in sorted(Path(folder).rglob("config.json")):
        cfg = json.loads(path.read_text())
        if cfg.get("dtype") not in (None, "float32"):
            cfg["dtype"] = "float32"
            path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")  # transformers' own format


def _save(pipe, folder: Path):
    if folder.exists():
        shutil.rmtree(folder)
    _half(pipe).save_pretrained(folder, safe_serialization=True)
    _declare_float32(folder)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _save_model(model, folder: Path):
    """One model folder: fp16 weights in the default file name, a config that loads it as float32."""
    model.half().save_pretrained(folder, safe_serialization=True)
    _declare_float32(folder)


def _save_unet(unet, folder: Path) -> int:
    if folder.parent.exists():
        shutil.rmtree(folder.parent)
    _save_model(unet, folder)
    return _size(folder)


def export(out=config.DEFAULT_OUT, to="data/tiny", stages=None) -> dict:
    """Export every finished stage of ``out`` (or only ``stages``) into ``to``; returns {name: bytes}.

    Files of stages not exported are left as they are, and so are their entries in ``training_results.json``:
    ``stages=("finetune", "lora", "ti")`` replaces the style models and leaves ``text2img/`` (which those
    stages start from, but which only the ``text2img`` stage writes), ``inpaint/`` and ``upscale/`` untouched.
    """
    out, to = Path(out), Path(to)
    to.mkdir(parents=True, exist_ok=True)
    done = [s for s in config.STAGES if (out / s / "ckpt.pt").exists()]
    stages = stages or done
    sizes, results = {}, {}
    for s in stages:
        r = out / s / "result.json"
        if r.exists():
            results[s] = json.loads(r.read_text())
    vae = trained_vae(out)
    te, unet = trained_text2img(out)
    pndm = builders.pndm_scheduler()

    def base(unet_, te_=None):
        return StableDiffusionPipeline(
            vae=vae, text_encoder=te_ or te, tokenizer=data.tokenizer(), unet=unet_, scheduler=pndm, **COMMON
        )

    if "text2img" in stages:
        _save(base(unet), to / "text2img")
        sizes["text2img"] = _size(to / "text2img")
        # fp16 copies were made in place: reload fp32 modules for the next pipelines
        vae, (te, unet) = trained_vae(out), trained_text2img(out)

    # inpaint/ and upscale/ hold only their UNets: course_utils assembles those pipelines from
    # text2img/'s text encoder, tokenizer and VAE, so those are stored once.
    if "inpaint" in stages:
        ck = load_ckpt(out, "inpaint")
        u = UNet2DConditionModel(**configs.TINY_INPAINT_UNET)
        u.load_state_dict(weights(ck, "unet"))
        sizes["inpaint"] = _save_unet(u, to / "inpaint" / "unet")

    if "upscale" in stages:
        ck = load_ckpt(out, "upscale")
        u = UNet2DConditionModel(**configs.TINY_UPSCALER_UNET)
        u.load_state_dict(weights(ck, "unet"))
        _save_unet(u, to / "upscale" / "unet")
        # its own VAE: text2img's, rescaled to the upscale pipeline's fixed scaling_factor 0.08333
        _save_model(upscaler_vae(trained_vae(out)), to / "upscale" / "vae")
        sizes["upscale"] = _size(to / "upscale")

    if "finetune" in stages:
        ck = load_ckpt(out, "finetune")
        u = UNet2DConditionModel(**configs.TINY_UNET)
        u.load_state_dict(weights(ck, "unet"))
        te_ft = None
        if "text_encoder" in ck["modules"]:  # trained with the UNet (train_text_encoder)
            te_ft = new_text_encoder()
            te_ft.load_state_dict(weights(ck, "text_encoder"))
        path = to / "community.safetensors"
        save_single_file(
            _half(base(u, te_ft)), path, metadata=dict(made_by="sd-course", trigger=config.STAGES["finetune"].trigger)
        )
        sizes["community"] = _size(path)
        vae, (te, unet) = trained_vae(out), trained_text2img(out)

    if "lora" in stages:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        ck = load_ckpt(out, "lora")
        c = config.stage_config("lora", **{k: v for k, v in ck["config"].items() if k in ("rank", "target_modules")})
        unet.add_adapter(LoraConfig(r=c.rank, lora_alpha=c.rank, target_modules=list(c.target_modules)))
        unet.load_state_dict(ck["modules"]["unet"])
        layers = {k: v.half() for k, v in convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)).items()}
        folder = to / "outline_lora"
        if folder.exists():
            shutil.rmtree(folder)
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
        sizes["lora"] = _size(folder)

    if "ti" in stages:
        ck = load_ckpt(out, "ti")
        path = to / "outline_embedding.safetensors"
        save_file(
            {"emb_params": ck["extra"]["vectors"].half().contiguous()},
            str(path),
            metadata=dict(format="pt", made_by="sd-course", token=ck["extra"]["tokens"][0]),
        )
        sizes["ti"] = _size(path)

    if "controlnet" in stages:
        ck = load_ckpt(out, "controlnet")
        cn = ControlNetModel.from_unet(
            UNet2DConditionModel(**configs.TINY_UNET),
            conditioning_embedding_out_channels=tuple(ck["config"]["embedding_channels"]),
        )
        cn.load_state_dict(weights(ck, "controlnet"))
        folder = to / "controlnet"
        if folder.exists():
            shutil.rmtree(folder)
        _save_model(cn, folder)
        sizes["controlnet"] = _size(folder)
        results.setdefault("controlnet", {})["record"] = training_record(out / "controlnet" / "log.jsonl")

    old = to / "training_results.json"
    if old.exists():  # stages not exported this time keep their entries (their files are left as they are)
        kept = json.loads(old.read_text())
        sizes = {**{k: v for k, v in kept["sizes"].items() if k not in stages}, **sizes}
        results = {**{k: v for k, v in kept["results"].items() if k not in stages}, **results}
    old.write_text(json.dumps(dict(sizes=sizes, results=results), indent=2, default=str))
    return sizes


def training_record(log_path: Path, window: int = 5) -> dict:
    """A run's curve from its ``log.jsonl``: the logged loss averaged over ``window`` rows (one row every
    ``log_every`` steps), and the in-run evaluations' ``follows`` share (the ControlNet stage's score).

    Returns:
        `dict`: ``loss_steps``, ``loss``, ``eval_steps``, ``follows`` (the final evaluation included).
    """
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    logged = [r for r in rows if "loss" in r]
    evals = [(r["step"], r.get("eval") or r.get("final")) for r in rows if "eval" in r or "final" in r]
    loss_steps, loss = [], []
    for i in range(window - 1, len(logged), window):
        loss_steps.append(logged[i]["step"])
        loss.append(round(sum(r["loss"] for r in logged[i - window + 1 : i + 1]) / window, 6))
    return dict(
        loss_steps=loss_steps,
        loss=loss,
        eval_steps=[step for step, _ in evals],
        follows=[round(e["follows"], 4) for _, e in evals],
    )
