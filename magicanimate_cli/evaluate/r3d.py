"""The 3D ResNet-50 behind DisCo's FID-VID ("FVD-3DRN50").

Hara, Kataoka and Satoh, "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and
ImageNet?" (CVPR 2018), Kinetics-400 weights ``resnet-50-kinetics.pth`` of 3D-ResNets-PyTorch.
No maintained package ships this network, so it is defined here from the paper's architecture:
bottleneck blocks [3, 4, 6, 3], a 7x7x7 stem with stride (1, 2, 2), a 3x3x3 max pool with
stride 2, projection shortcuts (type B), and an average pool over the last (T/16, 112/32,
112/32) volume. DisCo reads the 2048-d pooled features (``last_fc=False``). Module names follow
the checkpoint's keys (``layer1.0.conv1.weight``, ``layer1.0.downsample.0.weight``, ...).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError


def _modules():
    import torch.nn as nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
            super().__init__()
            self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm3d(planes)
            self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm3d(planes)
            self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
            self.bn3 = nn.BatchNorm3d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + shortcut)

    class ResNet3D(nn.Module):
        def __init__(self, layers=(3, 4, 6, 3), sample_size: int = 112, sample_duration: int = 16, num_classes: int = 400) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=(3, 3, 3), bias=False)
            self.bn1 = nn.BatchNorm3d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._layer(64, layers[0], 1)
            self.layer2 = self._layer(128, layers[1], 2)
            self.layer3 = self._layer(256, layers[2], 2)
            self.layer4 = self._layer(512, layers[3], 2)
            last = (math.ceil(sample_duration / 16), math.ceil(sample_size / 32), math.ceil(sample_size / 32))
            self.avgpool = nn.AvgPool3d(last, stride=1)
            self.fc = nn.Linear(2048, num_classes)  # in the checkpoint; unused for features

        def _layer(self, planes: int, blocks: int, stride: int):
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv3d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(planes * 4)
                )
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.avgpool(x).flatten(1)

    return ResNet3D


def r3d50(sample_duration: int = 16, sample_size: int = 112):
    """The network with random weights (features: ``N×3×T×112×112`` -> ``N×2048``)."""
    return _modules()(sample_size=sample_size, sample_duration=sample_duration)


def load_r3d50(path: Path, sample_duration: int = 16):
    """The network with the weights of ``resnet-50-kinetics.pth`` (``{"state_dict": ...}``)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: cannot be read as a PyTorch checkpoint ({exc.__class__.__name__}); get the file again") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path}: no state_dict inside; this is not resnet-50-kinetics.pth")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    model = r3d50(sample_duration)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: does not match the 3D ResNet-50 layout ({str(exc).splitlines()[0]})") from exc
    return model.eval()
