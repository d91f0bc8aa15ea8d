"""The appearance encoder replayed from a CUDA graph (``FastPath.cuda_graph``).

Every denoising step runs the appearance encoder on the same reference latents and the same empty
prompt; only the timestep changes. Its forward is about 1,200 small kernels: on an H100/H200 it is
launch-bound (issue 11's profile: 35 ms of wall time for 12 ms of kernels). So the first step runs
it eagerly (which also sets up cuBLAS and cuDNN outside the capture), the second step captures its
kernels into a ``torch.cuda.CUDAGraph`` and every later step only copies the timestep into the
graph's input and replays it. A replay launches the same kernels on the same inputs as the eager
encoder, so the reference bank holds bitwise what the eager encoder writes (checked on a GPU by
``tests/animate/test_cuda_graph.py`` and ``benchmarks/animate_gpu.py``).

The bank's features are tensors of the graph's memory pool: each replay overwrites them in place, so
the pipeline puts the same tensors back into the bank after every replay. The pool is freed with the
graph at the end of the call. Elsewhere than on CUDA the encoder simply runs eagerly every step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from .reference import ReferenceBank


class AppearanceGraph:
    """Run ``encode(latents, t, text)`` (which fills ``bank``) eagerly once, then from a CUDA graph."""

    def __init__(self, encode: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None], bank: ReferenceBank) -> None:
        self._encode = encode
        self._bank = bank
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: tuple[torch.Tensor, ...] = ()
        self._features: dict[str, torch.Tensor] = {}
        self.eager_calls = 0
        self.replays = 0
        self._failed = False

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> None:
        if latents.device.type == "cuda" and self.eager_calls and not self._failed:
            if self._graph is not None or self._capture(latents, t, text):
                for static, value in zip(self._inputs, (latents, t, text)):
                    static.copy_(value)
                self._graph.replay()
                self.replays += 1
                self._bank.features.update(self._features)
                return
        self.eager_calls += 1
        self._encode(latents, t, text)

    def _capture(self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> bool:
        self._inputs = (latents.clone(), t.clone(), text.clone())
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: another thread's CUDA work (the demo runs one job per device in one process)
            # neither breaks this capture nor is broken by it
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._encode(*self._inputs)
        except RuntimeError as error:  # an operation that cannot be captured: stay eager
            warnings.warn(f"the appearance encoder could not be captured in a CUDA graph, it runs eagerly: {error}", stacklevel=3)
            self._failed = True
            self._bank.features.clear()
            return False
        self._graph = graph
        self._features = dict(self._bank.features)  # filled during the capture; the replays write into them
        return True
