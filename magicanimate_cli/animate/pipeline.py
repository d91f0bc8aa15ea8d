"""The MagicAnimate animator as a diffusers pipeline with a single ``__call__``.

The algorithm is the official one (``official-inference.md`` §4-§7): DDIM, one noise clip tiled
along the edge-padded motion, closed-loop windows averaged uniformly, ControlNet once per frame and
step (shared by both guidance halves), the appearance encoder once per step on the clean reference
latents at timestep ``t``, guidance between "with reference" and "without reference", per-frame VAE
decode and truncating uint8 conversion. ``context_schedule="open"`` (``--context-schedule open``) is
a departure from the official algorithm a caller can ask for: windows that never wrap from the
clip's end into its start; ``context_fusion="pyramid"`` another, overlapping windows weighed by the
frame's place in each (``windows.py``).

Things that differ from the official code without changing a single bit of the result (CPU,
fixture A):

* ControlNet residuals are computed (in the official chunks) when a window first needs a frame;
  each window takes its rows before its UNet call, which frees them once they are added, and only
  the rows of frames a later window reads stay (``residuals.py``), so memory no longer grows with
  the clip (the official caches every frame for the whole step);
* padded frames are never decoded;
* the ControlNet embeds each chunk's pose images once per call and reuses the embedding on later
  steps (``pose_embedding.py``; bounded by a byte budget, off with ``compile``);
* the appearance encoder stops after its last banked layer (nothing after it is read);
* on a CPU, with the malloc settings of ``load_pipeline`` (``malloc.py``), the free heap memory is
  handed back after the denoising and after the decoding;
* on a CPU, the memory-mapped weight pages of the text encoder and the VAE's encoder are handed back
  once the reference latents and the prompt embedding are computed (``mapped.py``).

``fast=True`` (``--fast``) also runs the down path of the denoising UNet once for both guidance
halves, projects the reference and prompt keys and values once, runs the appearance encoder on one
row instead of two identical ones and decodes frames in chunks (4 on CUDA, 2 elsewhere): the same
mathematics with other matrix shapes and kernels, so the result moves by rounding (amplified where
the reference features are rounded through float16), within the parity contract
(``docs/performance.md``). On CUDA
it also replays the appearance encoder from a CUDA graph after its first step (``cuda_graph.py``;
bitwise the eager encoder); on a CPU it runs the deepest small convolutions on the frames laid side
by side (``side_by_side.py``; bitwise on the shapes it takes), computes the up path's share of each
skip connection once for both halves (``shared_halves.resnet_on_shared_skip``) and the upsampling
convolutions of the UNet and the VAE's decoder at the input's size (``upsample_phases.py``).

diffusers conventions: ``generator``, ``callback_on_step_end``, ``output_type`` (``"np"``, ``"pt"``,
``"pil"``, ``"latent"``), ``return_dict`` and a ``BaseOutput``; ``save_pretrained`` writes a pipeline
folder that ``from_pretrained`` loads back (as does an official-layout models folder). Calls that
would replace the reference or temporal attention processors are refused
(``ReferenceAttentionError``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..progress import Progress
from .config import AnimateConfig
from .cuda_graph import AppearanceGraph
from .malloc import release_freed_memory
from .mapped import drop_mapped_pages
from .pose_embedding import install_pose_embedding_cache
from .reference import (
    BankFilled,
    ReferenceAttentionError,
    check_processors,
    install_reference_attention,
    project_reference,
)
from .residuals import StepResiduals
from .shared_halves import guided_forward
from .side_by_side import install_side_by_side
from .text_kv import install_shared_text
from .unet import make_official, pair_time_projections
from .upsample_phases import install_upsample_phases
from .weights import SCALING_FACTOR
from .windows import FUSIONS, SCHEDULES, context_windows, padded_length, window_weights

OUTPUT_TYPES = ("uint8", "np", "pt", "pil", "latent")


@dataclass(frozen=True)
class FastPath:
    """The levers of the fast path, each on its own (``fast=True`` is ``FastPath()``: all of them).

    Most of them are not bitwise the official computation on CPU (``side_by_side_convs`` is, on the
    shapes it takes); together they stay within the parity contract on the fixtures
    (``tests/animate/test_fastpath.py``).
    """

    shared_down: bool = True
    """Run the UNet's down path and its mid block's first resnet once for both guidance halves
    (``shared_halves.guided_forward``)."""
    shared_skips: bool = True
    """On CPU, with ``shared_down``: the up path's resnets compute the share of their skip connection
    (the groups of ``norm1`` wholly in it, their ``conv1`` products, its ``conv_shortcut`` products) once
    for both guidance halves where the skip is at least 8×8 (``shared_halves.resnet_on_shared_skip``). The
    same sums in another order. Never used with ``compile`` or on a GPU (not measured there)."""
    upsample_phases: bool = True
    """On CPU, compute the nearest ×2 upsampling and its 3×3 convolution of the UNet and of the VAE's
    decoder as four 2×2 convolutions at the input's size (``upsample_phases.py``): 16 products per
    input pixel and channel pair instead of 36, on inputs of at least 4×4. Keeps the summed kernels
    (16/9 of those convolutions' weights). Never used with ``compile`` or on a GPU (not measured
    there)."""
    reference_kv_once: bool = True
    """Project the reference keys and values once per step and block, for every row and window."""
    text_kv_once: bool = True
    """Project the empty prompt's keys and values once per call for every cross-attention of the UNet
    and the ControlNet (``text_kv.py``), instead of once per row, window and step."""
    appearance_one_row: bool = True
    """Run the appearance encoder on one row instead of the official two identical rows: half its
    work. Not bitwise (oneDNN picks other convolution kernels at batch 1, and the bank is rounded
    through float16); with the other levers, fixture A stays within the contract (latents 1.6e-4
    from the official; with ``compile`` 6.5e-4)."""
    side_by_side_convs: bool = True
    """On CPU, run the 3×3 convolutions with at least 1280 channels on 2×2 to 8×8 images of at least
    16 frames (the deepest blocks at small working sizes) on the frames laid side by side in one
    row (``side_by_side.py``): the same arithmetic, faster in oneDNN's kernel; bitwise on the
    shapes it takes, measured. Never used with ``compile`` or on a GPU."""
    decode_chunk: int | None = None
    """Frames per VAE decode call (bounded memory; the official decodes one at a time). ``None``: 4 on
    CUDA (16 frames at 512² on an H200: 0.36 s one at a time, 0.25 s in chunks of 4), 2 elsewhere (16
    frames at 128² on 2 CPU threads: 1.05× faster than one at a time, 0.07 GB more memory, which
    stays below the denoising's peak; chunks of 4 were no faster there and held 0.3 GB more)."""
    compile: bool = False
    """``torch.compile`` (inductor) the UNet window and the ControlNet: fuses the norms, activations,
    adds, casts and layout copies between the kernels. Off by default: the first call of a process
    compiles (minutes on a CPU, about three on an H100; inductor's cache on disk cuts later
    processes to under a minute). Shapes are static (``dynamic=False``): another frame size or window
    length compiles again. Kept within the parity contract on CPU (fixture A: latents 6.5e-4) by two
    restrictions: the appearance encoder stays eager (its features are rounded through float16, and
    a compiled encoder's last-bit differences flip enough of those roundings to reach 7.6e-3), and the
    convolutions keep their layout (inductor's channels-last layout optimisation alone gives 4.3e-3)."""
    cuda_graph: bool = True
    """On CUDA, replay the appearance encoder from a CUDA graph after its first step (``cuda_graph.py``):
    the same kernels on the same inputs, without the launch overhead of its ~1,200 small kernels.
    Elsewhere it does nothing."""


def _levers(fast) -> FastPath | None:
    if fast is True:
        return FastPath()
    return fast or None


def _decode_chunk(fast: FastPath | None, device: torch.device) -> int:
    if not fast:
        return 1
    if fast.decode_chunk is None:
        return 4 if device.type == "cuda" else 2
    return fast.decode_chunk


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


def _references(reference) -> list[np.ndarray]:
    """``__call__``'s ``reference`` as a list of ``H×W×3`` images of one size (``ValueError`` else)."""
    if isinstance(reference, (np.ndarray, torch.Tensor)) and reference.ndim == 3:
        references = [reference]
    else:
        references = list(reference)
    if not references:
        raise ValueError("reference: give at least one image")
    for image in references:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("reference must be H×W×3 (or several of them, of one size)")
        if image.shape != references[0].shape:
            raise ValueError(f"references must have one size: {tuple(image.shape)} and {tuple(references[0].shape)}")
    return references


@dataclass
class MagicAnimatePipelineOutput(BaseOutput):
    """``frames``: the decoded frames in ``output_type`` (``None`` when streamed to ``on_frame``;
    the latents for ``"latent"``); ``latents``: final, with the padded frames (``1×4×F×h×w``)."""

    frames: Any
    latents: torch.Tensor



def _window_forward(unet, sample, t, text, down, mid, halves: int, shared_down: bool, shared_skips: bool = False) -> torch.Tensor:
    """One UNet call on one window (``sample``: the single half, ``1×4×f×h×w``), every guidance half out.

    ``down`` (the ControlNet's down residuals, a list the caller hands over) is emptied once they
    are added or copied, so their memory is free for the rest of the call.
    """
    if shared_down:
        return guided_forward(unet, sample, t, text.expand(sample.shape[2], -1, -1), down, mid, halves, shared_skips)
    if halves > 1:
        doubled = [torch.cat([d] * halves) for d in down]
        down.clear()
        down = doubled
        mid = torch.cat([mid] * halves)
    return unet(
        sample.repeat(halves, 1, 1, 1, 1),
        t,
        encoder_hidden_states=text.expand(halves * sample.shape[2], -1, -1),
        down_block_additional_residuals=down,
        mid_block_additional_residual=mid,
        return_dict=False,
    )[0]


def _controlnet_forward(controlnet, sample, t, text, cond):
    return controlnet(
        sample, t, encoder_hidden_states=text.expand(sample.shape[0], -1, -1), controlnet_cond=cond,
        conditioning_scale=1.0, guess_mode=False, return_dict=False,
    )


def _appearance_forward(encoder, latents, t, text) -> None:
    """Fill the reference bank (the encoder's writers); it stops after the last banked layer."""
    try:
        encoder(latents, t, encoder_hidden_states=text.repeat(latents.shape[0], 1, 1), return_dict=False)
    except BankFilled:
        pass


def _refuse(what: str):
    def method(self, *args, **kwargs):
        raise ReferenceAttentionError(
            f"{what} would replace MagicAnimate's reference-attention and temporal-attention processors; "
            "not supported on this pipeline (apply it to pipe.vae or pipe.controlnet alone if you accept other numerics)"
        )

    return method


class MagicAnimatePipeline(DiffusionPipeline):
    """Reference image + DensePose frames -> animation frames."""

    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(self, vae, text_encoder, tokenizer, unet, controlnet, appearance_encoder, scheduler):
        super().__init__()
        from . import text

        make_official(unet)  # a no-op for load_components' UNet; needed after from_pretrained
        pair_time_projections(appearance_encoder)
        if getattr(text_encoder.config, "_attn_implementation", None) != text.ATTENTION_NAME:
            text_encoder.set_attn_implementation(text.register())
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
        self._text_kv = install_shared_text(unet, controlnet)
        self._side_by_side = install_side_by_side(unet, controlnet)
        self._upsample_phases = install_upsample_phases(unet)  # not the appearance encoder's: its bank is rounded to fp16
        self._decode_phases = install_upsample_phases(vae.decoder)  # on while decoding
        self._pose_embeddings = install_pose_embedding_cache(controlnet)
        self._compiled: dict[str, Callable] = {}

    # diffusers' whole-pipeline attention switches would replace the reference and temporal
    # processors: refused before anything changes; switching them off is a no-op.
    enable_xformers_memory_efficient_attention = _refuse("xformers attention")
    enable_attention_slicing = _refuse("attention slicing")
    fuse_qkv_projections = _refuse("QKV fusion")

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op=None) -> None:
        if valid:
            _refuse("xformers attention")(self)

    def set_attention_slice(self, slice_size) -> None:
        if slice_size is not None:
            _refuse("attention slicing")(self)

    def disable_attention_slicing(self) -> None:
        pass

    def unfuse_qkv_projections(self, unet: bool = True, vae: bool = True) -> None:
        pass

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """A folder written by ``save_pretrained`` (``model_index.json``), or a models folder in the
        official layout (``torch_dtype`` as in diffusers; float32 by default)."""
        folder = Path(pretrained_model_name_or_path)
        if (folder / "model_index.json").is_file():
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from .weights import load_components

        dtype = kwargs.pop("torch_dtype", None) or torch.float32
        if kwargs:
            raise TypeError(f"unsupported arguments for an official-layout folder: {', '.join(kwargs)}")
        return cls(**load_components(folder, dtype), scheduler=official_scheduler())

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """One folder (``model_index.json`` + a folder per component, safetensors) that
        ``MagicAnimatePipeline.from_pretrained`` loads back to the same frames."""
        kwargs.setdefault("safe_serialization", True)
        super().save_pretrained(save_directory, **kwargs)

    def _empty_prompt_embedding(self, device) -> torch.Tensor:
        tokens = self.tokenizer(
            "", padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        return self.text_encoder(tokens.input_ids.to(device))[0]

    def _reference_latents(self, reference: np.ndarray, device, dtype) -> torch.Tensor:
        """The VAE latents (``1×4×h×w``, scaled) of one uint8 ``H×W×3`` reference image."""
        ref = torch.from_numpy(np.array(reference)).float().to(device, dtype) / 127.5 - 1
        return self.vae.encode(ref.permute(2, 0, 1)[None]).latent_dist.mean * SCALING_FACTOR

    def _frames_to_tensor(self, frames: np.ndarray, device, dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames)).to(device, dtype).permute(0, 3, 1, 2)

    @torch.no_grad()
    def __call__(
        self,
        reference: np.ndarray | Sequence[np.ndarray],
        motion: Sequence[np.ndarray] | np.ndarray,
        *,
        num_inference_steps: int = AnimateConfig.steps,
        guidance_scale: float = AnimateConfig.guidance_scale,
        seed: int = AnimateConfig.seed,
        generator: torch.Generator | None = None,
        context_frames: int = AnimateConfig.context_frames,
        context_overlap: int = AnimateConfig.context_overlap,
        context_schedule: str = AnimateConfig.context_schedule,
        context_fusion: str = AnimateConfig.context_fusion,
        output_type: str = "uint8",
        return_dict: bool = True,
        fast: bool | FastPath = False,
        on_frame: Callable[[int, Any], None] | None = None,
        progress: Progress | None = None,
        distributed: bool = False,
        latents: torch.Tensor | None = None,
        start_step: int = 0,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> MagicAnimatePipelineOutput | tuple:
        """Animate ``reference`` (uint8 ``H×W×3``) along ``motion`` (uint8 ``T×H×W×3``, same size).

        ``reference`` may also be several images of that size (a list of ``H×W×3`` arrays, or one
        ``N×H×W×3`` array; ``animate --extra-reference``): the appearance encoder encodes them in one
        batch every step and the guided rows attend over all their features, ``[own ; ref1 ; ref2
        ; ...]`` in the order given (``reference.py``). An extension of the method: the published
        weights were trained with one reference. One image, alone or in a list, is the official run.

        Noise comes from ``generator`` when given, else from a generator seeded with ``seed``.
        Frames are decoded and handed to ``on_frame(index, frame)`` when given, otherwise
        collected into the output. ``output_type``: ``"uint8"`` (``T×H×W×3``, the official
        truncating conversion), ``"np"`` (float32 ``T×H×W×3`` in [0, 1], before that conversion),
        ``"pt"`` (float32 tensor ``T×3×H×W``), ``"pil"`` (list of images of the uint8 frames) or
        ``"latent"`` (no decoding). ``fast`` selects the fast path (within the parity contract, not
        bitwise; see the module docstring).

        With ``distributed`` (inside an initialised ``torch.distributed`` process group) each rank
        denoises a contiguous share of the windows, the window sums are all-reduced every step,
        and rank 0 decodes; the result is bitwise the single-process one where at most two windows
        cover a frame (so the order of the sums cannot matter): with either schedule at the default
        16 frames overlapping by 4, not where a larger overlap makes three. Other ranks return no frames.

        ``callback_on_step_end(pipe, step_index, timestep, tensors)`` runs after every denoising
        step with the tensors named in ``callback_on_step_end_tensor_inputs`` (``"latents"``,
        ``"noise_pred"``); a returned ``"latents"`` replaces the latents. Resuming: passing the
        latents seen after step ``i`` back with ``start_step=i + 1`` continues the run exactly
        (DDIM with eta 0 carries no other state).

        ``context_schedule``: ``"loop"`` (the official windows: the last one wraps from the clip's
        end into its start) or ``"open"`` (no window wraps). ``context_fusion``: ``"flat"`` (the
        official mean of overlapping windows) or ``"pyramid"`` (each window weighed by the frame's
        place in it; ``windows.py``).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}")
        references = _references(reference)
        num_frames = len(motion)
        if num_frames < 1:
            raise ValueError("motion needs at least one frame")
        if context_schedule not in SCHEDULES:
            raise ValueError(f"context_schedule must be one of {', '.join(SCHEDULES)}")
        if context_fusion not in FUSIONS:
            raise ValueError(f"context_fusion must be one of {', '.join(FUSIONS)}")
        tensor_inputs = getattr(callback_on_step_end, "tensor_inputs", None) or list(callback_on_step_end_tensor_inputs)
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs: {unknown} not in {self._callback_tensor_inputs}")
        check_processors(self.unet)
        check_processors(self.appearance_encoder)
        fast = _levers(fast)
        try:
            latents = self._denoise(
                references, motion, num_inference_steps, guidance_scale, seed, generator, context_frames, context_overlap,
                context_schedule, context_fusion, fast, progress, distributed, latents, start_step, callback_on_step_end, tensor_inputs,
            )
        finally:
            self._bank.clear()
            self._text_kv.clear()
            self._side_by_side.on = False
            self._upsample_phases.on = False
            self._pose_embeddings.clear()
            release_freed_memory()  # the UNet's temporaries, before the VAE's (malloc.py)
        if _rank_and_world(distributed)[0] != 0:
            frames = None
        elif output_type == "latent":
            frames = latents
        else:
            self._decode_phases.on = bool(fast and fast.upsample_phases and not fast.compile)  # CPU only (upsample_phases.py)
            try:
                frames = self._decode(latents, num_frames, output_type, on_frame, progress, _decode_chunk(fast, latents.device))
            finally:
                self._decode_phases.on = False
                release_freed_memory()
        if not return_dict:
            return (frames, latents)
        return MagicAnimatePipelineOutput(frames=frames, latents=latents)

    def _denoise(
        self, references, motion, num_inference_steps, guidance_scale, seed, generator, context_frames, context_overlap,
        context_schedule, context_fusion, fast, progress, distributed, latents, start_step, callback, tensor_inputs,
    ) -> torch.Tensor:
        num_frames = len(motion)
        height, width = references[0].shape[:2]
        device, dtype = self.unet.device, self.unet.dtype
        clip_length = context_frames
        total = padded_length(num_frames, clip_length)  # edge padding: frame i reads min(i, T-1)
        windows = context_windows(total, context_frames, context_overlap, context_schedule)
        weight = None  # flat: every window alike, the official sum; pyramid: by the frame's place in its window
        if context_fusion != "flat" and len(windows) > 1:
            weight = torch.tensor(window_weights(len(windows[0]), context_fusion), device=device, dtype=dtype)[None, None, :, None, None]
        rank, world = _rank_and_world(distributed)
        windows = _share(windows, rank, world)
        guided = guidance_scale > 1.0
        halves = 2 if guided else 1
        for reader in self._readers:  # per-call state, set on every call
            reader.cond_start = min(context_frames, total) if guided else 0  # rows are (half, frame)
            reader.fast = bool(fast and fast.reference_kv_once)
        self._side_by_side.on = bool(fast and fast.side_by_side_convs and not fast.compile)  # CPU only (side_by_side.py)
        self._upsample_phases.on = bool(fast and fast.upsample_phases and not fast.compile)  # CPU only (upsample_phases.py)
        self._pose_embeddings.on = not (fast and fast.compile)  # each chunk's pose embedding once per call (pose_embedding.py)

        text = self._empty_prompt_embedding(device)
        if fast and fast.text_kv_once:
            self._text_kv.project(text)
        # each reference on its own (a batch of one, as the official), so that each one's latents
        # do not depend on the others; the appearance encoder then takes them in one batch
        ref_latents = torch.cat([self._reference_latents(reference, device, dtype) for reference in references])
        self._bank.references = len(references)
        drop_mapped_pages(self.text_encoder, self.vae.encoder, self.vae.quant_conv)  # done for this call (mapped.py)

        if latents is None:
            if generator is None:
                generator = torch.Generator(device).manual_seed(seed)
            shape = (1, 4, clip_length, height // 8, width // 8)
            noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            latents = noise.repeat(1, 1, total // clip_length, 1, 1) * self.scheduler.init_noise_sigma
        else:
            latents = latents.to(device, dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        done, work = start_step * len(windows), len(timesteps) * len(windows)
        appearance_rows = 1 if fast and fast.appearance_one_row else 2  # the official runs two identical rows and banks the second
        # rows: [ref1 ... refN] once, or twice with the official two rows (the writers bank the last N)
        graph = AppearanceGraph(self._encode_appearance, self._bank) if fast and fast.cuda_graph else None
        if progress:  # the denoising begins (its bar shows before the first window ends)
            progress("denoise", done, work)
        for step, t in enumerate(timesteps):
            if step < start_step:
                continue
            self._bank.clear()
            self._appearance(ref_latents.repeat(appearance_rows, 1, 1, 1), t, text, graph)
            if fast and fast.reference_kv_once:
                project_reference(self._bank, self.unet, self._readers)
            self._bank.armed = True
            noise_pred = torch.zeros((halves, *latents.shape[1:]), device=device, dtype=dtype)
            counter = torch.zeros((1, 1, total, 1, 1), device=device, dtype=dtype)
            residuals = StepResiduals(windows, clip_length, partial(self._controlnet_chunk, latents, t, text, motion, fast))
            for index, window in enumerate(windows):
                down, mid = residuals.take(index)
                pred = self._window(latents[:, :, window], t, text, down, mid, halves, fast)  # consumes ``down``
                if weight is None:
                    noise_pred[:, :, window] += pred
                    counter[:, :, window] += 1
                else:
                    noise_pred[:, :, window] += pred * weight
                    counter[:, :, window] += weight
                done += 1
                if progress:
                    progress("denoise", done, work)
            self._bank.clear()
            if world > 1:
                torch.distributed.all_reduce(noise_pred)
                torch.distributed.all_reduce(counter)
            noise_pred = noise_pred / counter
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, eta=0.0).prev_sample
            if callback is not None:
                available = {"latents": latents, "noise_pred": noise_pred}
                outputs = callback(self, step, t, {k: available[k] for k in tensor_inputs}) or {}
                latents = outputs.pop("latents", latents)
        return latents

    def _decode(self, latents, num_frames: int, output_type: str, on_frame, progress, chunk: int):
        """Decode the real frames (never the padded ones), ``chunk`` frames per VAE call."""
        from PIL import Image

        height, width = latents.shape[-2] * 8, latents.shape[-1] * 8
        frames = None
        if on_frame is None:
            if output_type == "pt":
                frames = torch.empty((num_frames, 3, height, width), dtype=torch.float32)
            elif output_type == "pil":
                frames = []
            else:
                out_dtype = np.uint8 if output_type == "uint8" else np.float32
                frames = np.empty((num_frames, height, width, 3), dtype=out_dtype)
        scaled = 1 / SCALING_FACTOR * latents
        for first in range(0, num_frames, chunk):
            count = min(chunk, num_frames - first)
            batch = scaled[0, :, first : first + count].permute(1, 0, 2, 3)
            images = (self.vae.decode(batch).sample / 2 + 0.5).clamp(0, 1).cpu().float()
            for j in range(count):
                i = first + j
                if output_type == "pt":
                    frame = images[j]
                else:
                    image = images[j].permute(1, 2, 0).numpy()
                    if output_type == "np":
                        frame = image
                    else:  # the official converts float64(x) * 255 by truncation (§14.5)
                        frame = (image.astype(np.float64) * 255).astype(np.uint8)
                        if output_type == "pil":
                            frame = Image.fromarray(frame)
                if on_frame:
                    on_frame(i, frame)
                elif output_type == "pil":
                    frames.append(frame)
                else:
                    frames[i] = frame
                if progress:
                    progress("decode", i + 1, num_frames)
        return frames

    # The three model calls of a step, each its own method (benchmarks time them here); the window
    # and the ControlNet are compiled with ``FastPath.compile``.
    def _compiled_or(self, name: str, fn: Callable, fast: FastPath | None) -> Callable:
        if not (fast and fast.compile):
            return fn
        if name not in self._compiled:
            # inductor's layout optimisation would run the convolutions channels-last: other kernels,
            # which on CPU move fixture A's latents to 4.3e-3, outside the parity contract
            self._compiled[name] = torch.compile(fn, dynamic=False, options={"layout_optimization": False})
        return self._compiled[name]

    def _window(self, sample, t, text, down, mid, halves: int, fast: FastPath | None) -> torch.Tensor:
        shared_down = bool(fast and fast.shared_down)
        shared_skips = bool(shared_down and fast.shared_skips and not fast.compile and sample.device.type == "cpu")
        return self._compiled_or("window", _window_forward, fast)(self.unet, sample, t, text, down, mid, halves, shared_down, shared_skips)

    def _controlnet(self, sample, t, text, cond, fast: FastPath | None):
        return self._compiled_or("controlnet", _controlnet_forward, fast)(self.controlnet, sample, t, text, cond)

    def _appearance(self, latents, t, text, graph: AppearanceGraph | None = None) -> None:
        (graph if graph is not None else self._encode_appearance)(latents, t, text)

    def _encode_appearance(self, latents, t, text) -> None:
        _appearance_forward(self.appearance_encoder, latents, t, text)  # never compiled (FastPath.compile)

    def _controlnet_chunk(self, latents, t, text, motion, fast, frames: list[int]):
        """The residuals of ``frames`` (one official chunk of consecutive frames) in one ControlNet call."""
        device, dtype = latents.device, latents.dtype
        last_real = len(motion) - 1
        cond = np.stack([motion[min(f, last_real)] for f in frames])
        cond = self._frames_to_tensor(cond, device, dtype) / 255.0
        sample = latents[0, :, frames].permute(1, 0, 2, 3)
        return self._controlnet(sample, t, text, cond, fast)
