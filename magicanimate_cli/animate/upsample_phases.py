"""Nearest ×2 upsampling and its 3×3 convolution computed at the input's size (a fast-path lever on CPU).

diffusers' ``Upsample2D`` (as the official ``Upsample3D``) repeats every pixel into a 2×2 block and
runs a 3×3 convolution (padding 1) over the result. Each output pixel of a given phase (its row
and column parity) then sees only a 2×2 neighbourhood of input pixels: for even output rows the
kernel's first row falls on the input row above and its last two rows on the same input row, for
odd output rows the first two rows on the same input row and the last on the row below; columns
alike. So each of the four phases is a 2×2 convolution of the (zero-padded) input with the
kernel's rows and columns summed accordingly, 16 products per input pixel and channel pair
instead of 36. ``PhaseUpsample2D`` runs those four convolutions and interleaves their outputs.

The same mathematics; the sums of weights and the order of the products round differently, so it
is within the parity contract, not bitwise (``tests/animate/test_upsample_phases.py``, and the
fixture-A check of the fast path). The summed kernels are computed at the first upsampling and
kept, as a prepacked weight would be (summing the 1280-channel kernels takes about 0.1 s, as long
as the phases save on one UNet call there): 16/9 of the convolution's weight (at the real size
105 MB for each 1280-channel upsampler, the second one from 256², 26 MB for the 640-channel one
and 38 MB for the VAE decoder's three, float32). They are computed again when the weight is
changed in place, replaced, or moved or cast with the module (``.to()``, ``.float()``), so they
are never read stale.

Measured on the real model's upsamplers at 128², 16 frames (32 rows), 2 CPU threads, best of
five (``benchmarks/up_path_levers.py``, against the stock upsampler as ``--fast`` runs it): 640
channels on 8×8 inputs 1.65-2.08× faster (0.30-0.37 s → 0.18 s), 1280 channels on 4×4 inputs
1.47-1.48× (0.33-0.37 s → 0.23-0.25 s), 1280 channels on 2×2 inputs 1.26× (0.11 → 0.09 s), at most
0.02 s per UNet call, not worth its 105 MB of summed kernels: hence ``MIN_SIDE``. At 256²:
1.35-2.14×. The VAE's decoder has three such upsamplers (512 channels on 16×16 and 32×32 inputs,
256 on 64×64 at 128²): 1.9-2.4× each, a 2-frame decode 1.56 → 1.39 s, and 16 frames decoded in
one process, alternating with the stock upsamplers, 1.13× faster in one run of six rounds and
1.03× in one of four (``benchmarks/levers_ab.py --decode``). The pipeline turns the UNet's on
while denoising and the decoder's while decoding. On a GPU it is never used (not measured there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .unet import swap_classes

MIN_SIDE = 4
"""The smallest input height and width upsampled by phases (on 2×2 inputs the gain, at most 0.02 s
per UNet call at 128², is not worth the 1280-channel kernels' 105 MB)."""
PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


class UpsamplePhases:
    """Whether the current pipeline call upsamples by phases (shared by every adapter)."""

    on: bool = False


def _fold(weight: torch.Tensor, parity: int, dim: int) -> torch.Tensor:
    """The 3 taps of ``weight`` along ``dim`` as the 2 taps one output parity sees."""
    before, centre, after = weight.unbind(dim)
    return torch.stack([before, centre + after] if parity == 0 else [before + centre, after], dim)


def phase_kernels(weight: torch.Tensor) -> list[torch.Tensor]:
    """The four 2×2 kernels of a 3×3 ``weight`` applied after nearest ×2 upsampling, in ``PHASES`` order."""
    return [_fold(_fold(weight, row, 2), column, 3).contiguous() for row, column in PHASES]


class PhaseUpsample2D(Upsample2D):
    """diffusers' ``Upsample2D`` (nearest ×2, then a 3×3 convolution) computed by phases on CPU.

    The class is swapped onto ``Upsample2D`` instances (``install_upsample_phases``), so it keeps
    their parameters and state-dict keys; outside a fast call, or on inputs it does not take, it
    runs ``Upsample2D.forward``.
    """

    switch: UpsamplePhases
    _kernels: tuple[torch.Tensor, int, list[torch.Tensor]] | None = None
    """(the weight they were summed from, its version counter then, the four kernels)"""

    def forward(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or not (self.switch.on and _takes(hidden_states, output_size)) or self.conv.weight.requires_grad:
            return super().forward(hidden_states, output_size, *args, **kwargs)
        images, _, height, width = hidden_states.shape
        padded = F.pad(hidden_states, (1, 1, 1, 1))
        out = hidden_states.new_empty(images, self.conv.out_channels, height, 2, width, 2)
        for (row, column), kernel in zip(PHASES, self._phase_kernels()):
            window = padded[:, :, row : row + height + 1, column : column + width + 1]
            out[:, :, :, row, :, column] = F.conv2d(window, kernel, self.conv.bias)
        return out.view(images, -1, 2 * height, 2 * width)

    def _phase_kernels(self) -> list[torch.Tensor]:
        weight = self.conv.weight
        if self._kernels is not None:
            source, version, kernels = self._kernels
            # the kept view holds the source's memory, so another weight cannot have its address
            if source.data_ptr() == weight.data_ptr() and version == weight._version and source.shape == weight.shape:
                return kernels
        self._kernels = (weight.detach(), weight._version, phase_kernels(weight))
        return self._kernels[2]

    def _apply(self, fn, recurse=True):  # .to(), .float(), .cuda(): the kept kernels go
        self._kernels = None
        return super()._apply(fn, recurse)


def _takes(x: torch.Tensor, output_size) -> bool:
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not x.requires_grad
        and min(x.shape[2], x.shape[3]) >= MIN_SIDE
        and (output_size is None or tuple(output_size) == (2 * x.shape[2], 2 * x.shape[3]))
    )


def _qualifies(module: nn.Module) -> bool:
    if type(module) is not Upsample2D:
        return False
    conv = getattr(module, "conv", None)
    return (
        module.use_conv and not module.use_conv_transpose and module.interpolate and module.norm is None
        and module.name == "conv" and isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
        and conv.padding_mode == "zeros"
    )


def install_upsample_phases(*models: nn.Module) -> UpsamplePhases:
    """Give every qualifying ``Upsample2D`` of ``models`` the phase computation, on one shared switch
    (off until a call turns it on). Parameters and state-dict keys are unchanged."""
    switch = UpsamplePhases()
    swap_classes(models, _qualifies, PhaseUpsample2D, switch=switch)
    return switch
