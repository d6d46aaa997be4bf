"""Make the course's input images in ``data/``.

* ``astronaut.png``, ``chelsea.png``, ``horse.png``: public-domain / CC0 photos taken
  from the scikit-image wheel (downloaded with ``pip download --no-deps``, never
  installed); credits in ``data/README.md``.
* ``sketch.png``: a child-like landscape sketch (sky, hills, a sun, a house) drawn by
  this script with PIL, for the image-to-image lesson.
* ``tiny_scene.png``, ``tiny_scene2.png``, ``tiny_sketch.png``: the `tiny` profile's inputs, scenes
  of its synthetic world (``course_utils.world``) and a rough hand-drawn-looking sketch of one.

Usage::

    pip download --no-deps --only-binary=:all: scikit-image==0.25.2 -d /tmp/wheels
    python tools/make_data.py /tmp/wheels/scikit_image-*.whl data
    python tools/make_data.py --tiny data      # only the tiny inputs
"""

import math
import random
import sys
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

PHOTOS = ("astronaut.png", "chelsea.png", "horse.png")


def draw_sketch(size: int = 512) -> Image.Image:
    """Draw a simple landscape in flat colours: sky, sun, two hills, a house with a red roof."""
    s = size / 512  # every coordinate below is given for a 512x512 canvas
    img = Image.new("RGB", (size, size), (135, 190, 235))  # sky
    d = ImageDraw.Draw(img)
    d.ellipse([380 * s, 50 * s, 460 * s, 130 * s], fill=(250, 210, 60))  # sun
    d.ellipse([-150 * s, 280 * s, 330 * s, 700 * s], fill=(80, 160, 70))  # left hill
    d.ellipse([180 * s, 300 * s, 700 * s, 720 * s], fill=(60, 130, 60))  # right hill
    d.rectangle(
        [90 * s, 300 * s, 210 * s, 400 * s], fill=(230, 220, 200), outline=(60, 40, 30), width=max(1, int(3 * s))
    )
    d.polygon([(75 * s, 300 * s), (150 * s, 230 * s), (225 * s, 300 * s)], fill=(190, 50, 40))  # roof
    d.rectangle([135 * s, 345 * s, 165 * s, 400 * s], fill=(110, 70, 40))  # door
    return img


def draw_tiny_inputs(out: Path) -> list:
    """The `tiny` world's lesson inputs: two clean scenes and a wobbly sketch (64x64)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from course_utils import world

    world.draw("red", "circle", "blue", cx=30, cy=34, r=17).save(out / "tiny_scene.png")
    world.draw("green", "square", "white", cx=34, cy=30, r=15).save(out / "tiny_scene2.png")
    # The sketch: off-white paper, an uneven orange-red blob in the upper left drawn with a shaky
    # hand (not one of the world's exact colours or shapes), so img2img must clean it up but keep the layout.
    s, rng = 4, random.Random(3)
    img = Image.new("RGB", (64 * s, 64 * s), (200, 210, 235))
    d = ImageDraw.Draw(img)
    points = []
    for k in range(24):
        a = 2 * math.pi * k / 24
        rad = 14 * s * (1 + rng.uniform(-0.12, 0.12))
        points.append((22 * s + rad * math.cos(a), 24 * s + rad * math.sin(a)))
    d.polygon(points, fill=(225, 80, 50), outline=(120, 40, 30), width=2 * s)
    img.resize((64, 64), Image.Resampling.BOX).save(out / "tiny_sketch.png")
    return ["tiny_scene.png", "tiny_scene2.png", "tiny_sketch.png"]


def main(wheel: str, out_dir: str) -> None:
    if wheel == "--tiny":
        print("wrote", ", ".join(draw_tiny_inputs(Path(out_dir))), "to", out_dir)
        return
    out = Path(out_dir)
    with zipfile.ZipFile(wheel) as zf:
        for name in PHOTOS:
            (out / name).write_bytes(zf.read(f"skimage/data/{name}"))
    draw_sketch().save(out / "sketch.png")
    tiny = draw_tiny_inputs(out)
    print("wrote", ", ".join(PHOTOS + ("sketch.png", *tiny)), "to", out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
