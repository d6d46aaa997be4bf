"""Training the course's `tiny` models on the synthetic world of ``course_utils.world``.

``python -m training STAGE [--steps N] [--out DIR] [--resume] [--overrides FILE] [--set KEY=VALUE]``,
``python -m training all``, ``python -m training export --to DIR``, ``python -m training restore --out DIR``
(start from the exported weights), ``python -m training diagnose`` (negative prompts vs shapes).

The recipe: ``training/config.py``; the runs that made ``data/tiny``: ``training/runs_that_made_data_tiny/``;
what they did and scored: ``docs/training.md``. Imports only the model layer (``course_utils.models``),
``course_utils.world`` and ``course_utils.scores``, never a lesson module.
"""
