"""Run the OFFICIAL MagicAnimate pipeline once on CPU, float32, and time it (a worker for animate_cpu.py).

This script is ours; the official code is not part of this repository. It runs under the official
code's own Python environment (torch, diffusers 0.21, transformers 4.32, omegaconf, accelerate,
einops, numpy<2), imports the package ``magicanimate`` from a checkout given on the command line
(github.com/magic-research/magic-animate, commit d2bc3bc3), and builds and calls the pipeline the
way the checkout's ``magicanimate/pipelines/animation.py::main`` does, with these differences:

* CPU and float32: the models are not cast to float16, the pipeline goes to ``cpu``, the generator
  is a CPU one, and xformers is not enabled (it does not run on CPU). The pipeline calls
  ``.cuda()`` on the reference latents: that call is made the identity for the pipeline call.
* ``torchvision`` (imported by ``magicanimate.utils.util`` for its video-grid writer, which is not
  used here) is given an empty stand-in module when it is not installed.
* The motion-module checkpoint is read with ``torch.load(..., weights_only=True)``.
* A text encoder saved by a newer transformers (keys without ``text_model.``) gets the prefix back.
* A UNet folder that holds only ``diffusion_pytorch_model.safetensors`` (the benchmark's weights)
  is read by the same ``from_pretrained_2d`` with ``torch.load`` answering from that file.

``--contiguous-vae-input`` changes only a memory layout: the pipeline hands the VAE encoder the
reference as a permuted view whose strides are those of ``channels_last``, and on some CPUs
(seen on an AMD EPYC, AVX2 kernels pinned) the channels-last convolution rounds differently from
the NCHW one (4e-7 on the reference latents of fixture A). Fixture A's reference latents are the
NCHW result; with the option the NCHW kernel runs and fixture A is reproduced bit for bit here.

It prints one JSON line: ``load_s`` (model construction and weights), ``denoise_s`` (call start to
the start of the pipeline's latent decoding), ``decode_s``, ``s``, ``peak_rss_gb`` (ru_maxrss),
``minor_faults`` (ru_minflt), ``threads``, ``peak_anon_gb`` and ``peak_file_gb`` (``memory_sampler.py``);
and saves the uint8 frames (T×H×W×3, the first N frames, truncated from float64 as the official
entry point does before writing its video) to ``--out``.

    python benchmarks/official_worker.py --checkout magic-animate --weights W --reference ref.npy \\
        --motion motion.npy --size 128 --steps 2 --seed 1 --out frames.npy
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import types
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from memory_sampler import MemorySampler


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="A checkout of the official magic-animate code.")
    parser.add_argument("--weights", type=Path, required=True, help="Weights in the official layout.")
    parser.add_argument("--inference-config", type=Path, default=None,
                        help="Default: the checkout's configs/inference/inference.yaml.")
    parser.add_argument("--reference", type=Path, required=True, help="uint8 H×W×3 .npy")
    parser.add_argument("--motion", type=Path, required=True, help="uint8 T×H×W×3 .npy")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--context-frames", type=int, default=16, help="Also the clip length L the motion is padded to.")
    parser.add_argument("--context-overlap", type=int, default=4)
    parser.add_argument("--fusion-blocks", default="midup")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="Where the uint8 frames go (.npy).")
    parser.add_argument("--contiguous-vae-input", action="store_true",
                        help="Hand the VAE encoder a contiguous reference tensor (see the module docstring).")
    parser.add_argument("--latents-out", type=Path, default=None, help="Also save the latents handed to the decoder (.npy).")
    return parser.parse_args(argv)


@contextmanager
def safetensors_as_torch_load(path: Path):
    """A folder ``from_pretrained_2d`` can read when ``path`` holds safetensors rather than a .bin."""
    import safetensors.torch
    import torch

    with tempfile.TemporaryDirectory() as folder:
        os.symlink(path / "config.json", Path(folder) / "config.json")
        os.symlink(path / "diffusion_pytorch_model.safetensors", Path(folder) / "diffusion_pytorch_model.bin")
        real_load = torch.load

        def load(file, *args, **kwargs):
            if str(file).startswith(folder):
                return safetensors.torch.load_file(os.path.realpath(file), device="cpu")
            return real_load(file, *args, **kwargs)

        with mock.patch.object(torch, "load", load):
            yield folder


def load_unet(unet_class, model_path: Path, unet_additional_kwargs: dict):
    unet_folder = model_path / "unet"
    if (unet_folder / "diffusion_pytorch_model.bin").is_file():
        return unet_class.from_pretrained_2d(str(model_path), subfolder="unet", unet_additional_kwargs=unet_additional_kwargs)
    with safetensors_as_torch_load(unet_folder) as folder:
        return unet_class.from_pretrained_2d(folder, unet_additional_kwargs=unet_additional_kwargs)


def load_text_encoder(model_path: Path):
    """``CLIPTextModel.from_pretrained``; a checkpoint whose keys lack ``text_model.`` (written by a newer
    transformers, whose CLIPTextModel names them so) is loaded with the prefix put back."""
    import safetensors.torch
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = model_path / "text_encoder"
    if (folder / "model.safetensors").is_file():
        state = safetensors.torch.load_file(str(folder / "model.safetensors"))
        if not any(key.startswith("text_model.") for key in state):
            model = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder)))
            model.load_state_dict({"text_model." + key: value for key, value in state.items()}, strict=True)
            return model.eval()
        del state
    return CLIPTextModel.from_pretrained(str(model_path), subfolder="text_encoder")


def load_motion_modules(unet, checkpoint: Path) -> None:
    """The motion-module checkpoint into the UNet, with main()'s key handling (both of its branches)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state["state_dict"] if "state_dict" in state else state
    stripped = OrderedDict((k.split("module.")[-1] if k.startswith("module.") else k, v) for k, v in state.items())
    _, unexpected = unet.load_state_dict(stripped, strict=False)
    if unexpected:  # main()'s fallback: only the motion-module keys, without a "unet." prefix
        kept = OrderedDict(
            (k.split("unet.")[-1] if k.startswith("unet.") else k, v) for k, v in state.items() if "motion_modules" in k
        )
        _, unexpected = unet.load_state_dict(kept, strict=False)
        if unexpected:
            raise SystemExit(f"{checkpoint}: unexpected keys {unexpected[:5]}")


def main(argv=None) -> None:
    args = parse_args(argv)
    sampler = MemorySampler()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is read from local folders
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(args.checkout.resolve()))
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKL, DDIMScheduler
    from omegaconf import OmegaConf
    from PIL import Image
    from transformers import CLIPTokenizer

    try:
        import torchvision  # noqa: F401
    except ImportError:  # after transformers' import-time package probe, which needs a real module
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    from magicanimate.models.appearance_encoder import AppearanceEncoderModel
    from magicanimate.models.controlnet import ControlNetModel
    from magicanimate.models.mutual_self_attention import ReferenceAttentionControl
    from magicanimate.models.unet_controlnet import UNet3DConditionModel
    from magicanimate.pipelines.pipeline_animation import AnimationPipeline

    config = OmegaConf.load(args.inference_config or args.checkout / "configs" / "inference" / "inference.yaml")
    weights = args.weights
    model_path = weights / "stable-diffusion-v1-5"
    magic = weights / "MagicAnimate"

    t0 = time.perf_counter()
    tokenizer = CLIPTokenizer.from_pretrained(str(model_path), subfolder="tokenizer")
    text_encoder = load_text_encoder(model_path)
    unet = load_unet(UNet3DConditionModel, model_path, OmegaConf.to_container(config.unet_additional_kwargs))
    appearance_encoder = AppearanceEncoderModel.from_pretrained(
        str(magic / "appearance_encoder"), subfolder="appearance_encoder"
    ).to("cpu")
    writer = ReferenceAttentionControl(appearance_encoder, do_classifier_free_guidance=True, mode="write",
                                       fusion_blocks=args.fusion_blocks)
    reader = ReferenceAttentionControl(unet, do_classifier_free_guidance=True, mode="read", fusion_blocks=args.fusion_blocks)
    vae = AutoencoderKL.from_pretrained(str(weights / "sd-vae-ft-mse"))
    if args.contiguous_vae_input:
        encode = vae.encode
        vae.encode = lambda sample, *a, **k: encode(sample.contiguous(), *a, **k)
    controlnet = ControlNetModel.from_pretrained(str(magic / "densepose_controlnet"))
    pipeline = AnimationPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, controlnet=controlnet,
        scheduler=DDIMScheduler(**OmegaConf.to_container(config.noise_scheduler_kwargs)),
    )
    load_motion_modules(pipeline.unet, magic / "temporal_attention" / "temporal_attention.ckpt")
    pipeline.to("cpu")
    load_s = time.perf_counter() - t0

    # The inputs as main() prepares them: resized to size², the motion padded (edge) to a multiple of L.
    size, clip = args.size, args.context_frames
    control = np.load(args.motion)
    if control[0].shape[0] != size:
        control = np.array([np.array(Image.fromarray(c).resize((size, size))) for c in control])
    source_image = np.array(Image.fromarray(np.load(args.reference)).resize((size, size)))
    height, width, _ = source_image.shape
    original_length = len(control)
    if len(control) % clip:
        control = np.pad(control, ((0, clip - len(control) % clip), (0, 0), (0, 0), (0, 0)), mode="edge")
    torch.manual_seed(args.seed)
    set_seed(args.seed)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(torch.initial_seed())

    marks = {}
    decode_latents = pipeline.decode_latents

    def timed_decode(*a, **k):
        marks["decode"] = time.perf_counter()
        if args.latents_out:
            marks["latents"] = a[0].clone()
        return decode_latents(*a, **k)

    pipeline.decode_latents = timed_decode
    t1 = time.perf_counter()
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self):
        videos = pipeline(
            "",
            negative_prompt="",
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            width=width,
            height=height,
            video_length=len(control),
            controlnet_condition=control,
            init_latents=None,
            generator=generator,
            num_actual_inference_steps=args.steps,
            appearance_encoder=appearance_encoder,
            reference_control_writer=writer,
            reference_control_reader=reader,
            source_image=source_image,
            context_frames=clip,
            context_overlap=args.context_overlap,
            rank=0,
            world_size=1,
            dist=False,
        ).videos
    end = time.perf_counter()
    frames = (videos[0, :, :original_length].to(torch.float64) * 255).permute(1, 2, 3, 0).numpy().astype(np.uint8)
    np.save(args.out, frames)
    if args.latents_out:
        np.save(args.latents_out, marks["latents"].numpy())
    decode_start = marks.get("decode", end)
    print(json.dumps({
        "frames": original_length, "steps": args.steps, "s": round(end - t1, 3),
        "s_per_frame": round((end - t1) / original_length, 4),
        "denoise_s": round(decode_start - t1, 3), "decode_s": round(end - decode_start, 3),
        "load_s": round(load_s, 2), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt, "threads": torch.get_num_threads(),
        **sampler.peaks(),
    }))


if __name__ == "__main__":
    main()
