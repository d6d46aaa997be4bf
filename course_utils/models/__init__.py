"""The model layer: every architecture, every source of weights, every builder - and nothing else.

Modules (each imports only those above it in this list, and ``course_utils.device``/``paths``):

* :mod:`.configs`  - architecture configs: SD 1.5, the x4 upscaler, every `tiny` model (plain dicts);
* :mod:`.weights`  - which weight files a pipeline folder holds and which to download (fp16, safetensors, .bin);
* :mod:`.hub`      - the `sd15` Hub repositories and where their files come from (local folder, cache, Hub/mirror);
* :mod:`.tiny`     - the `tiny` models' files in ``data/tiny`` and the cache their pipelines are assembled in;
* :mod:`.profiles` - the three profiles, and the settings, prompts and images the lessons give each;
* :mod:`.surgery`  - weights made from other weights (inpainting UNet, upscaler VAE), shared with ``training/``;
* :mod:`.builders` - one builder per profile for every role (`tiny`, `sd15-random`);
* :mod:`.files`    - the single files lesson 07 loads (checkpoint, embedding, LoRA), per profile;
* :mod:`.registry` - the roles, :func:`~.registry.choose` and :func:`~.registry.load_pipeline`;
* :mod:`.original_layout` - SD 1.5 and the x4 upscaler in the original (CompVis/LDM) key layout, for single files;
* :mod:`.lookalike_parts` - the random models inside those lookalikes: configs per size, seeds, pipelines, LoRA;
* :mod:`.lookalike_files` - each lookalike repository's files, written as the Hub's are;
* :mod:`.lookalike` - lookalikes of the `sd15` Hub repositories (random weights) for a local Hub mirror: the
  repositories, built as git repositories.

Lesson modules (``course_utils.inpaint``, ``upscale``, ...) and ``training/`` build on this layer;
it never imports them.
"""
