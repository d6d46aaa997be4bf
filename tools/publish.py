"""Set the course's public repository URL, in its one place, and write it where it must appear.

The URL lives in ``pyproject.toml`` (``[project.urls] Repository``). A notebook opened on Colab
cannot read that file before it has cloned the repository, so the first code cell of every lesson
carries the URL as its default (``COURSE_REPO`` overrides it), and the README's "Open in Colab"
table links each lesson through it. This script writes both from ``pyproject.toml``;
``tests/test_notebooks_meta.py`` checks that they agree with it.

The whole first code cell of every lesson is written here, from one template (:data:`FIRST_CELL`),
with the lesson's own facts: how much it downloads on `sd15` (:data:`DOWNLOADS`, :data:`LESSON_DOWNLOADS`,
the one place these numbers live). ``tests/test_first_cell.py`` checks the cells and runs one in a fresh venv.

    python tools/publish.py                                   # rewrite cells and README from pyproject.toml
    python tools/publish.py --repo https://github.com/ORG/NAME  # set a new URL first (when publishing the course)
    make sync                                                 # then bring the .ipynb twins up to date
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python tools/publish.py`: the repository's course_utils, installed or not
    sys.path.insert(0, str(ROOT))
from course_utils.models import hub  # noqa: E402 (after the path above; stdlib only, no torch)

PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"
URL_LINE = re.compile(r'^Repository = "([^"]+)"$', re.M)
TABLE_START, TABLE_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"
# A lesson's first code cell in its py:percent file: from its "# %%" line to the next cell's.
FIRST_CODE_CELL = re.compile(r"^# %%\n(.*?)\n\n(?=# %%)", re.M | re.S)

# What each lesson downloads from the Hub on `sd15`, i.e. on a GPU: float16, so the fp16 files where a
# repository has them (registry._variant, hub.FP16_VARIANTS, weights.download_plan). Sizes in bytes; GB means
# 10**9 bytes, as the Hub lists file sizes. Sources: docs/lookalike-repos.md, whose tags are in brackets.
#
# SD 1.5's component files: computed from configs.SD15_* on the meta device, laid out as safetensors does
# (tests/test_first_cell.py recomputes them; the same method gives the x4 upscaler's real files to the byte,
# tests/test_lookalike.py). They match [sizes-sd15]'s MiB figures: UNet 3278 (fp16 1639), safety checker
# 1159 (579), text encoder 469 (234), VAE 319 (159).
SD15_FP32 = {"safety_checker": 1_215_974_584, "text_encoder": 492_265_880, "unet": 3_438_167_536, "vae": 334_643_268}
SD15_FP16 = {"safety_checker": 608_011_192, "text_encoder": 246_144_864, "unet": 1_719_125_304, "vae": 167_335_342}
INPAINT_UNET_FP16 = 1_719_154_104  # SD 1.5's UNet with 9 input channels (configs.SD15_INPAINT_UNET)
X4_FP16 = {"text_encoder": 680_821_096, "unet": 946_878_752, "vae": 110_674_374}  # [sizes-x4], to the byte
# A pipeline folder's configs and CLIP tokenizer: vocab.json 1,059,962 bytes (docs/lookalike-repos.md) +
# merges.txt 524,619 (data/clip_tokenizer) + a dozen small JSON files, about 10 kB (an estimate).
CONFIGS = 1_595_000
DOWNLOADS = {  # what the cell names: (bytes, Hub repository)
    "SD 1.5 in fp16": (sum(SD15_FP16.values()) + CONFIGS, hub.SD15_REPOS["text2img"]),
    "SD 1.5 inpainting in fp16": (
        sum(SD15_FP16.values()) - SD15_FP16["unet"] + INPAINT_UNET_FP16 + CONFIGS,
        hub.SD15_REPOS["inpaint"],
    ),
    "the x4 upscaler in fp16": (sum(X4_FP16.values()) + CONFIGS, hub.SD15_REPOS["upscale"]),
    # Its diffusers folders have no fp16 variant (weights.download_plan then takes the default weights) and no safety
    # checker (docs/lookalike-repos.md): SD 1.5's unet, vae and text_encoder in float32 (a fine-tune has SD 1.5's
    # architecture; the Hub lists its UNet as 3.44 GB and its VAE as 335 MB, as these are), safetensors where both
    # a .safetensors and a .bin are there (the same size).
    "Counterfeit-V2.5's folders": (
        sum(v for k, v in SD15_FP32.items() if k != "safety_checker") + CONFIGS,
        hub.COUNTERFEIT_REPO,
    ),
    # hub.COUNTERFEIT_FILE: 2,132,626,071 bytes (a download table with its sha256)
    "its fp16 file": (2_132_626_071, hub.COUNTERFEIT_REPO),
    # the configs from_single_file builds that file's pipeline from (files.checkpoint_config)
    "SD 1.5's configs": (CONFIGS, hub.SD15_REPOS["text2img"]),
    # 8 vectors x 768 float32 + a header: "24 KB" (a UI listing the file)
    "EasyNegative": (25_000, hub.EASYNEGATIVE_REPO),
    # 67,252,224 numbers in fp16 (computed from SD 1.5's UNet, tests/test_lookalike.py; "~135 MB" as recalled)
    "LCM-LoRA": (67_252_224 * 2, hub.LCM_LORA_REPO),
    # 75,497,472 numbers in fp16 (computed from SD 1.5's UNet and text encoder, tests/test_lookalike.py); the Hub lists
    # the file as 151 MB (docs/lookalike-repos.md)
    "the Light and Shadow LoRA": (75_497_472 * 2, hub.STYLE_LORA_REPO),
    # ControlNetModel.from_unet of SD 1.5's UNet: 361,279,120 numbers in fp16 (tests/test_controlnet.py), its
    # config.json and the file's header (~60 kB, an estimate); the Hub lists the file as 723 MB (docs/lookalike-repos.md)
    "the canny ControlNet's fp16 file": (361_279_120 * 2 + 60_000, hub.CONTROLNET_REPO),
}
LESSON_DOWNLOADS = {  # lesson number: what it loads on `sd15` (its cu.load_pipeline, cu.model_source and files.* calls)
    1: ["SD 1.5 in fp16"],  # load_pipeline("text2img"); the "three lines" find the same files in the cache
    2: ["SD 1.5 in fp16"],  # and its parts one by one from the same folder (cu.model_source)
    3: ["SD 1.5 in fp16"],
    4: ["SD 1.5 in fp16"],  # img2img: the same repository
    5: ["SD 1.5 in fp16"],  # its img2img pipeline is built from the same components
    6: ["the x4 upscaler in fp16"],
    7: ["Counterfeit-V2.5's folders", "its fp16 file", "SD 1.5's configs", "EasyNegative", "the Light and Shadow LoRA"],
    8: ["SD 1.5 inpainting in fp16", "SD 1.5 in fp16"],  # inpaint, then text2img for latent blending
    9: ["SD 1.5 in fp16", "LCM-LoRA"],  # section 5's sd15-random is built, not downloaded
    10: ["SD 1.5 in fp16"],
    11: ["SD 1.5 in fp16", "the canny ControlNet's fp16 file"],  # load_pipeline("controlnet"): files.controlnet_source
}


def download_gb(lesson: int) -> float:
    """What lesson ``lesson`` downloads from the Hub on `sd15`, in GB (10**9 bytes)."""
    return sum(DOWNLOADS[name][0] for name in LESSON_DOWNLOADS[lesson]) / 1e9


FIRST_CELL = """\
# Sets the course up on a fresh Colab runtime: clones its repository and installs `course_utils` (keeping
# Colab's torch). Where `course_utils` is installed already (e.g. `make install`), it does nothing.
{downloads}
import importlib.util, os, shutil, subprocess, sys
# from google.colab import drive; drive.mount("/content/drive")
# os.environ["HF_HOME"] = "/content/drive/MyDrive/hf-cache"
if importlib.util.find_spec("course_utils") is None:  # a fresh Colab runtime
    repo = os.environ.get("COURSE_REPO", "{repo}.git")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # a wrong URL fails instead of asking for a password

    def run(*command, failed):  # one step; if it fails, show its own output and what to do, and stop
        done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        if done.returncode:
            print(done.stdout + done.stderr)
            raise RuntimeError(f"{{failed}}: its output is above. Wrong URL, or your fork? Set COURSE_REPO, e.g. "
                               "os.environ['COURSE_REPO'] = 'https://github.com/ORG/NAME.git'. On Colab, Runtime > "
                               "Change runtime type > T4 GPU (a fresh runtime too). Then run this cell again.")

    # an earlier run that stopped half-way may have left a clone with files missing: start that one afresh
    status = subprocess.run(["git", "--git-dir=sd-course/.git", "--work-tree=sd-course", "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True, text=True, env=env)
    if os.path.isdir("sd-course") and (status.returncode or status.stdout or not os.path.isfile("sd-course/pyproject.toml")):
        print("sd-course/ is an unfinished clone: removing it")
        shutil.rmtree("sd-course")
    if not os.path.isdir("sd-course"):
        print(f"cloning {{repo}} ...")
        run("git", "clone", "-q", "--depth", "1", repo, "sd-course", failed=f"git could not clone {{repo}}")
    print("installing course_utils and its libraries (a minute or two) ...")
    run(sys.executable, "-m", "pip", "install", "-q", "-e", "sd-course", failed="pip could not install the course")
    sys.path.insert(0, os.path.abspath("sd-course"))"""


DOWNLOADS_NOTE = """\
# Pick Runtime > Change runtime type > T4 GPU first. On a GPU (`sd15`) this lesson downloads about {gb:.1f} GB
# from the Hugging Face Hub, again on every new runtime:
# {what}.
# To keep them on your Google Drive instead, uncomment the two lines after the imports (HF_HOME must be set
# before huggingface_hub is imported)."""
APPENDIX_NOTE = """\
# The appendix runs on `tiny` on every runtime (a CPU one is enough): it downloads nothing from the Hub, so the
# two commented lines after the imports (a Hub cache on Google Drive) are not needed here."""


def first_cell(lesson: int | None, repo: str) -> str:
    """The first code cell of lesson ``lesson`` (`None`: the appendix): :data:`FIRST_CELL` with the repository and
    what the lesson downloads."""
    if lesson is None:
        return FIRST_CELL.format(repo=repo, downloads=APPENDIX_NOTE)
    what = " + ".join(LESSON_DOWNLOADS[lesson])
    return FIRST_CELL.format(repo=repo, downloads=DOWNLOADS_NOTE.format(gb=download_gb(lesson), what=what))


def notebooks(suffix: str) -> list[Path]:
    """The lessons (``NN_topic``) and then the appendix (``appendix_*``) in ``notebooks/``, with this suffix."""
    folder = ROOT / "notebooks"
    return sorted(folder.glob(f"[0-9][0-9]_*{suffix}")) + sorted(folder.glob(f"appendix_*{suffix}"))


def lesson_number(path: Path) -> int | None:
    """``notebooks/07_community_models.py`` -> 7; the appendix -> `None`."""
    return int(path.name[:2]) if path.name[:2].isdigit() else None


def repository_url() -> str:
    """The repository URL that ``pyproject.toml`` names (``https://github.com/ORG/NAME``)."""
    match = URL_LINE.search(PYPROJECT.read_text())
    if not match:
        sys.exit('pyproject.toml has no [project.urls] Repository = "..." line')
    return match.group(1)


def colab_url(repo: str, notebook: str) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook>`` in a GitHub repository."""
    path = re.sub(r"^https://github\.com/", "", repo).removesuffix(".git")
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}"


def badge_table(repo: str) -> str:
    rows = ["| lesson | open |", "|---|---|"]
    for nb in notebooks(".ipynb"):
        badge = "https://colab.research.google.com/assets/colab-badge.svg"
        rows.append(f"| `{nb.stem}` | [![Open In Colab]({badge})]({colab_url(repo, nb.name)}) |")
    return "\n".join([TABLE_START, *rows, TABLE_END])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", help="the new repository URL, e.g. https://github.com/ORG/NAME")
    a = p.parse_args(argv)
    if a.repo:
        PYPROJECT.write_text(URL_LINE.sub(f'Repository = "{a.repo.removesuffix(".git")}"', PYPROJECT.read_text()))
    repo = repository_url()
    for py in notebooks(".py"):
        text = py.read_text()
        match = FIRST_CODE_CELL.search(text)
        if not match:
            sys.exit(f"{py.name}: no first code cell (a '# %%' line followed by code) found")
        text = text[: match.start(1)] + first_cell(lesson_number(py), repo) + text[match.end(1) :]
        if text != py.read_text():
            py.write_text(text)
    readme = README.read_text()
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    README.write_text(readme[:start] + badge_table(repo) + readme[end:])
    print(f"repository: {repo}; first cells and README updated. Run `make sync` for the .ipynb twins.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
