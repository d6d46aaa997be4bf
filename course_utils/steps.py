"""Watch a pipeline work: capture the latents at each denoising step (lesson 03, §7).

Uses diffusers' ``callback_on_step_end`` hook, which calls a function after every
``scheduler.step`` with the current tensors (``callback_kwargs["latents"]``).
"""

import torch


class LatentRecorder:
    """A ``callback_on_step_end`` that keeps a CPU copy of the latents every few steps.

    Lesson 03, §7 records the pipeline's latents with it, to compare them step by step with the loop by hand;
    used again in lesson 08's exercises.

    Args:
        every (`int`, defaults to 1): keep every ``every``-th step; the last step is always kept.

    Attributes:
        steps (`list[int]`): the step indices kept (0-based).
        timesteps (`list[int]`): the scheduler timestep ``t`` of each kept step.
        latents (`list[torch.Tensor]`): each of shape ``[batch, 4, height/8, width/8]``, *after*
            that step's ``scheduler.step`` (i.e. the latents the next step starts from).

    Example::

        rec = LatentRecorder(every=5)
        pipe(prompt, callback_on_step_end=rec)
        print(len(rec.latents), rec.latents[0].shape)
    """

    def __init__(self, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.steps, self.timesteps, self.latents = [], [], []

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        last = step == pipe.num_timesteps - 1
        if step % self.every == 0 or last:
            self.steps.append(step)
            self.timesteps.append(int(timestep))
            self.latents.append(callback_kwargs["latents"].detach().to("cpu", torch.float32).clone())
        return callback_kwargs
