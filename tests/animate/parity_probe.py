"""Run the animator on a parity fixture and record what each stage produced (run as a script).

    python tests/animate/parity_probe.py FIXTURE OUT.npz

The CPU kernels are pinned before torch is imported, as the CLI does. Every array is taken at the
boundary of a public pipeline component, so the record does not depend on how the pipeline is
written inside:

* ``text_embeddings``: the ``text_encoder`` output (forward hook);
* ``ref_image_latents``: the ``sample`` the ``appearance_encoder`` receives at step 0 (pre-hook);
* ``controlnet_step0_*``: the ``controlnet`` outputs of step 0, one entry per call (forward hook);
* ``unet_in_step{s}`` / ``unet_out_step{s}``: the ``unet`` sample and output of every window
  (forward hook);
* ``timesteps``, ``step_latents_in``, ``step_noise_pred``, ``step_latents_out``: the arguments and
  result of every ``scheduler.step`` call (the diffusers scheduler protocol);
* ``video_vae_raw``: the ``vae.decoder`` output of every decoded frame (forward hook);
* ``final_latents``: the last ``scheduler.step`` result; ``video_float`` the pipeline's float output
  (the uint8 frames are checked through the CLI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# the repository root, so that this file can run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from magicanimate_cli.animate import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from magicanimate_cli import media  # noqa: E402
from magicanimate_cli.animate import load_pipeline  # noqa: E402
from magicanimate_cli.crop import fit_square  # noqa: E402


def _first(output):
    return output if isinstance(output, torch.Tensor) else output[0]  # tuples and diffusers/transformers outputs


def probe(fixture: Path) -> dict[str, np.ndarray]:
    params = json.loads((fixture / "expected" / "run.json").read_text())["params"]
    size = params["size"]
    pipe = load_pipeline(fixture / "weights", device="cpu", dtype="float32")
    reference = fit_square(media.read_image(fixture / "inputs" / "reference.png"), size, "stretch", (0, 0, 0))
    motion = np.stack([fit_square(f, size, "stretch", (0, 0, 0)) for f in media.iter_frames(fixture / "inputs" / "motion.mp4")])

    record: dict[str, list] = {}
    steps_done = [0]

    def keep(name, value):
        record.setdefault(name, []).append(value.detach().to(torch.float32).cpu().numpy().copy())

    def on_text(_module, _args, output):
        keep("text_embeddings", _first(output))

    def on_appearance(_module, args, kwargs):
        if steps_done[0] == 0:
            keep("appearance_sample", args[0] if args else kwargs["sample"])

    def on_controlnet(_module, _args, output):
        if steps_done[0] == 0:
            down, mid = output[0], output[1]
            for k, d in enumerate(down):
                keep(f"controlnet_step0_down{k:02d}", d)
            keep("controlnet_step0_mid", mid)

    def on_unet(_module, args, kwargs, output):
        keep(f"unet_in_step{steps_done[0]}", args[0] if args else kwargs["sample"])
        keep(f"unet_out_step{steps_done[0]}", _first(output))

    def on_decoder(_module, _args, output):
        keep("video_vae_raw", output)

    original_step = pipe.scheduler.step

    def step(model_output, timestep, sample, *args, **kwargs):
        result = original_step(model_output, timestep, sample, *args, **kwargs)
        keep("timesteps", torch.as_tensor(timestep))
        keep("step_noise_pred", model_output)
        keep("step_latents_in", sample)
        keep("step_latents_out", _first(result))
        steps_done[0] += 1
        return result

    pipe.scheduler.step = step
    pipe.text_encoder.register_forward_hook(on_text)
    pipe.appearance_encoder.register_forward_pre_hook(on_appearance, with_kwargs=True)
    pipe.controlnet.register_forward_hook(on_controlnet)
    pipe.unet.register_forward_hook(on_unet, with_kwargs=True)
    pipe.vae.decoder.register_forward_hook(on_decoder)

    out = pipe(
        reference,
        motion,
        num_inference_steps=params["steps"],
        guidance_scale=params["guidance_scale"],
        seed=params["seed"],
        context_frames=params["context_frames"],
        context_overlap=params["context_overlap"],
        output_type="np",
    )
    arrays = {name: np.stack(values) for name, values in record.items()}
    arrays["timesteps"] = arrays["timesteps"].astype(np.int64)
    arrays["final_latents"] = arrays["step_latents_out"][-1]
    arrays["video_float"] = out.frames
    return arrays


if __name__ == "__main__":
    fixture, target = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(2)  # the fixtures were made with 2 torch threads
    np.savez(target, **probe(fixture))
