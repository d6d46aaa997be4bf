"""tools/gpu_check.py (`make gpu-check`) and its modules tools/gpu_*.py: the no-GPU exit, the 14 GiB rule, the
report, the wheel list, the models folder, and one notebook through the whole harness on a CPU (``--allow-cpu``,
slow)."""

import filecmp
import json
import os
import subprocess
import sys

import nbformat
import pytest

from course_utils.models import hub
from course_utils.paths import ROOT

TOOLS = ROOT / "tools"
TOOL = TOOLS / "gpu_check.py"
sys.path.insert(0, str(TOOLS))  # the tool's modules import each other by name, as `python tools/gpu_check.py` runs
import gpu_models  # noqa: E402
import gpu_report  # noqa: E402
import gpu_runs  # noqa: E402
import gpu_wheels  # noqa: E402


def row(notebook="01_text_to_image", profile="sd15", seconds=12.5, peak=3.2, passed=True, status="passed"):
    return dict(
        notebook=notebook,
        profile=profile,
        seconds=seconds,
        peak_gib=peak,
        reserved_gib=None if peak is None else peak + 0.5,
        estimate_gib=None if profile == "tiny" else 2.5,
        passed=passed,
        status=status,
        summary="15 passed in 12.00s" if passed else "1 failed, 14 passed",
    )


def test_without_a_gpu_it_exits_at_once_and_says_what_to_run():
    # GPU_CHECK_ASSUME_NO_GPU: the same answer on a machine that has one
    code = (
        "import runpy, sys\nsys.argv = ['gpu_check.py']\ntry:\n    runpy.run_path(%r, run_name='__main__')\n"
        "except SystemExit as err:\n    print('EXIT', err.code, 'torch' in sys.modules, 'diffusers' in sys.modules)\n"
    ) % str(TOOL)
    env = dict(os.environ, GPU_CHECK_ASSUME_NO_GPU="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "EXIT 2 False False" in proc.stdout, proc.stdout + proc.stderr  # non-zero at once: nothing heavy imported
    for needle in ("needs an NVIDIA GPU", "make test", "make gpu-check"):
        assert needle in proc.stderr, needle


def test_the_14_gib_rule():
    assert gpu_report.LIMIT_GIB == 14
    assert not gpu_report.over_limit(row(peak=13.99))
    assert not gpu_report.over_limit(row(peak=14.0))  # at the limit is within it
    assert gpu_report.over_limit(row(peak=14.01))
    assert not gpu_report.over_limit(row(peak=None))  # n/a (a CPU run) never fails the rule
    assert gpu_report.over_limit(row(peak=10.5), limit_gib=10)
    found = gpu_report.problems(
        [
            row(peak=15.2),
            row(notebook="03_denoising_loop", passed=False, status="failed"),
            row(notebook="06_upscaling", peak=2.0),
        ]
    )
    assert len(found) == 2
    assert "01_text_to_image on sd15: peak 15.20 GiB > 14 GiB" in found
    assert found[1].startswith("03_denoising_loop on sd15: failed")
    assert gpu_report.problems([row(), row(profile="tiny", peak=None)]) == []


def test_report_writer(tmp_path):
    report = dict(
        date="2026-11-28T12:00:00+00:00",
        limit_gib=14.0,
        total_seconds=431.0,
        settings="",
        machine=dict(
            gpu="NVIDIA H100 80GB HBM3",
            driver="580.159.04",
            gpu_memory="81559 MiB",
            cuda="13.0",
            torch="2.11.0+cu130",
            diffusers="0.42.1",
            transformers="5.17.0",
            huggingface_hub="1.33.0",
            peft="0.21.2",
            python="3.12.3",
            cpus=16,
        ),
        sd15_source="full-size lookalikes",
        bench=dict(status="done", seconds=61.0, output="row  1.0 s"),
        rows=[
            row(profile="tiny", seconds=9.0, peak=0.4),
            row(peak=15.0),
            row(notebook="06_upscaling", peak=None, passed=False, status="timeout"),
        ],
    )
    md_path, json_path = gpu_report.write_report(report, tmp_path / "docs")
    assert (md_path.name, json_path.name) == ("gpu-report.md", "gpu-report.json")
    assert json.loads(json_path.read_text()) == report
    md = md_path.read_text()
    for needle in (
        "NVIDIA H100 80GB HBM3",
        "driver 580.159.04",
        "torch 2.11.0+cu130",
        "diffusers 0.42.1",
        "transformers 5.17.0",
        "2026-11-28",
        "| notebook | profile | seconds | peak GiB |",
        "| `01_text_to_image` | tiny | 9.0 | 0.40 | n/a | 0.90 | pass |",
        "| `01_text_to_image` | sd15 | 12.5 | 15.00 | 2.50 | 15.50 | pass - OVER 14 GiB |",
        "| `06_upscaling` | sd15 | 12.5 | n/a | 2.50 | n/a | TIMEOUT |",
        "FAILED",
        "done (61 s)",
        "row  1.0 s",
        "estimate = `docs/gpu-memory.json`",
    ):
        assert needle in md, needle
    report["rows"] = report["rows"][:1]
    assert "all passed" in gpu_report.write_report(report, tmp_path)[0].read_text()


def test_estimates_come_from_the_committed_table():
    """gpu-check puts course_utils.gpu_memory's estimate (docs/gpu-memory.json) beside each sd15 measurement."""
    lessons = json.loads(gpu_runs.ESTIMATES.read_text())["lessons"]
    assert gpu_runs.estimated_gib("06_upscaling", "sd15") == next(r["peak_gib"] for r in lessons if r["lesson"] == "06")
    assert gpu_runs.estimated_gib("06_upscaling", "tiny") is None and gpu_runs.estimated_gib("99_new", "sd15") is None


def test_wheels_are_the_pinned_missing_ones_and_never_torch():
    specs = gpu_wheels.wheel_specs()
    names = [s.split("==")[0].lower().replace("_", "-") for s in specs]
    assert len(names) == len(set(names))  # one version of each: two stop the install
    assert {"diffusers==0.42.1", "nbval==0.11.0", "ipykernel==7.4.0", "peft==0.21.2"} <= set(specs)  # requirements*.txt
    assert not {"torch", "transformers", "huggingface-hub", "olah", "accelerate", "safetensors"} & set(
        names
    )  # the image's
    assert {"ipywidgets", "jupyter-client", "pyzmq", "tornado", "ipython"} <= set(names)
    with_pins = gpu_wheels.wheel_specs(with_pins=True)
    assert "transformers==5.24.0" in with_pins and "huggingface_hub==2.4.0" in with_pins


def test_models_folder_keeps_what_the_download_command_fetches():
    files = [
        "model_index.json",
        "v1-5-pruned.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "README.md",
        ".gitattributes",
    ]
    sd15 = gpu_models.keep(files, *gpu_models.wanted_files("stable-diffusion-v1-5/stable-diffusion-v1-5"))
    assert sd15 == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
    }
    no_fp16 = [f for f in files if ".fp16." not in f]  # Counterfeit's folders have no fp16 variant
    counterfeit = gpu_models.keep(
        no_fp16
        + ["unet/diffusion_pytorch_model.bin", "Counterfeit-V2.5_fp16.safetensors", "Counterfeit-V2.2.safetensors"],
        *gpu_models.wanted_files("gsdf/Counterfeit-V2.5"),
    )
    assert (
        "unet/diffusion_pytorch_model.safetensors" in counterfeit and "Counterfeit-V2.5_fp16.safetensors" in counterfeit
    )
    assert (
        not {
            "unet/diffusion_pytorch_model.bin",
            "Counterfeit-V2.2.safetensors",
            "unet/diffusion_pytorch_model.non_ema.safetensors",
            "v1-5-pruned.safetensors",
        }
        & counterfeit
    )
    assert gpu_models.keep(
        ["EasyNegative.safetensors", "README.md"], *gpu_models.wanted_files("gsdf/EasyNegative")
    ) == {"EasyNegative.safetensors"}
    every = set(hub.SD15_REPOS.values()) | {
        hub.COUNTERFEIT_REPO,
        hub.EASYNEGATIVE_REPO,
        hub.LCM_LORA_REPO,
        hub.STYLE_LORA_REPO,
        hub.CONTROLNET_REPO,
    }  # = lookalikes()
    assert sorted(repo for group in gpu_models.build_groups() for repo in group) == sorted(every)


@pytest.mark.parametrize("jobs", [1, 2, 3, 4, 8])
def test_fewer_build_processes_still_build_every_repository_once(jobs):
    groups = gpu_models.build_groups(jobs)
    assert 1 <= len(groups) <= jobs
    assert sorted(repo for group in groups for repo in group) == sorted(r for g in gpu_models.build_groups() for r in g)


def test_the_build_plan_comes_from_the_python_that_builds():
    """The Python that starts the check may not import the course: it asks the build's Python for the groups."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert gpu_models.build_plan(sys.executable, env, 2) == gpu_models.build_groups(2)
    with pytest.raises(gpu_models.BuildError):
        gpu_models.build_plan(sys.executable, env, "not-a-number")


def test_the_models_folder_skips_single_files_by_a_parameter_not_a_patch(tmp_path):
    """The lookalike's writer leaves out the single files nobody fetches (gigabytes at full size) by its own
    ``single_files`` parameter: no mock in the tool."""
    for path in TOOLS.glob("gpu_*.py"):
        assert "mock" not in path.read_text(), path.name
    from course_utils.models import lookalike

    specs = lookalike.lookalikes()
    for name in ("counterfeit", "easynegative"):
        (tmp_path / name).mkdir()
    specs[hub.COUNTERFEIT_REPO].write(tmp_path / "counterfeit", "small", single_files={hub.COUNTERFEIT_FILE})
    assert [p.name for p in (tmp_path / "counterfeit").glob("*.safetensors")] == [hub.COUNTERFEIT_FILE]
    assert (tmp_path / "counterfeit" / "model_index.json").exists()  # the pipeline folders as ever
    specs[hub.EASYNEGATIVE_REPO].write(tmp_path / "easynegative", "small", single_files=set())
    assert not any((tmp_path / "easynegative").iterdir())


def test_notebooks_are_globbed_and_selected():
    every = gpu_runs.find_notebooks(None)
    assert [p.name for p in every] == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in gpu_runs.find_notebooks(["01", "notebooks/03_denoising_loop.ipynb"])] == [
        "01_text_to_image.ipynb",
        "03_denoising_loop.ipynb",
    ]
    with pytest.raises(gpu_runs.NoSuchNotebook):
        gpu_runs.find_notebooks(["99"])


@pytest.mark.slow
def test_models_folder_is_byte_identical_to_the_lookalikes(tmp_path, lookalikes):
    """The folder the run builds = the lookalike repositories' files that `download sd15` keeps (small size here)."""

    repos = lookalikes  # the test run's one build (tests/conftest.py)
    for repo, source in repos.items():
        folder = gpu_models.build_repo(repo, tmp_path / "models", "small")
        mine = sorted(
            p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != ".gpu-check-stamp"
        )
        theirs = sorted(
            p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file() and ".git" not in p.parts
        )
        assert set(mine) == gpu_models.keep(theirs, *gpu_models.wanted_files(repo)), repo
        assert all(filecmp.cmp(folder / name, source / name, shallow=False) for name in mine), repo
    mtime = (folder / ".gpu-check-stamp").stat().st_mtime
    gpu_models.build_repo(repo, tmp_path / "models", "small")  # current: kept, not rebuilt
    assert (folder / ".gpu-check-stamp").stat().st_mtime == mtime


SYNTHETIC_CELLS = [  # a lesson in miniature: the course's setup, a tiny picture, a few more cells for the hook to see
    "import course_utils as cu\nchoice = cu.setup()",
    "pipe = cu.load_pipeline('text2img')",
    "image = pipe(cu.prompt('main', choice.profile), num_inference_steps=2, height=64, width=64).images[0]",
    "print(image.size)",
    "x = sum(range(10))",
    "print(x)",
    "assert x == 45",
]


@pytest.mark.slow
def test_one_notebook_through_the_harness_on_a_cpu(tmp_path):
    """``--allow-cpu --profile tiny`` on a small synthetic notebook (``--notebooks-dir``): the row (seconds, passed,
    n/a), the report files, the kernel hook. The lessons themselves run under nbval in the rest of the suite."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in SYNTHETIC_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "99_synthetic.ipynb")
    cmd = [
        sys.executable,
        str(TOOL),
        "--allow-cpu",
        "--profile",
        "tiny",
        "--notebooks-dir",
        str(folder),
        "--no-bench",
        "--report-dir",
        str(tmp_path / "report"),
        "--work",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "gpu-report.json").read_text())
    (only,) = report["rows"]
    assert only["notebook"] == "99_synthetic" and only["profile"] == "tiny"
    assert only["passed"] and only["status"] == "passed" and only["seconds"] > 0
    assert report["problems"] == [] and report["bench"]["status"].startswith("skipped")
    peak = json.loads((tmp_path / "work" / "peaks" / "tiny-99_synthetic.json").read_text())
    assert peak["cells"] >= len(SYNTHETIC_CELLS)  # the startup hook ran after every cell inside the kernel
    if not peak["cuda"]:
        assert only["peak_gib"] is None
        assert "| `99_synthetic` | tiny |" in (tmp_path / "report" / "gpu-report.md").read_text()
        assert "| n/a | n/a | pass |" in (tmp_path / "report" / "gpu-report.md").read_text()
