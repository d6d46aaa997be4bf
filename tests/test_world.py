"""The synthetic world (data for the trained `tiny` models, issue 4) and its classifier."""
import collections

import pytest

from course_utils import world


def test_deterministic_by_seed():
    a, b = world.sample(7), world.sample(7)
    assert a.caption == b.caption and a.image.tobytes() == b.image.tobytes()
    assert a.image.size == (world.SIZE, world.SIZE) and a.image.mode == "RGB"


def test_held_out_never_in_train():
    combos = {(s.color, s.shape, s.background) for s in map(world.sample, range(2000))}
    assert not combos & set(world.HELD_OUT)
    held = {(s.color, s.shape, s.background) for s in (world.sample(i, "held_out") for i in range(200))}
    assert held == set(world.HELD_OUT)


def test_captions():
    captions = [world.sample(i).caption for i in range(2000)]
    empty = captions.count("") / len(captions)
    assert 0.07 < empty < 0.13
    assert any("background" in c for c in captions) and not any(" a orange" in c for c in captions)


@pytest.mark.parametrize("split", ["train", "held_out"])
def test_classifier_reads_ground_truth(split):
    right = collections.Counter()
    n = 400
    for i in range(n):
        s = world.sample(i, split)
        got = world.classify(s.image)
        right["color"] += got["color"] == s.color
        right["shape"] += got["shape"] == s.shape
        right["background"] += got["background"] == s.background
    assert {k: v / n for k, v in right.items()} == {"color": 1.0, "shape": 1.0, "background": 1.0}


def test_classifier_on_empty_image():
    from PIL import Image

    assert world.classify(Image.new("RGB", (64, 64), "white"))["shape"] is None
