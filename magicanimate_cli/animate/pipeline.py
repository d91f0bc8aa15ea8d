"""The MagicAnimate animator as a diffusers pipeline with a single ``__call__``.

The algorithm is the official one (``official-inference.md`` §4-§7): DDIM, one noise clip tiled
along the edge-padded motion, closed-loop windows averaged uniformly, ControlNet once per frame and
step (shared by both guidance halves), the appearance encoder once per step on the clean reference
latents at timestep ``t``, guidance between "with reference" and "without reference", per-frame VAE
decode and truncating uint8 conversion.

Two things differ from the official code without changing the result:

* ControlNet residuals are computed when a window first needs a frame and dropped after the last
  window that reads it, so memory no longer grows with the clip (the official caches every frame);
* padded frames are never decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline

from .reference import install_reference_attention
from .weights import SCALING_FACTOR
from .windows import context_windows, last_use, padded_length

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` with stage ``"denoise"`` (windows) or ``"decode"`` (frames)."""


def official_scheduler() -> DDIMScheduler:
    """The scheduler the official pipeline really uses (§1.4): linear betas, steps_offset 1."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def _rank_and_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _share(windows: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This rank's contiguous share of the windows (neighbours share ControlNet chunks)."""
    bounds = [len(windows) * r // world for r in range(world + 1)]
    return windows[bounds[rank] : bounds[rank + 1]]


@dataclass
class MagicAnimateOutput:
    """``frames``: uint8 ``T×H×W×3`` (``None`` when streamed to ``on_frame``); ``latents``: final,
    with the padded frames (``1×4×F×h×w``)."""

    frames: np.ndarray | None
    latents: torch.Tensor


class MagicAnimatePipeline(DiffusionPipeline):
    """Reference image + DensePose frames -> animation frames."""

    def __init__(self, vae, text_encoder, tokenizer, unet, controlnet, appearance_encoder, scheduler):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            appearance_encoder=appearance_encoder,
            scheduler=scheduler,
        )
        self._bank, self._readers = install_reference_attention(appearance_encoder, unet)

    def _empty_prompt_embedding(self, device) -> torch.Tensor:
        tokens = self.tokenizer(
            "", padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        return self.text_encoder(tokens.input_ids.to(device))[0]

    def _frames_to_tensor(self, frames: np.ndarray, device, dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames)).to(device, dtype).permute(0, 3, 1, 2)

    @torch.no_grad()
    def __call__(
        self,
        reference: np.ndarray,
        motion: Sequence[np.ndarray] | np.ndarray,
        *,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = 1,
        context_frames: int = 16,
        context_overlap: int = 4,
        output_type: str = "uint8",
        on_frame: Callable[[int, np.ndarray], None] | None = None,
        progress: Progress | None = None,
        distributed: bool = False,
        latents: torch.Tensor | None = None,
        start_step: int = 0,
        on_step: Callable[[int, torch.Tensor], None] | None = None,
    ) -> MagicAnimateOutput:
        """Animate ``reference`` (uint8 ``H×W×3``) along ``motion`` (uint8 ``T×H×W×3``, same size).

        Frames are decoded one at a time and handed to ``on_frame(index, frame)`` when given,
        otherwise collected into the output. ``output_type`` is ``"uint8"`` (the official
        truncating conversion) or ``"float"`` (float32 in [0, 1], before that conversion).

        With ``distributed`` (inside an initialised ``torch.distributed`` process group) each rank
        denoises a contiguous share of the windows, the window sums are all-reduced every step,
        and rank 0 decodes; the result is bitwise the single-process one (at most two windows
        cover a frame, so the order of the sums cannot matter). Other ranks return no frames.

        Resuming: ``on_step(steps_done, latents)`` is called after every denoising step; passing
        those ``latents`` back with ``start_step=steps_done`` continues the run exactly (DDIM with
        eta 0 carries no other state).
        """
        if output_type not in ("uint8", "float"):
            raise ValueError("output_type must be 'uint8' or 'float'")
        if reference.ndim != 3 or reference.shape[2] != 3:
            raise ValueError("reference must be H×W×3")
        num_frames = len(motion)
        if num_frames < 1:
            raise ValueError("motion needs at least one frame")
        height, width = reference.shape[:2]
        device, dtype = self.unet.device, self.unet.dtype
        clip_length = context_frames
        total = padded_length(num_frames, clip_length)  # edge padding: frame i reads min(i, T-1)
        windows = context_windows(total, context_frames, context_overlap)
        rank, world = _rank_and_world(distributed)
        windows = _share(windows, rank, world)
        last = last_use(windows)
        guided = guidance_scale > 1.0
        halves = 2 if guided else 1
        for reader in self._readers:
            reader.cond_start = min(context_frames, total) if guided else 0

        text = self._empty_prompt_embedding(device)
        ref = torch.from_numpy(np.array(reference)).float().to(device, dtype) / 127.5 - 1
        ref_latents = self.vae.encode(ref.permute(2, 0, 1)[None]).latent_dist.mean * SCALING_FACTOR

        if latents is None:
            generator = torch.Generator(device).manual_seed(seed)
            shape = (1, 4, clip_length, height // 8, width // 8)
            noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            latents = noise.repeat(1, 1, total // clip_length, 1, 1) * self.scheduler.init_noise_sigma
        else:
            latents = latents.to(device, dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        done, work = start_step * len(windows), len(timesteps) * len(windows)
        for step, t in enumerate(timesteps):
            if step < start_step:
                continue
            self._bank.clear()
            self.appearance_encoder(ref_latents.repeat(2, 1, 1, 1), t, encoder_hidden_states=text.repeat(2, 1, 1), return_dict=False)
            noise_pred = torch.zeros((halves, *latents.shape[1:]), device=device, dtype=dtype)
            counter = torch.zeros((1, 1, total, 1, 1), device=device, dtype=dtype)
            residuals: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}
            for index, window in enumerate(windows):
                self._controlnet_for(window, residuals, latents, t, text, motion, clip_length)
                down = [torch.stack([residuals[f][0][k] for f in window]) for k in range(len(residuals[window[0]][0]))]
                mid = torch.stack([residuals[f][1] for f in window])
                if guided:
                    down = [torch.cat([d, d]) for d in down]
                    mid = torch.cat([mid, mid])
                sample = latents[:, :, window].repeat(halves, 1, 1, 1, 1)
                pred = self.unet(
                    sample,
                    t,
                    encoder_hidden_states=text.expand(halves * len(window), -1, -1),
                    down_block_additional_residuals=down,
                    mid_block_additional_residual=mid,
                    return_dict=False,
                )[0]
                noise_pred[:, :, window] += pred
                counter[:, :, window] += 1
                for frame in window:
                    if last[frame] == index:
                        residuals.pop(frame, None)
                done += 1
                if progress:
                    progress("denoise", done, work)
            if world > 1:
                torch.distributed.all_reduce(noise_pred)
                torch.distributed.all_reduce(counter)
            noise_pred = noise_pred / counter
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, eta=0.0).prev_sample
            if on_step:
                on_step(step + 1, latents)
        self._bank.clear()
        if rank != 0:
            return MagicAnimateOutput(frames=None, latents=latents)

        out_dtype = np.uint8 if output_type == "uint8" else np.float32
        frames = None if on_frame else np.empty((num_frames, height, width, 3), dtype=out_dtype)
        scaled = 1 / SCALING_FACTOR * latents
        for i in range(num_frames):  # padded frames are never decoded
            image = self.vae.decode(scaled[:, :, i]).sample
            image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).cpu().float().numpy()
            # the official converts float64(x) * 255 by truncation (§14.5)
            frame = (image.astype(np.float64) * 255).astype(np.uint8) if output_type == "uint8" else image
            if on_frame:
                on_frame(i, frame)
            else:
                frames[i] = frame
            if progress:
                progress("decode", i + 1, num_frames)
        return MagicAnimateOutput(frames=frames, latents=latents)

    def _controlnet_for(self, window, residuals, latents, t, text, motion, chunk) -> None:
        """Fill ``residuals`` for every frame of ``window`` that is not in it yet.

        Frames go through the ControlNet in the official batches (consecutive chunks of ``chunk``
        frames), so each residual is computed exactly as the official computes it.
        """
        for start in sorted({f // chunk * chunk for f in window if f not in residuals}):
            self._controlnet_chunk(list(range(start, start + chunk)), residuals, latents, t, text, motion)

    def _controlnet_chunk(self, frames, residuals, latents, t, text, motion) -> None:
        device, dtype = latents.device, latents.dtype
        last_real = len(motion) - 1
        cond = np.stack([motion[min(f, last_real)] for f in frames])
        cond = self._frames_to_tensor(cond, device, dtype) / 255.0
        sample = latents[0, :, frames].permute(1, 0, 2, 3)
        down, mid = self.controlnet(
            sample,
            t,
            encoder_hidden_states=text.expand(len(frames), -1, -1),
            controlnet_cond=cond,
            conditioning_scale=1.0,
            guess_mode=False,
            return_dict=False,
        )
        for j, frame in enumerate(frames):
            residuals[frame] = ([d[j] for d in down], mid[j])
