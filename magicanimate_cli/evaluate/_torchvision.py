"""Import the metric packages (lpips, torch-fidelity) when torchvision cannot be imported.

lpips and torch-fidelity import torchvision at module level, but the parts we use need nothing
from it except, for lpips, the *layout* of torchvision's VGG16/AlexNet feature stacks (the
weights come from our verified files). torchvision wheels exist only for some torch builds (none
for the torch 2.13 CPU wheel: ``operator torchvision::nms does not exist``), so when the real
torchvision is missing or broken, the package is imported once with a stand-in ``torchvision``
in ``sys.modules``: its ``models.vgg16``/``models.alexnet`` build the same layer stacks, and
everything else is a placeholder that raises if anything calls it. The stand-in is removed
again right after the import; the imported module keeps its reference. When torchvision
imports fine, the real one is used and nothing here happens.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from contextlib import contextmanager

STAND_IN = "torchvision"


def torchvision_usable() -> bool:
    """Whether the real torchvision imports (it raises RuntimeError on a torch it wasn't built for)."""
    if STAND_IN in sys.modules and getattr(sys.modules[STAND_IN], "__magicanimate_stand_in__", False):
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:
        _forget(STAND_IN)
        return False
    return True


def import_module(name: str) -> types.ModuleType:
    """``importlib.import_module(name)``, falling back to the torchvision stand-in."""
    if name in sys.modules:
        return sys.modules[name]
    if torchvision_usable():
        return importlib.import_module(name)
    _forget(name.split(".")[0])
    with _stand_in():
        return importlib.import_module(name)


def _forget(package: str) -> None:
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[key]


# ----------------------------------------------------------------------------- the stand-in


class _Unavailable:
    """A placeholder for any torchvision name we do not provide; calling it explains why."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        raise ImportError(f"{self._name} needs a working torchvision (install the torchvision build that matches your torch)")

    def __getattr__(self, attr: str) -> _Unavailable:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._name}.{attr}")

    def __mro_entries__(self, bases):  # lets `class X(torchvision.Something)` still be defined
        return (object,)


class _StandInModule(types.ModuleType):
    __magicanimate_stand_in__ = True

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self.__name__ == STAND_IN and attr == "models":  # `from torchvision import models`
            return importlib.import_module(f"{STAND_IN}.models")
        return _Unavailable(f"{self.__name__}.{attr}")


def _vgg16(pretrained: bool = False, weights=None, **_):
    """torchvision's VGG16 ``features`` layout (configuration D), randomly initialised."""
    import torch.nn as nn

    if pretrained or weights:
        raise ImportError("the torchvision stand-in has no pretrained weights; load them from the models folder")
    layers: list = []
    channels = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    net = nn.Module()
    net.features = nn.Sequential(*layers)
    return net


def _alexnet(pretrained: bool = False, weights=None, **_):
    """torchvision's AlexNet ``features`` layout, randomly initialised."""
    import torch.nn as nn

    if pretrained or weights:
        raise ImportError("the torchvision stand-in has no pretrained weights; load them from the models folder")
    net = nn.Module()
    net.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    return net


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == STAND_IN or fullname.startswith(STAND_IN + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        if spec.name == f"{STAND_IN}.models":
            module.vgg16 = _vgg16
            module.alexnet = _alexnet
        return module

    def exec_module(self, module):
        pass


@contextmanager
def _stand_in():
    finder = _Finder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        _forget(STAND_IN)
