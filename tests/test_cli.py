"""The commands: ``python -m course_utils {info,download,course,evaluate}`` as a learner or instructor types them."""

import json
import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.sign import NotebookNotary

from course_utils import visual
from course_utils.commands import cli
from course_utils.paths import ROOT


def run(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    full = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "course_utils", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_info_prints_the_choice_and_the_settings(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_PROFILE", "tiny")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    with pytest.raises(SystemExit) as done:
        cli.main(["info"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("course_utils: profile=tiny device=cpu") and "(COURSE_PROFILE=tiny)" in lines[0]
    for var in ("COURSE_PROFILE=tiny", "COURSE_DEVICE=cpu", "COURSE_MODELS_DIR=", "HF_ENDPOINT=", "HF_HUB_OFFLINE="):
        assert any(line.strip().startswith(var) for line in lines), var


def test_download_without_network_says_what_to_do(tmp_path):
    """Offline with an empty cache: the course's message with the three ways out, not a traceback."""
    result = run(
        "download",
        "sd15",
        "--to",
        str(tmp_path / "models"),
        "--role",
        "text2img",
        env=dict(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for needle in (
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "HF_ENDPOINT",
        "COURSE_MODELS_DIR",
        "COURSE_PROFILE=tiny",
    ):
        assert needle in result.stderr, needle


def test_download_unknown_role_is_a_usage_error(tmp_path):
    result = run("download", "sd15", "--to", str(tmp_path), "--role", "nope")
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_course_runs_a_notebook_and_prints_the_table(tmp_path):
    """`course` executes notebooks headless, writes .ipynb + .html, and reads the profile from the output.

    The .ipynb keeps the widgets' state and is trusted here (JupyterLab shows its widgets without re-running it);
    the .html has the slider's still copy and not the slider, which needs a kernel (tests/test_browser.py opens both).
    """
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import course_utils as cu\nchoice = cu.setup()"),
        nbformat.v4.new_code_cell("from PIL import Image\nImage.new('RGB', (8, 8), 'red')"),
        nbformat.v4.new_code_cell(
            "cu.step_slider([Image.new('RGB', (8, 8), c) for c in ('red', 'blue')], ['one', 'two'])"
        ),
    ]
    path = tmp_path / "99_check.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "build"
    result = run("course", "--out", str(out), str(path), env=dict(COURSE_PROFILE="tiny"))
    assert result.returncode == 0, result.stdout + result.stderr
    # nothing a learner cannot act on: the kernel talks over IPC (no "over TCP without encryption" warning), and the
    # CLI's log filters hide transformers' "requires torchvision" note
    assert "without encryption" not in result.stderr and "requires torchvision" not in result.stderr, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("99_check.ipynb"))
    assert row.split()[2:4] == ["1", "tiny"]  # seconds, images, profile, device
    executed = nbformat.read(out / "99_check.ipynb", as_version=4)
    state = executed.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    assert [w["state"]["value"] for w in state.values() if w["model_name"] == "IntSliderModel"] == [2]
    assert NotebookNotary().check_signature(executed)
    live, still = executed.cells[2].outputs
    assert live.metadata["tags"] == [visual.LIVE_ONLY_TAG] and "course-still" in still.data["text/html"]
    page = (out / "99_check.html").read_text()
    slider_view = json.dumps(live.data["application/vnd.jupyter.widget-view+json"])
    assert "course-still" in page and slider_view[:50] not in page  # '{"model_id": "…' of the slider's output


def test_course_takes_lesson_numbers(tmp_path):
    assert [p.name for p in cli.notebook_paths(["03"])] == ["03_denoising_loop.ipynb"]
    assert cli.notebook_paths([str(tmp_path / "x.ipynb")]) == [tmp_path / "x.ipynb"]
    assert len(cli.notebook_paths([])) >= 9
    with pytest.raises(SystemExit, match="no lesson 42"):
        cli.notebook_paths(["42"])


@pytest.mark.slow
def test_course_fails_when_a_notebook_fails(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('broken lesson')")]
    path = tmp_path / "98_broken.ipynb"
    nbformat.write(nb, path)
    result = run("course", "--out", str(tmp_path / "build"), str(path))
    assert result.returncode == 1 and "FAILED" in result.stdout and "broken lesson" in result.stdout


def test_evaluate_help(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--seeds" in out and "--json" in out


@pytest.mark.slow
def test_evaluate_writes_json(tmp_path):
    """A small evaluation (speed only) ends in a table and a JSON file with the same numbers."""
    target = tmp_path / "scores.json"
    result = run("evaluate", "--parts", "speed", "--json", str(target), env=dict(COURSE_PROFILE="tiny"))
    assert result.returncode == 0, result.stderr
    scores = json.loads(target.read_text())
    assert 0 < scores["sample_seconds"] < 60 and "sample_seconds" in result.stdout
