"""Model configurations: SD 1.5's real ones and the course's small ``tiny`` ones.

Both use exactly the same classes (``CLIPTextModel``, ``UNet2DConditionModel``,
``AutoencoderKL``, ``PNDMScheduler``); only the sizes differ. Every setting is the
argument of that class's constructor.
"""

# SD 1.5's scheduler config (stable-diffusion-v1-5/stable-diffusion-v1-5, scheduler/scheduler_config.json).
SD15_SCHEDULER = {
    "beta_start": 0.00085,  # variance of the noise added at the first step
    "beta_end": 0.012,  # ... and at the last (1000th) step
    "beta_schedule": "scaled_linear",  # betas = linspace(sqrt(start), sqrt(end), 1000) ** 2
    "num_train_timesteps": 1000,  # training used t = 0 .. 999
    "skip_prk_steps": True,  # PNDM: use only the fast PLMS steps
    "set_alpha_to_one": False,
    "steps_offset": 1,  # timesteps are 981, 961, ... instead of 980, 960, ...
    "clip_sample": False,
    "prediction_type": "epsilon",  # the UNet predicts the added noise
    "trained_betas": None,
    "timestep_spacing": "leading",
}

# --- SD 1.5, full size (used by the `sd15-random` profile) -------------------------------
SD15_TEXT_ENCODER = dict(
    vocab_size=49408,  # CLIP's BPE vocabulary
    hidden_size=768,  # width of each token's embedding -> text embeddings [1, 77, 768]
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,  # the 77-token window
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
SD15_UNET = dict(
    sample_size=64,  # latents are 64x64 for 512x512 images
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,  # = the text encoder's hidden size
    attention_head_dim=8,
)
SD15_VAE = dict(
    sample_size=512,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),  # 4 blocks -> 3 downsamplings -> 8x smaller
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    scaling_factor=0.18215,  # latents are multiplied by this so they have roughly unit variance
)

# --- tiny: the same architecture, ~4 M parameters -----------------------------------------
TINY_TEXT_ENCODER = dict(
    SD15_TEXT_ENCODER,
    hidden_size=32,  # text embeddings [1, 77, 32]
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    projection_dim=32,
)
TINY_UNET = dict(
    SD15_UNET,
    sample_size=32,  # latents 32x32 -> default images 256x256
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    cross_attention_dim=32,  # = TINY_TEXT_ENCODER hidden_size
    attention_head_dim=2,  # few heads: 64x64 self-attention stays cheap on a CPU
)
TINY_VAE = dict(
    SD15_VAE,
    sample_size=256,
    block_out_channels=(16, 32, 32, 32),  # still 4 blocks -> 8x downsampling like SD
    layers_per_block=1,
    norm_num_groups=16,
)

# Seeds used to initialise the tiny models (random weights until a trained version ships).
TINY_SEED = 0
