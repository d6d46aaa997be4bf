"""Negative-prompt diagnosis: the tiny pipeline under other samplers (timestep spacing, Karras sigmas). Args: threads first_seed end_seed [ckpt] [variants]."""
import sys, json, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))  # the repository root
from course_utils import evaluate as ev
from course_utils.registry import DEFAULTS, load_pipeline
from training.train import weights  # a checkpoint's EMA weights
from diffusers import PNDMScheduler, DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler
torch.set_num_threads(int(sys.argv[1])); seeds = list(range(int(sys.argv[2]), int(sys.argv[3])))
pipe = load_pipeline("text2img", profile="tiny", device="cpu"); pipe.set_progress_bar_config(disable=True)
if len(sys.argv) > 4:
    ck = torch.load(sys.argv[4], map_location="cpu", weights_only=False)
    pipe.text_encoder.load_state_dict(weights(ck, "text_encoder")); pipe.unet.load_state_dict(weights(ck, "unet")); print("step", ck["step"])
base = pipe.scheduler.config
variants = {
    "pndm_leading": PNDMScheduler.from_config(base),
    "pndm_trailing": PNDMScheduler.from_config(base, timestep_spacing="trailing"),
    "dpm_trailing": DPMSolverMultistepScheduler.from_config(base, timestep_spacing="trailing"),
    "ddim_trailing": DDIMScheduler.from_config(base, timestep_spacing="trailing"),
    "euler_karras": EulerDiscreteScheduler.from_config(base, use_karras_sigmas=True),
}
s = dict(DEFAULTS["tiny"])
for name in sys.argv[5].split(",") if len(sys.argv) > 5 else variants:
    pipe.scheduler = variants[name]
    sc = ev.negative_scores(pipe, seeds, **s); sc.update(ev.text2img_scores(pipe, seeds, **s))
    print(json.dumps({"v": name, **{k: round(v, 3) for k, v in sc.items() if k in ("negative_removes_shape", "negative_removes_color", "seen_color", "seen_shape", "seen_background", "held_out_color_and_shape")}}), flush=True)
