"""What a learner sees in a browser: lesson 3 in JupyterLab (the live slider) and its exported HTML offline (the still copy).

Both share one run of lesson 3 on `tiny`: JupyterLab runs it up to the slider and saves it; the HTML is the course's
export of that notebook (`make course` exports the notebooks it runs the same way; tests/test_cli.py checks that).
Headless Chromium from Debian (``apt-get install chromium``: /usr/bin/chromium) driven by Playwright from PyPI; no
browser is downloaded. Missing either, the tests skip on a developer's machine and fail in CI (``CI=true``), where
``.ci/run`` installs Chromium.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import nbformat
import pytest

from course_utils.commands import cli
from course_utils.paths import NOTEBOOKS_DIR

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
# Chromium as root in a container, with no network but loopback: no sandbox, no GPU, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LESSON = NOTEBOOKS_DIR / "03_denoising_loop.ipynb"
SLIDER_CELL = "cu.step_slider(frames, labels)"
# JupyterLab settings for the test: no autosave (the test copy stays as it was), no news or update pop-ups.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def _missing(what: str):
    message = (
        f"{what}: the browser tests need Debian's Chromium (`apt-get install -y chromium`, as .ci/run does) "
        "and the playwright package (requirements-dev.txt: `make install`)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on this Python (the course's kernel), serving a copy of lesson 3; yields (url, token, folder)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(LESSON, root / LESSON.name)  # a copy: nothing the test runs is written back to notebooks/
    settings = root / ".settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), uuid.uuid4().hex
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={root / '.workspaces'}",
        ],
        env=dict(os.environ, COURSE_PROFILE="tiny", HF_HUB_OFFLINE="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"JupyterLab exited: {(root / 'lab.log').read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (
                    f"JupyterLab did not answer: {(root / 'lab.log').read_text()[-3000:]}"
                )
                time.sleep(0.5)
        yield url, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def kernel_idle(url: str, token: str, timeout: float = 120) -> None:
    """Wait until the server's one kernel (the notebook's, started when the page opened it) reports ``idle``."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10) as answer:
            kernels = json.load(answer)
        if kernels and all(k["execution_state"] == "idle" for k in kernels):
            return
        assert time.monotonic() < deadline, f"the kernel did not become idle: {kernels}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def lesson_3(browser, lab):
    """Lesson 3 open in JupyterLab, run up to its slider (the slower sections after it are left out), then saved.

    Yields the page, the slider's cell and the saved ``.ipynb`` (executed by JupyterLab: test 2 exports it).
    """
    url, token, root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        page.goto(f"{url}/lab/tree/{LESSON.name}?token={token}")
        page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
        kernel_idle(url, token)  # cells run before the kernel is up can be dropped on a busy machine
        cell = page.locator(".jp-CodeCell", has_text=SLIDER_CELL).first
        cell.evaluate("e => e.scrollIntoView()")
        cell.locator(".jp-InputPrompt").first.click()  # select the cell, command mode
        # "Run All Above Selected Cell" runs above the *active* cell: wait until the click has made it this one
        page.locator(".jp-CodeCell.jp-mod-active", has_text=SLIDER_CELL).wait_for(timeout=60_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Above Selected Cell").click()
        page.keyboard.press("Shift+Enter")  # then the slider's own cell
        cell.locator(".course-step-slider .noUi-handle").wait_for(timeout=300_000)
        # the still copy is the cell's second output, sent after the live slider: save only once it is shown
        # (a save between the two outputs kept only the first, and the file was never saved again)
        cell.locator(".course-still").first.wait_for(state="attached", timeout=120_000)
        saved = root / LESSON.name
        before = saved.stat().st_mtime_ns
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 60
        while saved.stat().st_mtime_ns == before or "course-still" not in saved.read_text():
            assert time.monotonic() < deadline, "JupyterLab did not save the notebook"
            time.sleep(0.5)
        failed = [
            out
            for c in nbformat.read(saved, as_version=4).cells
            for out in c.get("outputs", [])
            if out.output_type == "error"
        ]
        assert not failed, failed[0]
        yield page, cell, saved
        assert not errors, errors
    finally:
        page.close()


def test_lesson_3_slider_moves_in_jupyterlab(lesson_3, tmp_path):
    """In JupyterLab, with the kernel running: move the slider, and the caption and the picture change."""
    page, cell, _ = lesson_3
    handle = cell.locator(".course-step-slider .noUi-handle")
    caption, image = cell.locator(".course-step-caption"), cell.locator("img.course-step-image")
    before = (caption.inner_text(), image.get_attribute("src"), image.screenshot())
    assert before[0].startswith("step 26/26"), before[0]
    handle.focus()
    page.keyboard.press("Home")  # the slider's keyboard: to its first position
    page.wait_for_function(
        "([el, old]) => el.textContent !== old", arg=[caption.element_handle(), before[0]], timeout=30_000
    )
    after = (caption.inner_text(), image.get_attribute("src"), image.screenshot())
    assert after[0].startswith("step 1/26"), after[0]
    assert after[1] != before[1] and after[2] != before[2]  # a new picture, and it looks different
    assert cell.locator(".course-still").count() == 1  # the still copy is there too
    cell.screenshot(path=tmp_path / "lab_slider.png")


def test_lesson_3_html_shows_the_still_copy_offline(browser, lesson_3, tmp_path):
    """Lesson 3 exported to HTML by the course's export and opened from disk, every network request refused:
    the still copy is there, not empty, and plays."""
    nb = nbformat.read(lesson_3[2], as_version=4)
    html = tmp_path / "03_denoising_loop.html"
    html.write_text(cli.export_html(nb), encoding="utf-8")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    refused = []

    def offline(route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    try:
        page.goto(html.as_uri())
        still = page.locator(".course-still")
        assert still.count() == 1
        still.evaluate("e => e.scrollIntoView()")
        assert still.locator(".course-still-all img").count() == 26
        shown = still.locator("img.course-still-frame")
        assert shown.evaluate("im => im.complete && im.naturalWidth") > 0  # decoded from its data: URI, offline
        caption = still.locator(".course-still-caption")
        assert caption.inner_text().startswith("step 26/26")
        last = (shown.get_attribute("src"), shown.screenshot())
        still.locator(".course-still-range").fill("1")
        assert caption.inner_text().startswith("step 1/26")
        first = (shown.get_attribute("src"), shown.screenshot())
        assert first[0] != last[0] and first[1] != last[1]
        still.locator(".course-still-play").click()
        page.wait_for_function(
            "el => !el.textContent.startsWith('step 1/')", arg=caption.element_handle(), timeout=10_000
        )
        assert page.locator(".course-step-slider").count() == 0  # the live slider needs a kernel: not in the HTML
        assert not any(url.startswith("file:") for url in refused)
        still.screenshot(path=tmp_path / "html_still.png")
    finally:
        context.close()
