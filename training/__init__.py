"""Training the course's `tiny` models on the synthetic world of ``course_utils.world``.

``python -m training STAGE [--steps N] [--out DIR] [--resume]``, ``python -m training all``,
``python -m training export --to DIR``, ``python -m training restore --out DIR`` (start from the
exported weights). Settings: ``training/config.py``.
"""
