"""Every architecture the course builds, in one place: SD 1.5, the x4 upscaler and the ``tiny`` models.

All use exactly the same classes (``CLIPTextModel``, ``UNet2DConditionModel``,
``AutoencoderKL``, ``PNDMScheduler``/``DDIMScheduler``/``DDPMScheduler``); only the sizes
differ. Every setting is an argument of that class's constructor. Nothing here imports torch:
``training/`` and the builders (:mod:`course_utils.models.builders`) read these dicts.
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
# The inpainting UNet takes these input channels more: 1 mask + 4 masked-image latents (4 + 5 = 9).
INPAINT_EXTRA_CHANNELS = 5
SD15_INPAINT_UNET = dict(SD15_UNET, in_channels=4 + INPAINT_EXTRA_CHANNELS)  # stable-diffusion-inpainting/unet
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

# --- the x4 upscaler (stabilityai/stable-diffusion-x4-upscaler), a Stable Diffusion 2 model ---------
# Sources: the Hub folder's scheduler/, low_res_scheduler/, unet/ and vae/ configs, and the original
# model's config it was converted from, Stability-AI/stablediffusion
# configs/stable-diffusion/x4-upscaling.yaml (linear_start 0.0001, linear_end 0.02 for both schedules -
# LDM's "linear" is diffusers' "scaled_linear" -; parameterization "v"; max_noise_level 350;
# scale_factor 0.08333). diffusers' single-file loader (loaders/single_file_utils.py) builds the same
# low_res_scheduler.

# Denoises the latents, like SD 1.5's PNDM, but the UNet predicts v (a mix of noise and image).
X4_UPSCALER_SCHEDULER = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "trained_betas": None,
}
# Adds noise to the low-res *image* (pixels, not latents): noise_level is its timestep.
X4_UPSCALER_LOW_RES_SCHEDULER = {
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": True,
    "prediction_type": "epsilon",
    "variance_type": "fixed_small",
    "trained_betas": None,
}
X4_UPSCALER_MAX_NOISE_LEVEL = 350  # the pipeline refuses larger noise_level values

# The text encoder is SD 2's OpenCLIP ViT-H/14 (penultimate layer, so 23 of its 24 layers).
X4_UPSCALER_TEXT_ENCODER = dict(
    SD15_TEXT_ENCODER,
    hidden_size=1024,  # text embeddings [1, 77, 1024]
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    projection_dim=512,
)
X4_UPSCALER_UNET = dict(
    sample_size=128,  # latents 128x128 -> 512x512 images (from 128x128 inputs)
    in_channels=7,  # 4 noisy latents + 3 channels of the (noised) low-res RGB image
    out_channels=4,
    block_out_channels=(256, 512, 512, 1024),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    # no self-attention at the three highest resolutions (too expensive on 128x128 latents):
    only_cross_attention=(True, True, True, False),
    cross_attention_dim=1024,  # = the text encoder's hidden size
    attention_head_dim=8,  # diffusers' legacy name: 8 attention *heads*
    use_linear_projection=True,
    num_class_embeds=1000,  # an embedding of noise_level (0..999), added to the timestep embedding
    class_embed_type=None,
)
X4_UPSCALER_VAE = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512),  # 3 blocks -> 2 downsamplings -> 4x smaller (SD 1.5: 8x)
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=2,
    scaling_factor=0.08333,  # the pipeline overwrites any other value (with a deprecation warning)
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

TINY_INPAINT_UNET = dict(
    TINY_UNET, in_channels=4 + INPAINT_EXTRA_CHANNELS
)  # 4 noisy latents + 1 mask + 4 masked-image latents
TINY_UPSCALER_UNET = dict(
    X4_UPSCALER_UNET,  # the real upscaler's block types, class embeddings, linear projections
    sample_size=16,  # 16x16 input -> 16x16 latents -> 64x64 output
    block_out_channels=(32, 32, 64, 64),  # 16x16, 8x8, 4x4, 2x2
    layers_per_block=1,
    norm_num_groups=32,
    cross_attention_dim=TINY_TEXT_ENCODER["hidden_size"],  # 64: the tiny text encoder's
)
# The tiny upscaler's VAE is the tiny text-to-image VAE (3 blocks, 4x, like the real upscaler's),
# rescaled by models.surgery.upscaler_vae to X4_UPSCALER_VAE's scaling_factor, which the pipeline requires.

# Seed of the random initialisation of the `sd15-random` models (the `tiny` ones are trained: data/tiny).
RANDOM_WEIGHTS_SEED = 0

# --- what the lookalike repositories need besides (models/lookalike.py) ------------------------------
# SD 1.5's safety checker (safety_checker/ in stable-diffusion-v1-5, from CompVis/stable-diffusion-safety-checker):
# StableDiffusionSafetyChecker(CLIPConfig(**SD15_SAFETY_CHECKER)) - CLIP ViT-L/14's *image* tower (24 layers,
# 1024 wide, 14x14-pixel patches of a 224x224 image), a projection to 768 and 17 + 3 concept embeddings the
# image is compared with. The text tower's config is stored but never built (~1.2 GB of weights in fp32).
SD15_SAFETY_CHECKER = dict(
    projection_dim=768,
    vision_config=dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
    ),
    text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
)
# Its feature extractor (feature_extractor/preprocessor_config.json): CLIPImageProcessor arguments - shorter
# side to 224 (bicubic), centre crop 224x224, normalised with CLIP's mean and std.
SD15_FEATURE_EXTRACTOR = dict(
    do_resize=True,
    size={"shortest_edge": 224},
    resample=3,
    do_center_crop=True,
    crop_size={"height": 224, "width": 224},
    do_normalize=True,
    image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711],
    do_convert_rgb=True,
)
# LCM-LoRA for SD 1.5 (latent-consistency/lcm-lora-sdv1-5): a rank-64 pair beside each of these UNet layers
# (the list of diffusers' examples/consistency_distillation/train_lcm_distill_lora_*.py): 278 layers, 67 M
# numbers, 134.5 MB in fp16. `alpha` is stored per layer in the file (scale = alpha / rank).
LCM_LORA = dict(
    rank=64,
    alpha=8,  # peft's default lora_alpha, which the training script leaves as it is (the real file's value: unverified)
    target_modules=(
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "proj_in",
        "proj_out",
        "ff.net.0.proj",
        "ff.net.2",
        "conv1",
        "conv2",
        "conv_shortcut",
        "downsamplers.0.conv",
        "upsamplers.0.conv",
        "time_emb_proj",
    ),
)
# Lesson 07's style LoRA, "Light and Shadow" (CIVITAI model 13239; its Hub copy sayakpaul/civitai-light-shadow-lora,
# light_and_shadow.safetensors, made for Counterfeit-V2.5): a kohya "LoRA" (not LoCon), so a pair beside every linear
# layer and 1x1 convolution of the UNet's transformer blocks and of the text encoder's attention and MLP. Over SD 1.5
# that is 264 layers with 589,824 (in + out) features: 75.5 M numbers at rank 128 = 151.0 MB in fp16, the size the
# Hub lists (151 MB). Rank 64 in float32 weighs the same: the file's rank, dtype and alpha are unverified
# (docs/lookalike-repos.md).
STYLE_LORA = dict(
    rank=128,
    alpha=128,  # alpha = rank: scale 1 (kohya stores alpha per layer; the real file's value is unverified)
    target_modules=("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"),
    text_target_modules=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),  # CLIPAttention, CLIPMLP
)
# EasyNegative (dataset gsdf/EasyNegative): an A1111 textual-inversion file, one tensor emb_params
# [EASYNEGATIVE_VECTORS, text hidden size] (24 KB = 8 x 768 float32 numbers; see docs/lookalike-repos.md).
EASYNEGATIVE_VECTORS = 8

# The small lookalikes (`build_lookalikes(size="small")`): tiny's sizes, the real repositories' other settings.
TINY_SAFETY_CHECKER = dict(
    projection_dim=32,
    vision_config=dict(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, patch_size=32, image_size=224
    ),  # the real 224x224 input, in 7x7 patches
    text_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
)
# The x4 upscaler's text encoder is SD 2's OpenCLIP (gelu, not CLIP's quick_gelu); tiny's sizes.
TINY_UPSCALER_TEXT_ENCODER = dict(TINY_TEXT_ENCODER, hidden_act=X4_UPSCALER_TEXT_ENCODER["hidden_act"])
# A small x4 VAE: tiny's 3 blocks (4x, like the real upscaler's), the upscaler's scaling factor.
TINY_UPSCALER_VAE = dict(TINY_VAE, scaling_factor=X4_UPSCALER_VAE["scaling_factor"])
TINY_LCM_LORA = dict(LCM_LORA, rank=4, alpha=4)
TINY_STYLE_LORA = dict(STYLE_LORA, rank=4, alpha=4)
# SD 1.5's VAE config says scaling_factor 0.18215; tiny's trained VAE measured its own (1.0 in TINY_VAE).
TINY_SD15_VAE = dict(TINY_VAE, scaling_factor=SD15_VAE["scaling_factor"])

# A ControlNet's condition embedding (ControlNetModel's conditioning_embedding_out_channels): one stride-2 convolution
# between each pair of entries, so len - 1 must be log2 of the VAE's downsampling. SD 1.5's (the default of
# ControlNetModel and of lllyasviel's ControlNets): 512 -> 64, three; tiny's: 64 -> 16, two (lesson 11).
SD15_CONTROLNET_EMBEDDING = (16, 32, 96, 256)
TINY_CONTROLNET_EMBEDDING = (16, 32, 64)
