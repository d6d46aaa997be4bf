"""The condition a canny ControlNet reads: a picture's Canny edge map, white edges (255) on black, 3 channels.

This is the format of the canny ControlNets on the Hub (diffusers' canny examples and lllyasviel's annotator make it
with ``cv2.Canny(image, 100, 200)`` and stack the one channel three times) and of ``tiny``'s ControlNet
(``data/tiny/controlnet``, trained on the shapes world's 64x64 scenes with the same thresholds).

OpenCV comes as one of several pip packages that all install the same ``cv2`` (``opencv-python``,
``opencv-python-headless``, ``opencv-contrib-python``); two of them side by side overwrite each other's files. Colab
ships ``opencv-python``, so the course installs none there (the first cell installs the course without the
``edges`` extra); on your machine ``make install`` adds ``opencv-python-headless``, the build without GUI libraries
that also runs on servers and in CI. Any of them will do: this module only needs ``import cv2``.
"""

import numpy as np
from PIL import Image

LOW, HIGH = 100, 200  # Canny's hysteresis thresholds (gradient magnitudes): diffusers' examples' and the community's


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "edge maps need OpenCV (`import cv2`): `pip install opencv-python-headless` (or `pip install -e .[edges]` "
            "in the course's folder). If another OpenCV package is installed already, use that one: two of them "
            "overwrite each other's files."
        ) from None
    return cv2


def canny(image: Image.Image, low: int = LOW, high: int = HIGH) -> Image.Image:
    """The Canny edge map of ``image``: the ControlNet condition.

    Args:
        image (`PIL.Image.Image`): an RGB picture, any size (``tiny``: 64x64; SD 1.5: 512x512).
        low (`int`, defaults to 100): gradients below this are never edges.
        high (`int`, defaults to 200): gradients above this are always edges; those between count only when they
            touch one that is.

    Returns:
        `PIL.Image.Image`: RGB, the size of ``image``, 255 on edges and 0 elsewhere in all three channels.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"canny() takes a PIL image, not {type(image).__name__}: e.g. diffusers.utils.load_image(path)")
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got low={low}, high={high}")
    edges = _cv2().Canny(np.asarray(image.convert("RGB")), low, high)  # [H, W] uint8, 0 or 255
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def canny_batch(images) -> np.ndarray:
    """``canny`` of many pictures as one array ``[N, H, W]`` of uint8 (0 or 255), the one channel of each map."""
    cv2 = _cv2()
    return np.stack([cv2.Canny(np.asarray(im.convert("RGB")), LOW, HIGH) for im in images])
