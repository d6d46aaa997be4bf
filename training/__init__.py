"""Training the course's `tiny` models on the synthetic world of ``course_utils.world``.

``python -m training STAGE [--steps N] [--out DIR] [--resume]``, ``python -m training all``,
``python -m training export --to DIR``. Settings: ``training/config.py``.
"""
