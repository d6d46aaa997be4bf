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

# --- tiny: the same classes, trained by this repository (training/, weights in data/tiny) ---
# 64x64 images, a 4x VAE -> 16x16x4 latents; ~8 M parameters, most of them CLIP's 49408-word
# token embedding. `python -m training` trains exactly these configs.
TINY_TEXT_ENCODER = dict(
    SD15_TEXT_ENCODER,  # CLIP's vocabulary and 77 positions: any prompt tokenizes as in SD 1.5
    hidden_size=64,  # text embeddings [1, 77, 64] (SD 1.5: 768)
    intermediate_size=256,  # 4 x hidden, as CLIP
    num_hidden_layers=2,  # SD 1.5: 12
    num_attention_heads=4,
    projection_dim=64,
)
TINY_UNET = dict(
    SD15_UNET,
    sample_size=16,  # 16x16 latents -> 64x64 images by default
    block_out_channels=(32, 64, 64),  # 3 levels: 16x16, 8x8, 4x4 (SD 1.5: 4 levels, 320-1280 channels)
    layers_per_block=1,  # SD 1.5: 2
    # SD 1.5's pattern (cross-attention blocks, a plain block at the lowest resolution), one level fewer
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,  # = TINY_TEXT_ENCODER hidden_size
    attention_head_dim=4,  # diffusers' legacy name: the number of heads (SD 1.5: 8)
)
TINY_VAE = dict(
    SD15_VAE,
    sample_size=64,
    block_out_channels=(32, 64, 64),  # 3 blocks -> 4x downsampling: 64x64x3 -> 16x16x4 (SD 1.5: 8x)
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,  # SD 1.5: 2
    norm_num_groups=32,
    scaling_factor=1.0,  # measured by training (1 / std of the latents); data/tiny/text2img/vae/config.json has the value
)

# Seed of the random initialisation of the `sd15-random` models (the `tiny` ones are trained: data/tiny).
TINY_SEED = 0
