"""The requirement pins: one parser (course_utils/requirements.py) for doctor and tools/gpu_check.py, and
requirements.txt (Colab, make install) in agreement with pyproject.toml (pip install .)."""

from course_utils import requirements
from course_utils.paths import ROOT


def test_parse_reads_names_and_specifiers():
    lines = [
        "# a comment",
        "",
        "-r requirements.txt",
        "diffusers==0.42.1",
        "Huggingface_Hub == 2.4.0",
        "ipywidgets>=7.7,<9  # Colab's",
        "pillow",
    ]
    assert requirements.parse(lines) == {
        "diffusers": "==0.42.1",
        "huggingface-hub": "==2.4.0",
        "ipywidgets": ">=7.7,<9",
        "pillow": "",
    }


def test_requirements_txt_reads_as_doctor_needs_it():
    pins = requirements.requirement_pins()
    assert pins["diffusers"].startswith("==") and pins["ipywidgets"] == ">=7.7,<9" and "torch" not in pins
    assert requirements.requirement_pins(ROOT / "no-such-file.txt") == {}


def test_pyproject_and_requirements_txt_pin_the_same_versions():
    """`pip install .` (pyproject.toml) and Colab's first cell / `make install` (requirements.txt) install the same."""
    assert requirements.pyproject_dependencies() == requirements.requirement_pins()


def test_gpu_check_and_doctor_read_the_same_pins():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_wheels", ROOT / "tools" / "gpu_wheels.py")
    gpu_wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_wheels)
    exact = {name: pin[2:] for name, pin in requirements.requirement_pins().items() if pin.startswith("==")}
    assert exact.items() <= gpu_wheels.requirement_pins().items()
