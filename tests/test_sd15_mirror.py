"""The `sd15` path, run offline: lookalike repositories behind a real Hub mirror (olah), through HF_ENDPOINT.

Each scenario runs the course in a fresh Python process, as a learner would, with ``HF_ENDPOINT``
pointing at the mirror and an empty ``HF_HOME`` (huggingface_hub reads both once, at import).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lanes import full_size_cells_of_lesson_9, run_every_lesson

from course_utils.commands import hub_mirror
from course_utils.models import hub
from course_utils.paths import ROOT

pytestmark = pytest.mark.slow

ROLES = ("text2img", "img2img", "inpaint", "upscale", "community", "controlnet")

# Loads every role on sd15 and runs each pipeline for one small step; prints where each came from.
LOAD_EVERY_ROLE = """
import json, torch
import course_utils as cu
from course_utils.models import hub
from PIL import Image
out = {}
for role in %r:
    pipe = cu.load_pipeline(role, profile="sd15", device="cpu")
    kw = dict(num_inference_steps=1, output_type="np", generator=torch.Generator().manual_seed(0))
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = Image.new("RGB", (size, size), "gray")
    if role == "img2img":
        kw.update(image=image, strength=1.0)
    elif role == "inpaint":
        kw.update(image=image, mask_image=Image.new("L", (size, size), 255), height=size, width=size)
    elif role == "upscale":
        kw.update(image=image.resize((16, 16)))
    elif role == "controlnet":
        kw.update(image=image, height=size, width=size)
    else:
        kw.update(height=size, width=size)
    shape = pipe("a photograph", **kw).images.shape
    out[role] = dict(source=str(cu.model_source(role, profile="sd15")), shape=list(shape), dtype=str(pipe.unet.dtype))
print("RESULT " + json.dumps(out))
"""


def course_env(endpoint: str, hf_home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "COURSE_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        COURSE_PROFILE="sd15",
        COURSE_DEVICE="cpu",
        COURSE_CACHE=os.environ.get("COURSE_CACHE", str(hf_home / "course")),
        **extra,
    )
    return env


def python(code: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def served_files(log: Path) -> list[str]:
    """The files the mirror sent (GET .../resolve/...), from olah's log."""
    return [line for line in log.read_text(errors="replace").splitlines() if "GET" in line and "/resolve/" in line]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, lookalikes):
    """olah serving the test run's one build of the lookalikes (tests/conftest.py)."""
    root = tmp_path_factory.mktemp("hub-mirror")
    mirrors = next(iter(lookalikes.values())).parents[2]
    process, endpoint = hub_mirror.start(root, mirrors=mirrors)
    yield dict(root=root, mirrors=mirrors, endpoint=endpoint, log=root / "olah.log", process=process)
    hub_mirror.stop(process)


def test_every_role_downloads_then_loads_offline_from_the_cache(mirror, tmp_path):
    hf_home = tmp_path / "hf"
    online = result(python(LOAD_EVERY_ROLE % (ROLES,), course_env(mirror["endpoint"], hf_home)))
    assert set(online) == set(ROLES)
    before = len(served_files(mirror["log"]))
    assert before > 0  # the downloads went through the mirror
    again = result(python(LOAD_EVERY_ROLE % (ROLES,), course_env(mirror["endpoint"], hf_home)))  # online, warm cache
    assert again == online and len(served_files(mirror["log"])) == before  # zero files sent again
    offline = result(python(LOAD_EVERY_ROLE % (ROLES,), course_env(mirror["endpoint"], hf_home, HF_HUB_OFFLINE="1")))
    for role in ROLES:
        assert offline[role]["source"].startswith(str(hf_home)), (role, offline[role]["source"])  # a cache snapshot
        assert offline[role]["shape"] == online[role]["shape"] and offline[role]["dtype"] == "torch.float32"
    assert len(served_files(mirror["log"])) == before  # nothing downloaded again


def test_download_command_then_course_models_dir(mirror, tmp_path):
    models = tmp_path / "models"
    env = course_env(mirror["endpoint"], tmp_path / "hf")
    proc = subprocess.run(
        [sys.executable, "-m", "course_utils", "download", "sd15", "--to", str(models)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for repo in set(hub.SD15_REPOS.values()):
        assert (models / repo / "model_index.json").exists(), repo
        fp16 = list((models / repo).glob("*/*.fp16.safetensors"))
        assert bool(fp16) == (repo in hub.FP16_VARIANTS), repo  # the GPU's weights: the fp16 variant where there is one
    assert (models / hub.EASYNEGATIVE_REPO / hub.EASYNEGATIVE_FILE).exists()
    assert (models / hub.LCM_LORA_REPO / hub.LCM_LORA_FILE).exists()
    assert (models / hub.STYLE_LORA_REPO / hub.STYLE_LORA_FILE).exists()
    assert (models / hub.CONTROLNET_REPO / hub.CONTROLNET_FILES["fp16"]).exists()  # the GPU's ControlNet weights only
    assert not (models / hub.CONTROLNET_REPO / hub.CONTROLNET_FILES[None]).exists()
    # the mirror stopped mattering: offline, an empty cache, only the folder
    offline = course_env("http://127.0.0.1:9", tmp_path / "empty-hf", HF_HUB_OFFLINE="1", COURSE_MODELS_DIR=str(models))
    loaded = result(python(LOAD_EVERY_ROLE % (ROLES,), offline))
    for role in ROLES:
        assert loaded[role]["source"].startswith(str(models)) and loaded[role]["dtype"] == "torch.float32", role


def test_fp16_only_cache_is_found_and_used_on_a_cpu(mirror, tmp_path):
    """What a GPU run leaves in the cache (fp16 files only) is found offline: no fallback to tiny, no fp32 download."""
    hf_home = tmp_path / "hf"
    repo = hub.SD15_REPOS["text2img"]
    fetch = f"from course_utils.models import hub; print('FETCHED', hub.fetch_pipeline({repo!r}, 'fp16'))"  # a GPU's download
    proc = python(fetch, course_env(mirror["endpoint"], hf_home))
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = [p.name for p in hf_home.rglob("snapshots/*/*/*") if p.suffix in (".safetensors", ".bin")]
    assert weights and all(".fp16." in name for name in weights), weights  # the fp16 files only
    check = (
        "from huggingface_hub import snapshot_download\n"
        "from course_utils.models import hub\n"
        f"try:\n    snapshot_download({repo!r}, local_files_only=True)\n    print('PATTERNLESS ok')\n"
        "except Exception as err:\n    print('PATTERNLESS', type(err).__name__)\n" + LOAD_EVERY_ROLE % (("text2img",),)
    )
    proc = python(check, course_env(mirror["endpoint"], hf_home, HF_HUB_OFFLINE="1"))
    loaded = result(proc)
    assert "PATTERNLESS IncompleteSnapshotError" in proc.stdout  # the huggingface_hub behaviour the course works around
    assert loaded["text2img"]["source"].startswith(str(hf_home)) and loaded["text2img"]["dtype"] == "torch.float32"


def commit_copy(mirror, source_id: str, copy_id: str, change=None) -> Path:
    """A copy of a lookalike under another id in the mirror (as a community copy would be), optionally changed
    by ``change(folder)``, committed as one git commit on main."""
    src = mirror["mirrors"] / "models" / source_id
    copy = mirror["mirrors"] / "models" / copy_id
    if not copy.exists():
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns(".git"))
        if change:
            change(copy)
        git = ["git", "-C", str(copy), "-c", "user.name=course", "-c", "user.email=course@localhost"]
        subprocess.run(["git", "-C", str(copy), "init", "-q", "-b", "main"], check=True)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", f"copy of {source_id}"], check=True)
    return copy


def test_missing_repo_is_missing_not_unreachable_and_a_known_copy_is_tried_next(mirror, tmp_path):
    env = course_env(mirror["endpoint"], tmp_path / "hf", COURSE_HUB_UPSCALE="nobody/no-such-upscaler")
    code = (
        "import course_utils as cu\n"
        "try:\n    cu.load_pipeline('upscale', profile='sd15', device='cpu')\n"
        "except cu.CourseError as err:\n    print('ERROR', type(err).__name__, err)\n"
    )
    proc = python(code, env)
    assert "ERROR RepoMissing" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert (
        "nobody/no-such-upscaler" in proc.stdout and "is missing" in proc.stdout and "not reachable" not in proc.stdout
    )
    assert "COURSE_HUB_UPSCALE" in proc.stdout
    # the first repository is gone, the second a copy under another id (as sd2-community's is): each try printed
    commit_copy(mirror, hub.SD15_REPOS["upscale"], "course-test/x4-upscaler-copy")
    hf_home = tmp_path / "hf-copy"
    env = course_env(
        mirror["endpoint"], hf_home, COURSE_HUB_UPSCALE="nobody/no-such-upscaler,course-test/x4-upscaler-copy"
    )
    proc = python(LOAD_EVERY_ROLE % (("upscale",),), env)
    loaded = result(proc)
    assert "course-test--x4-upscaler-copy" in loaded["upscale"]["source"]
    tries = [line for line in proc.stdout.splitlines() if line.startswith("course_utils: upscale:")]
    assert tries == [
        f"course_utils: upscale: trying nobody/no-such-upscaler on {mirror['endpoint']} (1 of 2)",
        "course_utils: upscale: nobody/no-such-upscaler is missing there; trying the next known copy",
        f"course_utils: upscale: trying course-test/x4-upscaler-copy on {mirror['endpoint']} (2 of 2)",
    ], proc.stdout
    # offline, the copy is found in the cache without asking anyone
    offline = result(python(LOAD_EVERY_ROLE % (("upscale",),), dict(env, HF_HUB_OFFLINE="1")))
    assert (
        offline["upscale"]["source"] == loaded["upscale"]["source"]
        and offline["upscale"]["shape"] == loaded["upscale"]["shape"]
    )
    # every known copy missing: one message naming each
    env = course_env(
        mirror["endpoint"], tmp_path / "hf-none", COURSE_HUB_UPSCALE="nobody/no-such-upscaler,nobody/no-copy-either"
    )
    proc = python(code, env)
    assert "ERROR RepoMissing None of upscale's known repositories" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "nobody/no-such-upscaler, nobody/no-copy-either" in proc.stdout


def pickled_folders(folder: Path) -> None:
    """Counterfeit-V2.5's diffusers folders as an early-2023 conversion wrote them: pickled ``.bin`` weights only
    (``pytorch_model.bin`` for transformers' models, ``diffusion_pytorch_model.bin`` for diffusers'), no safetensors."""
    import torch
    from safetensors.torch import load_file

    for f in folder.glob("*/*.safetensors"):
        name = "pytorch_model.bin" if f.name == "model.safetensors" else f.name.replace(".safetensors", ".bin")
        torch.save(load_file(str(f)), f.with_name(name))
        f.unlink()
    for f in folder.glob("*.safetensors"):  # the single files: not what this test is about
        f.unlink()


def test_counterfeit_with_bin_only_folders_downloads_and_loads_online_then_offline(mirror, tmp_path):
    """A repository whose folders hold only .bin files: the plan from its file list fetches them, the pipeline
    loads, and the cache lookup finds the .bin-only snapshot offline."""
    copy = commit_copy(mirror, hub.COUNTERFEIT_REPO, "course-test/counterfeit-bin-only", pickled_folders)
    assert list(copy.glob("*/*.bin")) and not list(copy.rglob("*.safetensors"))
    hf_home = tmp_path / "hf"
    env = course_env(mirror["endpoint"], hf_home, COURSE_HUB_COMMUNITY="course-test/counterfeit-bin-only")
    before = len(served_files(mirror["log"]))
    online = result(python(LOAD_EVERY_ROLE % (("community",),), env))
    sent = [line for line in served_files(mirror["log"])[before:] if "counterfeit-bin-only" in line]
    assert any(".bin" in line for line in sent) and not any(".safetensors" in line for line in sent), sent
    assert "course-test--counterfeit-bin-only" in online["community"]["source"]
    offline = result(python(LOAD_EVERY_ROLE % (("community",),), dict(env, HF_HUB_OFFLINE="1")))
    assert offline == online
    assert len(served_files(mirror["log"])) == before + len(sent)  # nothing downloaded again


def test_server_stopped_gives_the_three_ways_out(tmp_path):
    root = tmp_path / "stopped"
    process, endpoint = hub_mirror.start(root, repos=())  # a server that stops: nothing to serve
    hub_mirror.stop(process)
    code = (
        "import course_utils as cu\n"
        "try:\n    cu.load_pipeline('text2img', profile='sd15', device='cpu')\n"
        "except cu.CourseError as err:\n    print('ERROR', type(err).__name__, err)\n"
    )
    proc = python(code, course_env(endpoint, tmp_path / "hf"))
    assert "ERROR CourseError" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    for needle in ("not reachable", "HF_ENDPOINT", "COURSE_MODELS_DIR", "COURSE_PROFILE=tiny"):
        assert needle in proc.stdout, needle


LARGE = (
    96 * 2**20
)  # bytes: the test kills the server once 1 MB has arrived, so the rest is still on its way (was 256 MB: +25 s)


def test_server_killed_mid_download_then_resumed(tmp_path):
    """The Wi-Fi drops during a large download: nothing truncated is loaded, the message says so, the next run completes."""
    root = tmp_path / "flaky"
    process, endpoint = hub_mirror.start(root, repos=())  # its one repository is made below
    port = int(endpoint.rsplit(":", 1)[1])
    # a large file in a repository of its own, committed into the mirror
    repo = root / "mirrors" / "models" / "course-test" / "large"
    (repo / "unet").mkdir(parents=True)
    (repo / "model_index.json").write_text("{}")
    with open(repo / "unet" / "diffusion_pytorch_model.safetensors", "wb") as f:
        f.write(os.urandom(LARGE))
    git = [
        "git",
        "-C",
        str(repo),
        "-c",
        "user.name=course",
        "-c",
        "user.email=course@localhost",
        "-c",
        "core.compression=0",
        "-c",
        "core.looseCompression=0",
    ]  # random bytes do not compress: do not try
    subprocess.run(["git", "-C", str(repo), "init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "large"], check=True)
    hf_home = tmp_path / "hf"
    code = (
        "from course_utils.models import hub\n"
        "from huggingface_hub import snapshot_download\n"
        "try:\n"
        "    print('DONE', snapshot_download('course-test/large'))\n"
        "except Exception as err:\n"
        "    print('ERROR', hub.course_error('course-test/large', err))\n"
    )
    download = subprocess.Popen(
        [sys.executable, "-c", code],
        env=course_env(endpoint, hf_home),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(p.stat().st_size > 2**20 for p in hf_home.rglob("*.incomplete")):
        time.sleep(0.05)
    process.kill()  # mid-transfer
    out, err = download.communicate(timeout=120)
    assert "DONE" not in out, "the download finished before the server was killed: make the file larger"
    assert "ERROR" in out and "not reachable" in out, out + err[-2000:]
    blobs = [p for p in hf_home.rglob("blobs/*") if not p.name.endswith(".incomplete")]
    assert not any(p.stat().st_size == LARGE for p in blobs)  # only the .incomplete part was written
    snapshot = list(hf_home.rglob("snapshots/*/unet/diffusion_pytorch_model.safetensors"))
    assert not snapshot, "a truncated file is in the snapshot"
    process, endpoint = hub_mirror.start(root, repos=(), port=port)  # the Wi-Fi is back
    try:
        proc = python(code, course_env(endpoint, hf_home))
        assert "DONE" in proc.stdout, proc.stdout + proc.stderr[-2000:]
        (done,) = hf_home.rglob("snapshots/*/unet/diffusion_pytorch_model.safetensors")
        assert done.stat().st_size == LARGE
    finally:
        hub_mirror.stop(process)


@pytest.mark.lane
def test_every_lesson_runs_on_sd15_through_the_mirror(mirror, tmp_path):
    """nbval on every notebook with COURSE_PROFILE=sd15 in float16, as on a Colab GPU: every sd15 branch and every
    half-precision branch executes, from the repositories' variant="fp16" files (small lookalikes, 64x64, 10 steps)."""
    env = course_env(
        mirror["endpoint"],
        tmp_path / "hf",
        COURSE_SETTINGS="height=64,width=64,num_inference_steps=10",
        COURSE_STRICT_WARNINGS="1",
        COURSE_TRAIN_STEPS="4",  # lesson 10: the mechanics, 4 LoRA steps
        COURSE_DTYPE="float16",
        COURSE_BENCH="quick",  # lesson 9: one timed call per setting (every lever still runs)
    )
    proc, seconds = run_every_lesson(env, "sd15-lane.log", *full_size_cells_of_lesson_9(), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout.splitlines()[-1] and "failed" not in proc.stdout.splitlines()[-1]
    # (a time budget belongs in a report, not in an assert that fails when the machine is busy)
    print(f"every lesson on sd15 through the mirror: {seconds:.0f} s ({proc.stdout.splitlines()[-1]})")
