"""Smoke tests of the training code (training/): every stage runs a few steps on the CPU, resumes exactly, exports."""
import json

import pytest
import torch

from training import config
from training.train import train

SMALL = dict(batch_size=2, warmup=0, log_every=1, ckpt_every=2)
FAST = dict(  # per stage: the cheapest settings that still run every code path
    vae=dict(SMALL, scale_samples=32, eval_images=8),
    # steps 1+: offset noise, open captions and bare-word captions
    text2img=dict(SMALL, eval_prompts=4, eval_steps=2, eval_every=0, cache_scenes=16, refine_from=1, words_from=1),
    inpaint=SMALL, upscale=SMALL, finetune=SMALL, lora=SMALL, ti=SMALL,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every stage trained for 2 steps into one runs folder (the VAE for 30, to check that it learns)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs")
    results = {"vae": train("vae", out=out, steps=30, overrides=dict(FAST["vae"], batch_size=4, lr=2e-3, data_repeat=1), quiet=True)}
    for name in ("text2img", "inpaint", "upscale", "finetune", "lora", "ti"):
        results[name] = train(name, out=out, steps=2, overrides=FAST[name], quiet=True)
    return out, results


def _log(out, stage):
    return [json.loads(line) for line in (out / stage / "log.jsonl").read_text().splitlines()]


def test_vae_learns_and_measures_scaling_factor(runs):
    out, results = runs
    losses = [r["loss"] for r in _log(out, "vae") if "loss" in r]
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    sf = results["vae"]["scaling_factor"]
    assert sf == pytest.approx(1 / results["vae"]["latent_std"])
    assert sf != config.VAE["scaling_factor"] and sf != 0.18215
    ck = torch.load(out / "vae" / "ckpt.pt", weights_only=False)
    assert ck["done"] and ck["step"] == 30 and set(ck) >= {"modules", "optimizer", "ema", "rng", "step"}


def test_every_stage_logs_finite_losses(runs):
    out, results = runs
    for stage in config.STAGES:
        rows = [r for r in _log(out, stage) if "loss" in r]
        assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows), stage
        assert (out / stage / "config.json").exists()
    assert set(results["text2img"]) >= {"train_color", "held_out_color"}


@pytest.mark.parametrize("stage", ["vae", "text2img"])
def test_resume_is_exact(runs, tmp_path, stage):
    """4 steps straight == 2 steps, then resume for 2 more."""
    src, _ = runs
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        if stage != "vae":
            (d / "vae").mkdir(parents=True)
            (d / "vae" / "ckpt.pt").symlink_to(src / "vae" / "ckpt.pt")
    o = dict(FAST[stage], ckpt_every=100)
    train(stage, out=a, steps=4, overrides=o, quiet=True)
    train(stage, out=b, steps=2, overrides=o, quiet=True)
    with pytest.raises(SystemExit):  # no silent overwrite
        train(stage, out=b, steps=4, overrides=o, quiet=True)
    train(stage, out=b, steps=4, overrides=o, resume=True, quiet=True)
    ka, kb = (torch.load(d / stage / "ckpt.pt", weights_only=False) for d in (a, b))
    assert ka["step"] == kb["step"] == 4
    for name, sd in ka["modules"].items():
        for k, v in sd.items():
            assert torch.allclose(v, kb["modules"][name][k], atol=1e-6, rtol=0), (name, k)
    for name, sd in ka["ema"].items():
        for k, v in sd.items():
            assert torch.allclose(v, kb["ema"][name][k], atol=1e-6, rtol=0), (name, k)


def test_export_loads_in_diffusers(runs, tmp_path, monkeypatch):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, StableDiffusionUpscalePipeline
    from PIL import Image

    from training.export import export

    out, results = runs
    to = tmp_path / "tiny"
    sizes = export(out, to)
    assert set(sizes) == {"text2img", "inpaint", "upscale", "community", "lora", "ti"}
    assert (to / "training_results.json").exists()
    kw = dict(num_inference_steps=1, output_type="np")
    pipe = StableDiffusionPipeline.from_pretrained(to / "text2img", dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32
    assert pipe.vae.config.scaling_factor == pytest.approx(results["vae"]["scaling_factor"], rel=1e-3)
    assert pipe("a red circle on a blue background", **kw).images.shape == (1, 64, 64, 3)
    pipe.load_lora_weights(to / "outline_lora")
    pipe.load_textual_inversion(to / "outline_embedding.safetensors", token=config.TI_TOKEN)
    assert pipe(f"a red circle in {config.TI_TOKEN} style", **kw).images.shape == (1, 64, 64, 3)
    # course_utils assembles the inpainting and upscaling pipelines from text2img/ plus their own UNets
    from course_utils import build, community, inpaint, upscale

    monkeypatch.setattr(build, "TINY_DIR", to)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    inp = inpaint.tiny_pipeline()
    assert isinstance(inp, StableDiffusionInpaintPipeline) and inp.unet.config.in_channels == 9
    img, mask = Image.new("RGB", (64, 64), "blue"), Image.new("L", (64, 64), 255)
    assert inp("a red circle", image=img, mask_image=mask, strength=1.0, **kw).images.shape == (1, 64, 64, 3)
    up = upscale.tiny_pipeline()
    assert isinstance(up, StableDiffusionUpscalePipeline) and up.unet.config.in_channels == 7
    assert up.vae.config.scaling_factor == pytest.approx(0.08333)
    assert torch.equal(up.vae.decoder.conv_out.weight, pipe.vae.decoder.conv_out.weight)  # the same VAE weights
    assert up("a red circle", image=Image.new("RGB", (16, 16), "red"), **kw).images.shape == (1, 64, 64, 3)
    com = community.tiny_pipeline()
    assert com("a red circle in outline style", **kw).images.shape == (1, 64, 64, 3)
    assert community.tiny_source() == to / "community.safetensors"
    total = sum(f.stat().st_size for f in to.rglob("*") if f.is_file())
    assert total <= 40e6, f"data/tiny would be {total / 1e6:.1f} MB (issue 4: <= 40 MB)"


def test_training_schedules_are_the_pipelines():
    """The UNets learn on exactly the noise schedule their pipelines sample with (SD 1.5's; the upscaler's)."""
    from diffusers import DDIMScheduler, PNDMScheduler

    from course_utils import configs
    from course_utils import upscale as cu_upscale
    from training.train import ddpm

    pairs = [(ddpm(), PNDMScheduler.from_config(configs.SD15_SCHEDULER)),
             (ddpm(cu_upscale.SD15_UPSCALER_SCHEDULER), DDIMScheduler.from_config(cu_upscale.SD15_UPSCALER_SCHEDULER)),
             (ddpm(cu_upscale.SD15_UPSCALER_LOW_RES_SCHEDULER), None)]
    for train_sched, sample_sched in pairs:
        assert train_sched.config.beta_schedule == "scaled_linear"
        if sample_sched is not None:
            assert torch.allclose(train_sched.alphas_cumprod, sample_sched.alphas_cumprod)
            assert train_sched.config.prediction_type == sample_sched.config.prediction_type
    assert ddpm().alphas_cumprod[-1].item() == pytest.approx(0.00466, rel=1e-2)  # SD 1.5's alpha_bar at t=999
    low = ddpm(cu_upscale.SD15_UPSCALER_LOW_RES_SCHEDULER).config
    assert (low.beta_start, low.beta_end) == (cu_upscale.SD15_UPSCALER_LOW_RES_SCHEDULER["beta_start"],
                                              cu_upscale.SD15_UPSCALER_LOW_RES_SCHEDULER["beta_end"])


def test_offset_noise_starts_at_refine_from():
    """Before ``refine_from`` the noise is plain (same random numbers as a run without offset noise); from it on
    every image and channel gets its own constant of std ``noise_offset``."""
    from training.train import _Diffusion, ddpm

    d = _Diffusion()
    d.cfg, d.sched = config.stage_config("text2img", refine_from=5, noise_offset=0.2), ddpm()
    lat = torch.zeros(256, 4, 16, 16)
    plain = torch.randn(lat.shape, generator=torch.Generator().manual_seed(0))
    _, before, t_before = d.noised(lat, torch.Generator().manual_seed(0), step=4)
    _, after, t_after = d.noised(lat, torch.Generator().manual_seed(0), step=5)
    assert torch.equal(before, plain) and torch.equal(t_before, t_after)
    offset = after - plain
    assert torch.allclose(offset, offset[..., :1, :1].expand_as(offset), atol=1e-6)  # constant over each channel
    assert 0.15 < offset[..., 0, 0].std().item() < 0.25


def test_restore_from_the_committed_weights(tmp_path):
    """``python -m training restore`` turns data/tiny back into finished checkpoints: exporting them gives the
    same fp16 tensors, and a stage continues from them (fresh optimizer)."""
    from safetensors.torch import load_file

    from course_utils import build
    from training.export import export
    from training.restore import STAGES, restore

    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    written = restore(runs, build.TINY_DIR)
    assert set(written) == set(STAGES) and written["text2img"] >= 10000
    to = tmp_path / "tiny"
    export(runs, to, stages=["text2img", "inpaint", "upscale"])
    for part in ("text2img/unet", "text2img/text_encoder", "text2img/vae", "inpaint/unet", "upscale/unet", "upscale/vae"):
        (a,), (b,) = (list((d / part).glob("*.safetensors")) for d in (build.TINY_DIR, to))
        ta, tb = load_file(a), load_file(b)
        assert ta.keys() == tb.keys(), part
        for k in ta:  # upscale/vae is recomputed from the rounded VAE (upscaler_vae): within one fp16 step
            same = torch.equal(ta[k], tb[k]) if part != "upscale/vae" else torch.allclose(ta[k].float(), tb[k].float(), rtol=1e-3, atol=1e-6)
            assert same, (part, k)
    with pytest.raises(SystemExit, match="exists"):
        restore(runs, build.TINY_DIR)
    step = written["upscale"]
    train("upscale", out=runs, steps=step + 1, resume=True, overrides=SMALL, quiet=True)
    ck = torch.load(runs / "upscale" / "ckpt.pt", weights_only=False)
    assert ck["step"] == step + 1 and "optimizer" in ck
