"""The three profiles, and what each lesson feeds the models of each: settings, prompts, input images.

* ``sd15`` - the real models from the Hugging Face Hub (or a mirror, cache or local folder).
* ``tiny`` - the course's own small models with SD 1.5's architecture; no network, seconds on a CPU.
* ``sd15-random`` - SD 1.5's full-size architecture with random weights, for speed/memory only.

`tiny` only knows its synthetic world (``course_utils.world``: one coloured circle, square or
triangle on a plain background, 64x64), so it gets settings and prompts of that world.
"""

import os

from ..errors import CourseError

PROFILES = ("sd15", "tiny", "sd15-random")

# Generation settings that suit each profile (a learner may pass others). `tiny`'s come from its
# model card (data/tiny/README.md): 64x64 is what it was trained on, and a model this small needs
# a gentler guidance than SD 1.5's 7.5.
DEFAULTS = {
    "sd15": dict(height=512, width=512, num_inference_steps=50, guidance_scale=7.5),
    "tiny": dict(height=64, width=64, num_inference_steps=25, guidance_scale=3.0),
    "sd15-random": dict(height=512, width=512, num_inference_steps=25, guidance_scale=7.5),
}

# The lessons' prompts, named by what they are for.
PROMPTS = {
    "sd15": {
        "main": "a photograph of an astronaut riding a horse",  # the course's running example (lessons 1-5)
        "restyle": "ghibli style, a fantasy landscape with castles",  # a second prompt for the same sketch (lesson 4)
        "describe_photo": "a close-up photograph of a tabby cat's face with green eyes",  # describes image_name("upscale") (lesson 6)
        "negative": "blurry, low quality",  # the negative prompt (lesson 5)
        "inpaint": "a photograph of an astronaut wearing a red knitted hat",  # what to paint into the mask (lesson 8)
        "another_edit": "a photograph of a cat sitting on a sofa",  # a second inpainting edit (lesson 8, exercise 3)
        "new_concept": "a photo of sks cat",  # lesson 10's DreamBooth-style LoRA: "sks" is a rare token for this one cat
        "concept_class": "a photo of a cat",  # its class: what the model already draws (the prior to preserve)
        "controlnet": "an oil painting of an astronaut in a white space suit, thick brush strokes",  # over the photo's edges (lesson 11)
        "against_edges": "a photograph of a cat",  # a prompt the photo's edges contradict (lesson 11, section 6)
    },
    "tiny": {
        "main": "a red circle on a blue background",
        "restyle": "a yellow triangle on a black background",
        "describe_photo": "a green square on a white background",
        "negative": "red",  # a colour to keep out of the picture
        "open_color": "a circle on a white background",  # leaves the circle's colour to the model (lesson 5); white is never a shape's colour
        "open_shape": "a red shape on a white background",  # leaves the shape to the model (lesson 5, exercise 4)
        "inpaint": "a green square on a blue background",  # what to paint into the masked box (the rest stays blue)
        "another_edit": "a green square on a white background",
        "new_concept": "a red diamond on a white background",  # lesson 10: a shape the model has never seen
        "concept_class": "a red square on a white background",  # what it draws instead (and must keep drawing)
        "controlnet": "a yellow circle on a purple background",  # over the photo's edges: the colours differ (lesson 11)
        "against_edges": "a yellow square on a purple background",  # the photo's edges are a circle's (lesson 11, section 6)
    },
}
PROMPTS["sd15-random"] = PROMPTS["sd15"]

# The lessons' input images, named by what they are for: files in data/ (see data/README.md).
IMAGES = {
    "sd15": {
        "photo": "astronaut.png",
        "sketch": "sketch.png",
        "upscale": "chelsea.png",
        "new_concept": "chelsea.png",
    },  # lesson 10: crops of this cat teach the model "sks cat"
    "tiny": {"photo": "tiny_scene.png", "sketch": "tiny_sketch.png", "upscale": "tiny_scene2.png"},
}
IMAGES["sd15-random"] = IMAGES["sd15"]


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is one of :data:`PROFILES`, else raise a `CourseError` that lists them."""
    if profile not in PROFILES:
        raise CourseError(f"Unknown profile {profile!r}; expected one of {PROFILES}.")
    return profile


def default_settings(profile: str) -> dict:
    """Generation settings (``height``, ``width``, ``num_inference_steps``, ``guidance_scale``) that suit ``profile``.

    ``COURSE_SETTINGS`` overrides them for every lesson, e.g. ``COURSE_SETTINGS=num_inference_steps=20`` on a
    slow GPU, or ``height=64,width=64,num_inference_steps=10`` for the small lookalike repositories of
    ``python -m course_utils hub --serve`` (the tests run every lesson on `sd15` that way).

    Raises:
        CourseError: ``COURSE_SETTINGS`` names an unknown setting or a value that is not a number.
    """
    settings = dict(DEFAULTS[check_profile(profile)])
    for item in filter(None, (part.strip() for part in os.environ.get("COURSE_SETTINGS", "").split(","))):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in settings:
            raise CourseError(
                f"COURSE_SETTINGS: unknown setting {key!r}; known: {sorted(settings)} (e.g. COURSE_SETTINGS=num_inference_steps=20)."
            )
        try:
            settings[key] = type(settings[key])(float(value)) if isinstance(settings[key], float) else int(value)
        except ValueError:
            raise CourseError(f"COURSE_SETTINGS: {key}={value!r} is not a number.") from None
    return settings


def image_name(name: str, profile: str) -> str:
    """The file in ``data/`` that the lessons call ``name`` (``"photo"``, ``"sketch"``, ``"upscale"``) for ``profile``."""
    try:
        return IMAGES[check_profile(profile)][name]
    except KeyError:
        raise CourseError(f"No image {name!r} for profile {profile!r}; known: {sorted(IMAGES[profile])}") from None


def prompt(name: str, profile: str) -> str:
    """The lesson prompt called ``name`` (e.g. ``"main"``, ``"negative"``; see :data:`PROMPTS`) for ``profile``."""
    try:
        return PROMPTS[check_profile(profile)][name]
    except KeyError:
        raise CourseError(f"No prompt {name!r} for profile {profile!r}; known: {sorted(PROMPTS[profile])}") from None
