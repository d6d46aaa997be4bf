"""Write the trained models as fp16 ``.safetensors`` diffusers folders (what ``from_pretrained`` loads).

``python -m training export --out training/runs --to data/tiny`` writes::

    text2img/    StableDiffusionPipeline (EMA UNet + text encoder, VAE with its measured scaling_factor, PNDM)
    inpaint/     StableDiffusionInpaintPipeline (9-channel UNet)
    upscale/     StableDiffusionUpscalePipeline (7-channel UNet, text2img's VAE with scaling_factor 0.08333)
    community.safetensors   the outline fine-tune as ONE file in the original SD layout
    outline_lora/pytorch_lora_weights.safetensors   the outline LoRA
    outline_embedding.safetensors   the "<outline>" textual-inversion embedding (A1111 format, key emb_params)
    README.md    the model card (sizes, training settings, measured results)
"""
import json
import shutil
from pathlib import Path

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, PNDMScheduler, StableDiffusionInpaintPipeline,
                       StableDiffusionPipeline, StableDiffusionUpscalePipeline, UNet2DConditionModel)
from safetensors.torch import save_file

from course_utils import configs as cu_configs
from course_utils import upscale as cu_upscale
from course_utils.single_file import save_single_file

from . import config, data
from .train import load_ckpt, new_vae, trained_text2img, trained_vae, weights

COMMON = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _half(pipe):
    for name, comp in pipe.components.items():
        if isinstance(comp, torch.nn.Module):
            comp.half()
    return pipe


def _save(pipe, folder: Path):
    if folder.exists():
        shutil.rmtree(folder)
    _half(pipe).save_pretrained(folder, safe_serialization=True)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def export(out=config.DEFAULT_OUT, to="data/tiny", stages=None) -> dict:
    """Export every finished stage of ``out`` into ``to``; returns {name: bytes}."""
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
    pndm = PNDMScheduler.from_config(cu_configs.SD15_SCHEDULER)

    def base(unet_):
        return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=data.tokenizer(), unet=unet_, scheduler=pndm, **COMMON)

    _save(base(unet), to / "text2img")
    sizes["text2img"] = _size(to / "text2img")
    # fp16 copies were made in place: reload fp32 modules for the next pipelines
    vae, (te, unet) = trained_vae(out), trained_text2img(out)

    if "inpaint" in stages:
        ck = load_ckpt(out, "inpaint")
        u = UNet2DConditionModel(**config.INPAINT_UNET)
        u.load_state_dict(weights(ck, "unet"))
        pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=te, tokenizer=data.tokenizer(), unet=u,
                                              scheduler=pndm, **COMMON)
        _save(pipe, to / "inpaint")
        sizes["inpaint"] = _size(to / "inpaint")
        vae, (te, unet) = trained_vae(out), trained_text2img(out)

    if "upscale" in stages:
        ck = load_ckpt(out, "upscale")
        u = UNet2DConditionModel(**config.UPSCALER_UNET)
        u.load_state_dict(weights(ck, "unet"))
        up_vae = new_vae(config.UPSCALER_SCALING_FACTOR)
        up_vae.load_state_dict(vae.state_dict())
        pipe = StableDiffusionUpscalePipeline(
            vae=up_vae, text_encoder=te, tokenizer=data.tokenizer(), unet=u,
            scheduler=DDIMScheduler.from_config(cu_upscale.SD15_UPSCALER_SCHEDULER),
            low_res_scheduler=DDPMScheduler.from_config(cu_upscale.SD15_UPSCALER_LOW_RES_SCHEDULER),
            safety_checker=None, feature_extractor=None, watermarker=None,
            max_noise_level=cu_upscale.SD15_UPSCALER_MAX_NOISE_LEVEL)
        folder = to / "upscale"
        if folder.exists():
            shutil.rmtree(folder)
        pipe.unet.half()
        pipe.text_encoder.half()
        pipe.vae.half()  # stored fp16; course_utils.upscale loads the VAE as float32
        pipe.save_pretrained(folder, safe_serialization=True)
        sizes["upscale"] = _size(folder)
        vae, (te, unet) = trained_vae(out), trained_text2img(out)

    if "finetune" in stages:
        ck = load_ckpt(out, "finetune")
        u = UNet2DConditionModel(**config.UNET)
        u.load_state_dict(weights(ck, "unet"))
        path = to / "community.safetensors"
        save_single_file(_half(base(u)), path, metadata=dict(made_by="sd-course", trigger=config.STAGES["finetune"].trigger))
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
        save_file({"emb_params": ck["extra"]["vectors"].half().contiguous()}, str(path),
                  metadata=dict(format="pt", made_by="sd-course", token=ck["extra"]["tokens"][0]))
        sizes["ti"] = _size(path)

    (to / "README.md").write_text(model_card(sizes, results))
    (to / "training_results.json").write_text(json.dumps(dict(sizes=sizes, results=results), indent=2, default=str))
    return sizes


def model_card(sizes: dict, results: dict) -> str:
    total = sum(sizes.values())
    lines = [
        "# sd-course `tiny` models",
        "",
        "Small models with exactly Stable Diffusion 1.5's classes (`CLIPTextModel`, `UNet2DConditionModel`,",
        "`AutoencoderKL`, SD 1.5's scheduler) trained by this repository (`python -m training all`, settings in",
        "`training/config.py`) on the synthetic world of `course_utils/world.py`: one coloured circle, square or",
        "triangle on a plain background, 64x64 pixels, captioned e.g. \"a red circle on a blue background\".",
        "They know nothing else. Tokenizer: CLIP's real one (`data/clip_tokenizer`), so any prompt tokenizes as in SD 1.5.",
        "",
        "Combinations never seen in training (used to test generalisation): "
        + ", ".join(" ".join(c) for c in __import__("course_utils.world", fromlist=["HELD_OUT"]).HELD_OUT) + ".",
        "",
        f"Style: the community fine-tune draws outlined shapes when the prompt contains \"{config.STYLE_WORD}\"",
        f"(e.g. \"a red circle in {config.STYLE_WORD} style\"); the LoRA draws outlines always; the embedding's token is",
        f"`{config.TI_TOKEN}` (\"a red circle in {config.TI_TOKEN} style\").",
        "",
        "| file | MB (fp16) |",
        "|---|---|",
        *[f"| {k} | {v / 1e6:.1f} |" for k, v in sizes.items()],
        f"| total | {total / 1e6:.1f} |",
        "",
        "## Measured results",
        "",
        "```json",
        json.dumps(results, indent=2, default=str),
        "```",
        "",
        "License: same as the repository. Weights are fp16 safetensors; load them in float32 on a CPU.",
    ]
    return "\n".join(lines) + "\n"
