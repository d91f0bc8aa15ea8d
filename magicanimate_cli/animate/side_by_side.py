"""Small-image convolutions run on a batch's images laid side by side (a fast-path lever on CPU).

At 128² the deepest blocks of the UNet and the ControlNet work on 2×2 to 8×8 latents, and oneDNN's
direct 3×3 convolution is slow there on a CPU: its register blocking runs along an image row of 2 to
8 pixels (16 frames of a 1280-channel 2×2 image: about 40 GFLOP/s on the 2 AVX2 threads of our
development machine, against about 135 GFLOP/s on a 32×32 image). ``SideBySideConv2d`` lays the
batch's images in one row of one image, one zero column between neighbours and a zero border
around them, and runs the convolution once without padding over that row: every output pixel sees
the same inputs and the same zeros it would see alone, and the kernel runs along a row of
``batch × (width + 1)`` pixels. The wasted work is the one separator column per image.

The same mathematics, and on the shapes it takes the same bits: oneDNN's direct kernel sums each
output pixel's products in the same order wherever the pixel sits (measured with torch 2.13.0's
oneDNN on AVX2, 1 to 16 threads, 320-2560 input and output channels, 2×2 to 8×8 images, 16 to 64
images: identical; with fewer than 320 channels, a batch of 2 or 1×1 images oneDNN picks other
kernels and the results differ in the last bits). It is used from 1280 channels only (at 640
output channels on 8×8 images it was sometimes slower) and stays in the fast path: bitwise
equality rests on oneDNN's choice of kernel, which another version may change, and the default
path keeps the official call sequence. ``tests/animate/test_side_by_side.py`` checks it on the
real model's shapes.

Measured at the real model size, 128², 16 frames, 2 CPU threads: 1.08-1.36× per convolution shape
it takes (about 0.55 s of convolution time per 22-25 s denoising step); whole one-step calls of
the fast path 1.049× faster, with the same latents bit for bit. The gain depends on the machine: on
another host of the same kind (lscpu family 25 model 17) only the 2×2 shapes gained (1.03-1.08×,
4×4: 0.93-1.01×), and whole one-step calls were 1.01× faster. On a GPU it is never used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet import swap_classes

MIN_CHANNELS = 1280
"""Input and output channels from which a convolution is laid side by side: measured faster on every
such shape; at 640 output channels sometimes slower, and below 320 channels oneDNN picks other kernels."""
MAX_SIDE = 8
"""The largest image height and width laid side by side (at 16×16 it no longer pays)."""
MIN_IMAGES = 16
"""The smallest batch laid side by side (at 2 images oneDNN's kernel choice differs)."""


class SideBySide:
    """Whether the current pipeline call lays small convolutions side by side (shared by every adapter)."""

    on: bool = False


class SideBySideConv2d(nn.Conv2d):
    """``nn.Conv2d`` (3×3, stride 1, padding 1) that runs a CPU batch of small images as one row."""

    side_by_side: SideBySide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.side_by_side.on and _takes(x)):
            return super().forward(x)
        images, channels, height, width = x.shape
        step = width + 1
        # one zero border row above and below; columns: a zero, then each image followed by a zero,
        # and one more zero so that the output row splits into ``images`` blocks of ``step`` pixels
        row = x.new_zeros(1, channels, height + 2, images * step + 2)
        row[0, :, 1 : height + 1, 1 : 1 + images * step].view(channels, height, images, step)[..., :width].copy_(
            x.permute(1, 2, 0, 3)
        )
        out = F.conv2d(row, self.weight, self.bias)  # 1 × c' × h × (images·step)
        out = out[0].view(out.shape[1], height, images, step)[..., :width]
        return out.permute(2, 0, 1, 3).contiguous()


def _takes(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not x.requires_grad
        and x.shape[0] >= MIN_IMAGES and 2 <= x.shape[2] <= MAX_SIDE and 2 <= x.shape[3] <= MAX_SIDE
    )


def _qualifies(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
        and conv.padding_mode == "zeros" and conv.in_channels >= MIN_CHANNELS and conv.out_channels >= MIN_CHANNELS
    )


def install_side_by_side(*models: nn.Module) -> SideBySide:
    """Make every qualifying convolution of ``models`` a ``SideBySideConv2d`` on one shared switch
    (off until a call turns it on). Parameters and state-dict keys are unchanged."""
    switch = SideBySide()
    swap_classes(models, _qualifies, SideBySideConv2d, side_by_side=switch)
    return switch
