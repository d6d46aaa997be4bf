import pytest
from PIL import Image

import course_utils as cu
from course_utils.paths import DATA_DIR


def test_bare_name_found_in_data():
    image = cu.load_image("sketch.png")
    assert image.mode == "RGB" and image.size == (512, 512)


def test_missing_file_names_path_and_data(tmp_path):
    with pytest.raises(cu.CourseError) as info:
        cu.load_image(tmp_path / "missing.png")
    message = str(info.value)
    assert "missing.png" in message and "sketch.png" in message and "astronaut.png" in message


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(cu.CourseError, match="not an image"):
        cu.load_image(path)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "LA", "I;16"])
def test_any_mode_becomes_rgb(tmp_path, mode, capsys):
    source = Image.open(DATA_DIR / "astronaut.png").convert("RGB").resize((64, 48))
    image = source.convert(mode) if mode != "I;16" else source.convert("L").convert("I;16")
    suffix = ".jpg" if mode == "CMYK" else ".png"
    if mode in ("CMYK",):
        image.save(tmp_path / f"x{suffix}")
        loaded = cu.load_image(tmp_path / f"x{suffix}")
    else:
        loaded = cu.load_image(image)
    assert loaded.mode == "RGB" and loaded.size == (64, 48)
    assert "converted to RGB" in capsys.readouterr().out


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert cu.load_image(rgba).getpixel((0, 0)) == (255, 255, 255)


def test_size_rounded_to_multiple_of_8(capsys):
    image = cu.load_image("chelsea.png", size=(451, 300))
    assert image.size == (448, 296)
    assert "rounded down" in capsys.readouterr().out
    assert cu.load_image("chelsea.png", size=64).size == (64, 64)


def test_check_size():
    cu.check_size(512, 256)
    with pytest.raises(cu.CourseError, match="multiple of 8"):
        cu.check_size(500, 256)
    with pytest.raises(cu.CourseError, match="too small"):
        cu.round_size(4)
