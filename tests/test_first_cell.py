"""Every lesson's first code cell: written from one template (tools/publish.py), and run for real in a fresh venv.

The slow test is what a learner's fresh Colab runtime does: a venv with a CPU torch already in it (Colab
brings its own; a bare `pip install torch` here would pull a multi-GB CUDA build) and Colab's ipywidgets
7.7, but no course. The cell clones a local repository holding this working tree (no Hub, no GitHub) and
installs it with pip (PyPI, or pip's cache).
"""

import http.server
import importlib.util
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import COLAB_TORCH, without_the_course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(ROOT.joinpath("notebooks").glob("[0-9][0-9]_*.ipynb"))


def load_publish():
    spec = importlib.util.spec_from_file_location("publish", ROOT / "tools" / "publish.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publish = load_publish()


def first_code_cell(path: Path) -> str:
    return "".join(next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_is_the_template_with_the_lessons_download(path):
    """The cell is publish.first_cell for its lesson (run tools/publish.py, then make sync), with its number of GB."""
    lesson = int(path.name[:2])
    cell = first_code_cell(path)
    assert cell == publish.first_cell(lesson, publish.repository_url()), "run tools/publish.py and make sync"
    assert f"downloads about {publish.download_gb(lesson):.1f} GB" in cell
    assert 'GIT_TERMINAL_PROMPT="0"' in cell and "HF_HOME" in cell


def test_download_table_names_the_course_repositories():
    """Every download is from a repository course_utils.models.hub names; fp16 exactly where it loads fp16 files."""
    from course_utils.models import hub

    def flat(values):
        for v in values:
            yield from ([v] if isinstance(v, str) else v)

    repos = {*flat(hub.SD15_REPOS.values()), *(repo for repo, _, _, _ in hub.SINGLE_FILES)}
    for name, (size, repo) in publish.DOWNLOADS.items():
        assert repo in repos and size > 0, name
        if name.endswith("in fp16"):  # a pipeline folder's fp16 variant
            assert repo in hub.FP16_VARIANTS, name
    assert publish.DOWNLOADS["Counterfeit-V2.5's folders"][1] not in hub.FP16_VARIANTS  # so its default weights
    assert set(publish.LESSON_DOWNLOADS) == {int(p.name[:2]) for p in NOTEBOOKS}
    assert {n for names in publish.LESSON_DOWNLOADS.values() for n in names} == set(publish.DOWNLOADS)
    assert hub.COUNTERFEIT_FILE.endswith("_fp16.safetensors")


def test_sd15_file_sizes_follow_from_the_configs():
    """The table's SD 1.5 sizes are what SD 1.5's architecture weighs as safetensors files (meta device, no weights)."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from test_lookalike import component_tensors, safetensors_size
    from transformers import CLIPConfig

    from course_utils.models import configs

    parts = {
        "text_encoder": ("text", configs.SD15_TEXT_ENCODER),
        "unet": ("unet", configs.SD15_UNET),
        "vae": ("vae", configs.SD15_VAE),
    }
    with torch.device("meta"):
        checker = StableDiffusionSafetyChecker(CLIPConfig(**configs.SD15_SAFETY_CHECKER))
    for dtype, table in ((torch.float32, publish.SD15_FP32), (torch.float16, publish.SD15_FP16)):
        sizes = {name: safetensors_size(component_tensors(kind, cfg, dtype)) for name, (kind, cfg) in parts.items()}
        sizes["safety_checker"] = safetensors_size(
            {k: (dtype, tuple(v.shape)) for k, v in checker.state_dict().items()}
        )
        assert sizes == table, dtype
    inpaint = safetensors_size(component_tensors("unet", configs.SD15_INPAINT_UNET, torch.float16))
    assert inpaint == publish.INPAINT_UNET_FP16


# --- the cell, run for real ---------------------------------------------------------------------------------


class AskForPassword(http.server.BaseHTTPRequestHandler):
    """A git server that wants a login: without GIT_TERMINAL_PROMPT=0, git would ask for a user name."""

    def do_GET(self):
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def working_tree_repository(target: Path) -> Path:
    """A local git repository whose one commit is this working tree (tracked and untracked files, ignored ones
    left out): what the cell clones, so the test sees uncommitted changes too (e.g. requirements)."""
    git = lambda *a, cwd=ROOT: subprocess.run(["git", *a], cwd=cwd, check=True, capture_output=True, text=True).stdout  # noqa: E731
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(target)], check=True)
    for name in filter(None, git("ls-files", "-z", "--modified", "--others", "--exclude-standard").split("\0")):
        source, copy = ROOT / name, target / name
        if source.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())
    for name in filter(None, git("ls-files", "-z", "--deleted").split("\0")):
        (target / name).unlink(missing_ok=True)
    git("add", "-A", cwd=target)
    git(
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "working tree",
        cwd=target,
    )
    return target


@pytest.mark.slow
def test_first_cell_in_a_fresh_venv(tmp_path_factory, fresh_venv):
    """A bad URL fails fast and clearly, without asking for a password; an unfinished clone is replaced; the local
    clone installs the course; a second run does nothing; Colab's ipywidgets 7.7 stays and lesson 3's slider shows."""
    started = time.monotonic()
    root = tmp_path_factory.mktemp("first_cell")
    source = working_tree_repository(root / "src")
    _, python, env = fresh_venv  # a CPU torch and Colab's ipywidgets 7.7, no course
    without_the_course(python, env)
    env = dict(env, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    lesson = root / "colab"  # the runtime's working folder, where the cell clones into sd-course/
    lesson.mkdir()
    cell = first_code_cell(ROOT / "notebooks" / "01_text_to_image.ipynb")

    def run(code: str, repo=None, timeout=600):
        t0 = time.monotonic()
        done = subprocess.run(
            [python, "-c", code],
            cwd=lesson,
            env=dict(env, COURSE_REPO=str(repo or source)),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # no terminal to ask on, as on Colab
        return done, done.stdout + done.stderr, time.monotonic() - t0

    # (a) a URL that does not exist: git's own message, then what to do; no CalledProcessError, nothing left behind
    done, out, seconds = run(cell, repo=root / "no-such-repository")
    print(f"a repository that does not exist: failed in {seconds:.1f} s")
    assert done.returncode != 0, out
    assert "does not exist" in out and "RuntimeError: git could not clone" in out, out  # git's words, then ours
    assert "COURSE_REPO" in out and "T4 GPU" in out and "run this cell again" in out, out
    assert "CalledProcessError" not in out and not (lesson / "sd-course").exists(), out

    # (a) a server that asks for a login: git is told not to prompt, so it fails at once instead of waiting
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AskForPassword)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done, out, seconds = run(cell, repo=f"http://127.0.0.1:{server.server_port}/sd-course.git", timeout=60)
    finally:
        server.shutdown()
    print(f"a server that asks for a login: failed in {seconds:.1f} s (a prompt would wait for the timeout)")
    assert done.returncode != 0, out
    assert "terminal prompts disabled" in out and "RuntimeError: git could not clone" in out, out

    # an unfinished clone left by an interrupted run (git init, then stopped): the cell starts afresh
    subprocess.run(["git", "init", "-q", str(lesson / "sd-course")], check=True)
    # (b) the local clone: cloned, installed; Colab's ipywidgets 7.7 stays (requirements allow it)
    done, out, seconds = run(cell)
    assert done.returncode == 0, out
    assert "unfinished clone: removing it" in out and "cloning" in out and "installing" in out, out
    install_seconds = seconds
    done, out, _ = run("import course_utils.models, ipywidgets; print('ipywidgets', ipywidgets.__version__)")
    assert done.returncode == 0 and "ipywidgets 7.7.1" in out, out
    import torch  # the venv's torch is the one installed first, not replaced

    done, out, _ = run("import torch; print('torch', torch.__version__)")
    assert f"torch {torch.__version__.split('+')[0]}" in out and COLAB_TORCH.split("==")[1] in out, out

    # (c) again: course_utils is installed, so the cell does nothing (no clone, no pip), quickly
    done, out, seconds = run(cell)
    print(f"the cell again, with nothing to do: {seconds:.1f} s")
    assert done.returncode == 0 and out == "", out  # nothing printed: no clone, no pip

    # (d) lesson 3's step slider with ipywidgets 7.7, displayed as in a notebook: the live widget, then its still copy
    done, out, _ = run(SLIDER_CHECK)
    assert done.returncode == 0 and "slider and still copy shown" in out, out
    print(f"first cell: install {install_seconds:.0f} s, all {time.monotonic() - started:.0f} s")


SLIDER_CHECK = """
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output
from PIL import Image
import course_utils as cu

InteractiveShell.instance()
slider = cu.step_slider([Image.new("RGB", (64, 16), (10 * i, 0, 0)) for i in range(3)], ["step 1/3", "step 2/3", "step 3/3"])
with capture_output() as shown:
    display(slider)
assert not shown.stderr, shown.stderr  # IPython prints a display error instead of raising it
live, still = (o.data for o in shown.outputs)
assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == slider.model_id, live
assert "course-still" in still["text/html"] and "step 3/3" in still["text/html"], still
slider.children[0].value = 1
assert slider.children[1].value == "step 1/3"
print("slider and still copy shown")
"""
