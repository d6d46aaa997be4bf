"""Smoke tests of the training code (training/): every stage runs a few steps on the CPU, resumes exactly, exports;
the command line's settings (``--set``, ``--overrides``) and the override files of the runs that made data/tiny."""

import json

import pytest
import torch

from course_utils import community, latents
from course_utils.models import builders, configs, tiny
from training import config, data
from training.__main__ import main, parse_sets
from training.train import learning_rate, train

SMALL = dict(batch_size=2, warmup=0, log_every=1, ckpt_every=2)
FAST = dict(  # per stage: the cheapest settings that still run every code path
    vae=dict(SMALL, scale_samples=32, eval_images=8),
    # the recipe's offset noise, open captions and bare-word captions; the shared scorer with 1 seed, 2 steps
    text2img=dict(SMALL, eval_seeds=1, eval_steps=2, eval_every=0, cache_scenes=16),
    inpaint=SMALL,
    upscale=SMALL,
    # the style stages: cached latents of 8 scenes (finetune, lora) or rendered every step (ti); their own evaluation, 1 seed, 2 steps
    finetune=dict(SMALL, cache_scenes=8, eval_seeds=1, eval_steps=2),
    lora=dict(SMALL, cache_scenes=8, eval_seeds=1, eval_steps=2),
    ti=dict(SMALL, cache_scenes=0, eval_seeds=1, eval_steps=2),
    # the ControlNet: 8 cached scenes with their edge maps; its score on 1 held-out condition per shape, 2 steps
    controlnet=dict(SMALL, cache_scenes=8, eval_per_shape=1, eval_steps=2, eval_every=0),
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every stage trained for 2 steps into one runs folder (the VAE for 30, to check that it learns)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs")
    results = {
        "vae": train(
            "vae", out=out, steps=30, overrides=dict(FAST["vae"], batch_size=4, lr=2e-3, data_repeat=1), quiet=True
        )
    }
    for name in ("text2img", "inpaint", "upscale", "finetune", "lora", "ti", "controlnet"):
        results[name] = train(name, out=out, steps=2, overrides=FAST[name], quiet=True)
    return out, results


def _log(out, stage):
    return [json.loads(line) for line in (out / stage / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_vae_learns_and_measures_scaling_factor(runs):
    out, results = runs
    losses = [r["loss"] for r in _log(out, "vae") if "loss" in r]
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    sf = results["vae"]["scaling_factor"]
    assert sf == pytest.approx(1 / results["vae"]["latent_std"])
    assert sf != configs.TINY_VAE["scaling_factor"] and sf != 0.18215
    ck = torch.load(out / "vae" / "ckpt.pt", weights_only=False)
    assert ck["done"] and ck["step"] == 30 and set(ck) >= {"modules", "optimizer", "ema", "rng", "step"}


@pytest.mark.slow
def test_every_stage_logs_finite_losses(runs):
    out, results = runs
    for stage in config.STAGES:
        rows = [r for r in _log(out, stage) if "loss" in r]
        assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows), stage
        assert (out / stage / "config.json").exists()
    assert set(results["text2img"]) >= {"seen_color", "held_out_color_and_shape"}  # course_utils.scores
    n = config.STAGES["ti"].n_vectors
    assert results["ti"]["tokens"] == [tiny.EMBEDDING_TOKEN] + [f"{tiny.EMBEDDING_TOKEN}_{i}" for i in range(1, n)]
    assert results["ti"]["vectors"].shape == (n, configs.TINY_TEXT_ENCODER["hidden_size"])
    # the style stages score themselves (course_utils.scores.outline_share): with and, for the fine-tune, without the trigger
    # and with another word in its place
    assert (
        set(results["finetune"]) >= {"style", "style_plain", "style_other_word"}
        and "style" in results["lora"]
        and "style" in results["ti"]
    )
    cache = torch.load(out / "finetune" / "latents.pt", weights_only=False)
    assert cache["mean"].shape == cache["styled_mean"].shape == (8, 4, 16, 16) and len(cache["labels"]) == 8
    # the ControlNet: its score (course_utils.scores.control_scores), its cache of latents and Canny edge maps
    assert set(results["controlnet"]) >= {"follows", "mean_iou", "color", "shape", "background"}
    cache = torch.load(out / "controlnet" / "conditions.pt", weights_only=False)
    assert cache["mean"].shape == (8, 4, 16, 16) and cache["edges"].shape == (8, 64, 64)
    assert set(cache["edges"].unique().tolist()) == {0, 255}
    ck = torch.load(out / "controlnet" / "ckpt.pt", weights_only=False)
    assert set(ck["modules"]) == {"controlnet"}  # only the copy trains and is saved; the UNet stays frozen


@pytest.mark.slow
def test_every_stage_trains_in_float16_without_nan_or_inf(runs, tmp_path):
    """mixed_precision="fp16" as diffusers' scripts do it: frozen models in float16, trained weights in float32,
    autocast, a GradScaler. Every stage's losses and trained weights stay finite (float16 weights under AdamW
    would turn NaN at the first step: lesson 10, exercise 4)."""
    from training.train import HALF, IMPL, half_precision

    src, _ = runs
    # the later stages start from the fixture's vae and text2img (text2img itself trains in a folder of its own)
    for folder, dependencies in ((tmp_path, ("vae", "text2img")), (tmp_path / "t2i", ("vae",))):
        for dependency in dependencies:
            (folder / dependency).mkdir(parents=True)
            (folder / dependency / "ckpt.pt").symlink_to(src / dependency / "ckpt.pt")
    for name in ("text2img", "inpaint", "upscale", "finetune", "lora", "ti", "controlnet"):
        out = tmp_path if name != "text2img" else tmp_path / "t2i"
        train(name, out=out, steps=2, overrides=dict(FAST[name], mixed_precision="fp16"), quiet=True)
        rows = [r for r in _log(out, name) if "loss" in r]
        assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows), (name, rows)
        ck = torch.load(out / name / "ckpt.pt", weights_only=False)
        for module, state in ck["modules"].items():
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), (name, module)
    stage = IMPL["lora"](config.stage_config("lora", **FAST["lora"]), tmp_path)  # what the rule did to the models
    half_precision(stage, HALF["fp16"])
    trained = {id(p) for p in stage.params}
    assert all(p.dtype == torch.float32 for p in stage.params)
    assert {p.dtype for p in stage.unet.parameters() if id(p) not in trained} == {torch.float16}
    assert {p.dtype for p in stage.vae.parameters()} == {torch.float16}


@pytest.mark.slow
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
    with pytest.raises(config.TrainingError):  # no silent overwrite
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


@pytest.mark.slow
def test_export_loads_in_diffusers(runs, tmp_path, monkeypatch):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, StableDiffusionUpscalePipeline
    from PIL import Image

    from training.export import export

    out, results = runs
    to = tmp_path / "tiny"
    sizes = export(out, to)
    assert set(sizes) == {"text2img", "inpaint", "upscale", "community", "lora", "ti", "controlnet"}
    assert (to / "training_results.json").exists()
    kw = dict(num_inference_steps=1, output_type="np")
    pipe = StableDiffusionPipeline.from_pretrained(to / "text2img", dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32
    assert pipe.vae.config.scaling_factor == pytest.approx(results["vae"]["scaling_factor"], rel=1e-3)
    assert pipe("a red circle on a blue background", **kw).images.shape == (1, 64, 64, 3)
    pipe.load_lora_weights(to / "outline_lora")
    token = tiny.EMBEDDING_TOKEN
    pipe.load_textual_inversion(to / "outline_embedding.safetensors", token=token)
    assert pipe(f"a red circle in {token} style", **kw).images.shape == (1, 64, 64, 3)
    # the model layer assembles the inpainting and upscaling pipelines from text2img/ plus their own UNets
    monkeypatch.setattr(tiny, "TINY_DIR", to)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    inp = builders.tiny_inpaint()
    assert isinstance(inp, StableDiffusionInpaintPipeline) and inp.unet.config.in_channels == 9
    img, mask = Image.new("RGB", (64, 64), "blue"), Image.new("L", (64, 64), 255)
    assert inp("a red circle", image=img, mask_image=mask, strength=1.0, **kw).images.shape == (1, 64, 64, 3)
    up = builders.tiny_upscale()
    assert isinstance(up, StableDiffusionUpscalePipeline) and up.unet.config.in_channels == 7
    assert up.vae.config.scaling_factor == pytest.approx(0.08333)
    assert torch.equal(up.vae.decoder.conv_out.weight, pipe.vae.decoder.conv_out.weight)  # the same VAE weights
    assert up("a red circle", image=Image.new("RGB", (16, 16), "red"), **kw).images.shape == (1, 64, 64, 3)
    com = builders.tiny_community()
    assert com(f"a red circle in {tiny.STYLE_WORD} style", **kw).images.shape == (1, 64, 64, 3)
    assert tiny.community_file() == to / "community.safetensors"
    cn = builders.tiny_controlnet()  # text2img/ plus controlnet/
    assert type(cn).__name__ == "StableDiffusionControlNetPipeline" and cn.controlnet.dtype == torch.float32
    assert cn("a red circle", image=Image.new("RGB", (64, 64)), **kw).images.shape == (1, 64, 64, 3)
    record = json.loads((to / "training_results.json").read_text())["results"]["controlnet"]["record"]
    assert record["eval_steps"] == [2] and len(record["follows"]) == 1
    total = sum(f.stat().st_size for f in to.rglob("*") if f.is_file())
    assert total <= 40e6, f"data/tiny would be {total / 1e6:.1f} MB (issue 4: <= 40 MB)"
    # only the style models: text2img/, inpaint/ and upscale/ are not written
    only = tmp_path / "style_only"
    assert set(export(out, only, ["finetune", "lora", "ti"])) == {"community", "lora", "ti"}
    assert sorted(p.name for p in only.iterdir()) == [
        "community.safetensors",
        "outline_embedding.safetensors",
        "outline_lora",
        "training_results.json",
    ]


def test_training_schedules_are_the_pipelines():
    """The UNets learn on exactly the noise schedule their pipelines sample with (SD 1.5's; the upscaler's)."""
    from training.checkpoints import ddpm

    x4 = builders.x4_schedulers()
    pairs = [
        (ddpm(), builders.pndm_scheduler()),
        (ddpm(configs.X4_UPSCALER_SCHEDULER), x4["scheduler"]),
        (ddpm(configs.X4_UPSCALER_LOW_RES_SCHEDULER), x4["low_res_scheduler"]),
    ]
    for train_sched, sample_sched in pairs:
        assert train_sched.config.beta_schedule == "scaled_linear"
        if sample_sched is not None:
            assert torch.allclose(train_sched.alphas_cumprod, sample_sched.alphas_cumprod)
            assert train_sched.config.prediction_type == sample_sched.config.prediction_type
    assert ddpm().alphas_cumprod[-1].item() == pytest.approx(0.00466, rel=1e-2)  # SD 1.5's alpha_bar at t=999
    low = ddpm(configs.X4_UPSCALER_LOW_RES_SCHEDULER).config
    assert (low.beta_start, low.beta_end) == (
        configs.X4_UPSCALER_LOW_RES_SCHEDULER["beta_start"],
        configs.X4_UPSCALER_LOW_RES_SCHEDULER["beta_end"],
    )


def test_training_captions_put_the_trigger_where_lesson_7_does():
    """The style stages learn the trigger word and the embedding's token where lesson 7 and the evaluator write them: first."""
    for caption in ("a red circle", "a blue square on a yellow background"):
        assert data.with_trigger(caption, tiny.STYLE_WORD) == community.style_prompt(caption)
        assert data.with_embedding(caption, tiny.EMBEDDING_TOKEN) == community.embedding_prompt(caption)
        assert data.with_trigger(caption, "") == caption  # the LoRA: no trigger
    assert data.with_trigger("", tiny.STYLE_WORD) == "outline style"  # an empty caption keeps only the trigger


def test_the_cached_draw_takes_the_outlined_encoding_where_styled():
    """The cached stages' draw (``course_utils.latents.draw``): rows ``index``, the outlined encoding where
    ``styled``, and exactly one ``randn`` from the generator (the stages draw ``index`` and ``styled`` before it)."""
    n, shape = 3, (4, 2, 2)
    cache = dict(
        mean=torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, *shape).clone(),
        std=torch.full((n, *shape), 0.5),
        styled_mean=-torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, *shape).clone(),
        styled_std=torch.zeros(n, *shape),
    )
    gen, same = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    lat = latents.draw(cache, torch.tensor([2, 1, 2]), 2.0, gen, styled=torch.tensor([True, False, False]))
    eps = torch.randn((3, *shape), generator=same)
    assert torch.equal(lat[0], torch.full(shape, -4.0))  # scene 2 outlined: its mean, std 0
    assert torch.equal(lat[1], (1 + 0.5 * eps[1]) * 2.0) and torch.equal(lat[2], (2 + 0.5 * eps[2]) * 2.0)
    assert torch.equal(gen.get_state(), same.get_state())


def test_offset_noise():
    """Without offset noise the noise is plain; with it every image and channel gets its own constant of std
    ``noise_offset``, drawn after the timesteps (so the noise and timesteps of a step are the same either way)."""
    from training.checkpoints import ddpm
    from training.stages import DiffusionStage

    plain_cfg, offset_cfg = (config.stage_config("text2img", noise_offset=v) for v in (0.0, 0.2))
    d = DiffusionStage(plain_cfg, None)
    d.sched = ddpm()
    lat = torch.zeros(256, 4, 16, 16)
    plain = torch.randn(lat.shape, generator=torch.Generator().manual_seed(0))
    _, before, t_before = d.noised(lat, torch.Generator().manual_seed(0))
    d.cfg = offset_cfg
    _, after, t_after = d.noised(lat, torch.Generator().manual_seed(0))
    assert torch.equal(before, plain) and torch.equal(t_before, t_after)
    offset = after - plain
    assert torch.allclose(offset, offset[..., :1, :1].expand_as(offset), atol=1e-6)  # constant over each channel
    assert 0.15 < offset[..., 0, 0].std().item() < 0.25


@pytest.mark.slow
def test_restore_from_the_committed_weights(tmp_path):
    """``python -m training restore`` turns data/tiny back into finished checkpoints: exporting them gives the
    same fp16 tensors, and a stage continues from them (fresh optimizer)."""
    from safetensors.torch import load_file

    from training.export import export
    from training.restore import STAGES, restore

    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    written = restore(runs, tiny.TINY_DIR)
    assert set(written) == set(STAGES) and written["text2img"] >= 10000
    to = tmp_path / "tiny"
    export(runs, to, stages=["text2img", "inpaint", "upscale"])
    for part in (
        "text2img/unet",
        "text2img/text_encoder",
        "text2img/vae",
        "inpaint/unet",
        "upscale/unet",
        "upscale/vae",
    ):
        (a,), (b,) = (list((d / part).glob("*.safetensors")) for d in (tiny.TINY_DIR, to))
        ta, tb = load_file(a), load_file(b)
        assert ta.keys() == tb.keys(), part
        for k in ta:  # upscale/vae is recomputed from the rounded VAE (upscaler_vae): within one fp16 step
            same = (
                torch.equal(ta[k], tb[k])
                if part != "upscale/vae"
                else torch.allclose(ta[k].float(), tb[k].float(), rtol=1e-3, atol=1e-6)
            )
            assert same, (part, k)
    with pytest.raises(config.TrainingError, match="exists"):
        restore(runs, tiny.TINY_DIR)
    step = written["upscale"]
    train("upscale", out=runs, steps=step + 1, resume=True, overrides=SMALL, quiet=True)
    ck = torch.load(runs / "upscale" / "ckpt.pt", weights_only=False)
    assert ck["step"] == step + 1 and "optimizer" in ck


# --- settings from the command line and from override files -------------------------------------------
def test_set_parses_typed_values():
    got = parse_sets(
        ["batch_size=8", "lr=1e-3", "target_modules=('to_q',)", "trigger=outline", "noise_offset=0"], ["lora"]
    )
    assert got == dict(batch_size=8, lr=0.001, target_modules=("to_q",), trigger="outline", noise_offset=0.0)
    assert type(got["batch_size"]) is int and type(got["lr"]) is float and type(got["noise_offset"]) is float
    assert parse_sets(["target_modules=['to_q', 'to_v']"], ["lora"]) == dict(target_modules=("to_q", "to_v"))
    assert parse_sets(['trigger=""'], ["lora"]) == dict(trigger="")
    # `all`: a key of any stage is accepted (each stage takes its own keys later)
    assert parse_sets(["rank=4", "kl_weight=1e-5"], list(config.STAGES)) == dict(rank=4, kl_weight=1e-5)


@pytest.mark.parametrize(
    "item, message",
    [
        ("batchsize=8", "no such setting"),
        ("rank=8", "no such setting"),  # a LoRA setting, not text2img's
        ("batch_size=eight", "must be int"),
        ("lr=fast", "must be float"),
        ("batch_size", "KEY=VALUE"),
        ("=3", "KEY=VALUE"),
    ],
)
def test_set_rejects_unknown_keys_and_wrong_types(item, message):
    with pytest.raises(config.TrainingError, match=message):
        parse_sets([item], ["text2img"])


def test_main_rejects_a_bad_set_before_training(tmp_path):
    with pytest.raises(SystemExit, match="no such setting"):
        main(["vae", "--out", str(tmp_path), "--set", "batchsize=8"])
    assert not (tmp_path / "vae").exists()  # failed before anything was written


HISTORY = sorted(config.HISTORY_DIR.glob("*.toml"))


def test_the_override_files_exist():
    assert len(HISTORY) >= 10 and {config.load_overrides(f)["stage"] for f in HISTORY} == set(config.STAGES)


@pytest.mark.parametrize("path", HISTORY, ids=[p.name for p in HISTORY])
def test_override_file_names_only_existing_settings(path):
    o = config.load_overrides(path)
    assert path.name.split("_")[1].split(".")[0] == o["stage"]
    fields = config.STAGES[o["stage"]].__dataclass_fields__
    assert o["settings"] and set(o["settings"]) <= set(fields)
    cfg = config.stage_config(o["stage"], **o["settings"])
    assert cfg.steps > o["from_step"] >= 0


def test_override_files_replay_the_runs_that_made_data_tiny():
    """The files, one after another per stage, continue each other and give every step the learning rate and
    data settings of the committed runs (as training/config.py's ``lr_later``, ``refine_from`` and ``words_from``
    gave them before the recipe replaced that history)."""
    history = dict(  # lr factors from a step on; the data settings from a step on
        text2img=dict(
            lr=[(3400, 0.2), (7000, 0.5), (9000, 0.1), (10000, 0.2)],
            data=[
                (0, dict(noise_offset=0.0, open_captions=0.0, word_captions=0.0)),
                (7000, dict(noise_offset=0.2, open_captions=0.2, word_captions=0.0)),
                (10000, dict(noise_offset=0.2, open_captions=0.2, word_captions=0.25)),
            ],
        ),
        inpaint=dict(lr=[(1700, 0.2), (2000, 0.5), (2700, 0.2)], data=[(0, dict(noise_offset=0.0))]),
        upscale=dict(
            lr=[(2000, 0.2), (2400, 0.6), (4400, 0.12)],
            data=[(0, dict(low_noise_share=0.5)), (2400, dict(low_noise_share=1.0))],
        ),
    )
    end = {}
    for path in HISTORY:
        o = config.load_overrides(path)
        stage, cfg = o["stage"], config.stage_config(o["stage"], **o["settings"])
        assert o["from_step"] == end.get(stage, 0), path.name  # each file continues where the last one stopped
        end[stage] = cfg.steps
        if stage not in history:
            continue
        base = config.STAGES[stage]
        for step in range(o["from_step"], cfg.steps):
            lr = base.lr * min(1.0, (step + 1) / base.warmup)
            for at, factor in history[stage]["lr"]:
                lr = base.lr * factor if step >= at else lr
            assert learning_rate(cfg, step) == lr, (path.name, step)
            data = [d for at, d in history[stage]["data"] if step >= at][-1]
            assert {k: getattr(cfg, k) for k in data} == data, (path.name, step)
    assert end == {name: s.steps for name, s in config.STAGES.items()}  # the committed models' steps = the recipe's


def test_override_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('stage = "text2img"\n[settings]\nlr_later = [[7000, 0.5]]\n')
    with pytest.raises(config.TrainingError, match="no setting"):
        config.load_overrides(bad)
    bad.write_text('stage = "vae"\n[settings]\nsteps = 10\n')
    with pytest.raises(config.TrainingError, match="for stage 'vae', not 'text2img'"):
        config.load_overrides(bad, "text2img")
    with pytest.raises(SystemExit, match="continues text2img at step 7000"):  # a resumed run's file needs --resume
        main(["text2img", "--out", str(tmp_path), "--overrides", str(_history_file("03_"))])


def _history_file(prefix):
    (path,) = [p for p in HISTORY if p.name.startswith(prefix)]
    return path


@pytest.mark.slow
def test_main_applies_an_override_file_then_set(tmp_path):
    f = tmp_path / "vae.toml"
    f.write_text('stage = "vae"\nfrom_step = 0\n[settings]\nsteps = 2\nbatch_size = 3\nlr = 1e-3\n')
    main(
        [
            "vae",
            "--out",
            str(tmp_path),
            "--overrides",
            str(f),
            "--quiet",
            "--set",
            "batch_size=2",
            "--set",
            "scale_samples=8",
            "--set",
            "eval_images=4",
            "--set",
            "warmup=0",
        ]
    )
    written = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert written["steps"] == 2 and written["settings"]["batch_size"] == 2 and written["settings"]["lr"] == 1e-3


# --- python -m training diagnose --------------------------------------------------------------------------
@pytest.mark.slow
def test_diagnose_runs_on_the_committed_weights_and_on_a_checkpoint(runs, capsys):
    out, _ = runs
    rows = main(["diagnose", "--seeds", "0-1", "--steps", "2", "--guidance", "3", "--full"])
    (row,) = rows
    assert row["guidance"] == 3.0 and set(row["words"]) == {"circle", "square", "triangle"}
    assert sum(sum(c.values()) for c in row["words"].values()) == 3 * 2
    assert all(sum(c.values()) <= 2 for c in row["shapes"].values())  # at most one per seed
    assert {"seen_color", "negative_removes_shape"} <= set(row["scores"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["guidance"] == 3.0
    (row,) = main(
        ["diagnose", "--ckpt", str(out / "text2img" / "ckpt.pt"), "--seeds", "0-0", "--steps", "1", "--quiet"]
    )
    assert set(row) == {"guidance", "shapes", "words"}
    with pytest.raises(SystemExit, match="not text2img"):
        main(["diagnose", "--ckpt", str(out / "vae" / "ckpt.pt"), "--quiet"])
