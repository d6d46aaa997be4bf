"""``python -m course_utils doctor`` (one seat's check) and the room mirror of ``hub --serve --room``."""

import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import constants

from course_utils.commands import doctor, doctor_models, hub_mirror
from course_utils.models import hub
from course_utils.models.lookalike import build_lookalikes
from course_utils.paths import ROOT

TEXT2IMG = hub.SD15_REPOS["text2img"]


@pytest.fixture
def empty_seat(monkeypatch, tmp_path):
    """An offline seat with an empty Hub cache and no COURSE_MODELS_DIR."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("COURSE_MODELS_DIR", raising=False)
    for role in hub.SD15_REPOS:
        monkeypatch.delenv(f"COURSE_HUB_{role.upper()}", raising=False)
    return tmp_path


def test_offline_empty_cache_every_repo_is_unreachable_not_a_traceback(empty_seat):
    checks = doctor_models.check_models(timeout=1)
    names = [c.name for c in checks]
    assert TEXT2IMG in names and f"{hub.EASYNEGATIVE_REPO}/{hub.EASYNEGATIVE_FILE}" in names
    # text2img, img2img and controlnet share one repository; then every single file (lesson 7's, lesson 11's ControlNet)
    assert len(names) == len(set(hub.SD15_REPOS.values())) + len(hub.SINGLE_FILES)
    for check in checks:
        assert check.detail.startswith("unreachable") and check.status == "warning" and check.fix, check


def test_a_repo_in_course_models_dir_is_local(empty_seat, monkeypatch):
    models = empty_seat / "models"
    (models / TEXT2IMG).mkdir(parents=True)
    (models / TEXT2IMG / "model_index.json").write_text("{}")
    (models / hub.LCM_LORA_REPO).mkdir(parents=True)
    (models / hub.LCM_LORA_REPO / hub.LCM_LORA_FILE).write_bytes(b"")
    monkeypatch.setenv("COURSE_MODELS_DIR", str(models))
    status = {c.name: c for c in doctor_models.check_models(timeout=1)}
    assert status[TEXT2IMG].detail.startswith("local") and status[TEXT2IMG].status == "ok"
    assert status[f"{hub.LCM_LORA_REPO}/{hub.LCM_LORA_FILE}"].detail.startswith("local")
    assert status[hub.SD15_REPOS["inpaint"]].detail.startswith("unreachable")


def test_a_known_copy_in_course_models_dir_is_found_as_the_course_would(empty_seat, monkeypatch):
    """The upscaler's official repository is absent and its known copy is local: the line names the copy, OK."""
    official, copy = hub.repo_ids("upscale")[:2]
    models = empty_seat / "models"
    (models / copy).mkdir(parents=True)
    (models / copy / "model_index.json").write_text("{}")
    monkeypatch.setenv("COURSE_MODELS_DIR", str(models))
    status = {c.name: c for c in doctor_models.check_models(timeout=1)}
    assert official not in status and status[copy].status == "ok", status
    assert status[copy].detail.startswith("local") and f"a copy of {official}" in status[copy].detail


def test_a_missing_library_is_a_problem_and_a_pin_mismatch_a_warning(monkeypatch):
    monkeypatch.setattr(doctor, "LIBRARIES", ("diffusers", "no_such_library_here"))
    checks = doctor.check_libraries(pins={"diffusers": "==0.0.1", "no_such_library_here": ">=1"})
    assert [c.status for c in checks][:2] == ["warning", "problem"] and checks[2].name == "opencv (cv2)"
    assert "pip install 'diffusers==0.0.1'" in checks[0].fix and "make install" in checks[1].fix


def test_a_device_the_seat_lacks_is_a_problem_and_exit_code_1(empty_seat, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DEVICE", "quantum")
    assert doctor.main(timeout=1) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "unset COURSE_DEVICE" in out and "can NOT run the course" in out


def test_doctor_writes_its_report_as_json(empty_seat, monkeypatch, capsys):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setenv("COURSE_PROFILE", "tiny")
    assert doctor.main(json_path=empty_seat / "seat.json", timeout=1) == 0
    report = json.loads((empty_seat / "seat.json").read_text())
    assert report["ok"] is True and {c["section"] for c in report["checks"]} >= {
        "device",
        "memory",
        "profile",
        "models",
    }
    profile = next(c for c in report["checks"] if c["name"] == "profile")
    assert profile["detail"] == "tiny (COURSE_PROFILE=tiny)"
    assert "profile                            tiny (COURSE_PROFILE=tiny)  -> OK" in capsys.readouterr().out


@pytest.mark.slow
def test_doctor_command_on_an_offline_seat(tmp_path):
    """The command as an instructor runs it (~10 s): profile and reason named, every repo placed, JSON written, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "COURSE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = tmp_path / "seat.json"
    result = subprocess.run(
        [sys.executable, "-m", "course_utils", "doctor", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "requires torchvision" not in result.stderr, result.stderr  # the CLI filters that note before any import
    profile = next(line for line in result.stdout.splitlines() if line.strip().startswith("profile "))
    assert "tiny (" in profile and ("no CUDA GPU" in profile or "neither cached nor reachable" in profile)
    for section in ("device:", "memory:", "profile:", "models:", "libraries:", "widgets:"):
        assert section in result.stdout
    assert "this seat can run the course" in result.stdout
    report = json.loads(out.read_text())
    assert report["ok"] is True
    models = [c for c in report["checks"] if c["section"] == "models"]
    assert models and all(c["detail"].split()[0] in ("missing", "unreachable") for c in models)
    assert all(
        line.rstrip().split("-> ")[-1].startswith(("OK", "WARNING", "PROBLEM"))
        for line in result.stdout.splitlines()
        if line.startswith("  ")
    )


def download(endpoint: str, hf_home, repo: str, filename: str, repo_type: str) -> subprocess.CompletedProcess:
    """hf_hub_download in a fresh process (huggingface_hub reads HF_ENDPOINT at import)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home))
    code = (
        "import sys; from huggingface_hub import hf_hub_download as d; print(d(*sys.argv[1:3], repo_type=sys.argv[3]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, repo, filename, repo_type], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
@pytest.mark.mirror
def test_room_mirror_caches_what_it_passes_on_and_serves_it_when_the_upstream_is_gone(tmp_path):
    """A room mirror in front of the lookalike mirror (standing in for the Hub): the first download goes
    through to the upstream; with the upstream stopped, the room mirror restarted ``--offline`` on its
    cache serves the same bytes to a seat with an empty cache."""
    upstream_root = tmp_path / "upstream"
    build_lookalikes(upstream_root / "mirrors", repos=[hub.EASYNEGATIVE_REPO])
    port = hub_mirror.free_port()
    upstream, upstream_url = hub_mirror.launch(
        upstream_root,
        hub_mirror.write_config(upstream_root, port),
        f"http://127.0.0.1:{port}",
        probe=f"/api/datasets/{hub.EASYNEGATIVE_REPO}/revision/main",
    )
    room_root = tmp_path / "room"
    try:
        room, room_url = hub_mirror.start_room(room_root, upstream=upstream_url, host="127.0.0.1")
        try:
            first = download(room_url, tmp_path / "seat1", hub.EASYNEGATIVE_REPO, hub.EASYNEGATIVE_FILE, "dataset")
        finally:
            hub_mirror.stop(room)
    finally:
        hub_mirror.stop(upstream)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"{upstream_url}/datasets/{hub.EASYNEGATIVE_REPO}/resolve/" in (room_root / "olah.log").read_text()
    room, room_url = hub_mirror.start_room(room_root, upstream=upstream_url, host="127.0.0.1", offline=True)
    try:
        second = download(room_url, tmp_path / "seat2", hub.EASYNEGATIVE_REPO, hub.EASYNEGATIVE_FILE, "dataset")
    finally:
        hub_mirror.stop(room)
    assert second.returncode == 0, second.stderr[-2000:]
    original = upstream_root / "mirrors" / "datasets" / hub.EASYNEGATIVE_REPO / hub.EASYNEGATIVE_FILE
    paths = [first.stdout.strip().splitlines()[-1], second.stdout.strip().splitlines()[-1]]
    assert str(tmp_path / "seat2") in paths[1]
    assert open(paths[0], "rb").read() == open(paths[1], "rb").read() == original.read_bytes()


def test_room_config_points_olah_at_the_upstream(tmp_path):
    config = hub_mirror.write_room_config(tmp_path, 8090, upstream="http://10.0.0.2:8091", public_host="10.0.0.5")
    text = config.read_text()
    for line in (
        'hf-scheme = "http"',
        'hf-netloc = "10.0.0.2:8091"',
        'hf-lfs-netloc = "10.0.0.2:8091"',
        'host = "0.0.0.0"',
        'mirror-netloc = "10.0.0.5:8090"',
        "offline = false",
        f'repos-path = "{tmp_path / "cache"}"',
    ):
        assert line in text, line
    text = hub_mirror.write_room_config(tmp_path, 8090).read_text()
    assert 'hf-netloc = "huggingface.co"' in text and 'hf-lfs-netloc = "cdn-lfs.huggingface.co"' in text
    with pytest.raises(hub_mirror.CourseError, match="--upstream"):
        hub_mirror.write_room_config(tmp_path, 8090, upstream="huggingface.co")


def test_opencv_any_one_package_is_fine_none_or_two_is_a_warning(monkeypatch):
    versions = {}
    monkeypatch.setattr(doctor, "installed", lambda name: versions.get(name))
    assert doctor.check_opencv().status == "warning"  # none: lesson 11 cannot make edge maps
    versions["opencv-python"] = "4.12.0.88"  # Colab's
    assert doctor.check_opencv().status == "ok"
    versions["opencv-python-headless"] = "4.14.0.94"
    found = doctor.check_opencv()
    assert found.status == "warning" and "overwrite" in found.fix
