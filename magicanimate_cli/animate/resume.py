"""Resumable animation runs: the latents after each denoising step, kept beside the output.

A run of a long clip takes many minutes on a GPU. After every step the latents (4 channels at 1/8
resolution: 32 KiB per frame at 512² in float16) are written atomically to a hidden safetensors
file next to the output; an interrupted run started again with the same inputs, settings and
weights files (``WeightLayout.identity``: path, size and mtime of each) picks
up after the last finished step and gives exactly the result of an uninterrupted run (DDIM with
eta 0 has no other state). The file is removed when the output is complete. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def run_key(reference, poses, settings: dict) -> str:
    """A digest of everything that determines the latents: inputs and settings. ``reference`` is
    one image, or a tuple of several (``animate --extra-reference``: counted in the settings, then
    digested in their order); one image alone or in a tuple has the same key."""
    references = reference if isinstance(reference, (tuple, list)) else (reference,)
    if len(references) > 1:
        settings = {**settings, "references": len(references)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for image in references:
        digest.update(memoryview(image).tobytes())
    for start in range(0, len(poses), 64):
        digest.update(memoryview(poses[start : start + 64]).tobytes())
    return digest.hexdigest()


class StepCheckpoint:
    def __init__(self, output: Path, key: str) -> None:
        output = Path(output)
        from ..files import short_name

        tail = ".animate-resume.safetensors"
        self.output = output
        self.path = output.parent / f".{short_name(output.name, len(tail) + 1)}{tail}"  # a long output name still fits
        self.key = key

    def load(self):
        """``(steps_done, latents)`` of an interrupted run with the same key, else ``None``."""
        from safetensors import safe_open

        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("key") != self.key:
                    return None
                return int(meta["step"]), handle.get_tensor("latents")
        except Exception:  # a damaged checkpoint only costs the time it saved
            return None

    def save(self, steps_done: int, latents) -> None:
        """Write the checkpoint atomically; a failed write (a full disk) leaves no file behind and
        is reported as ``UserError`` naming the output."""
        from safetensors.torch import save

        from ..errors import UserError, first_line, shown
        from ..files import commit, discard, temp_beside

        tmp = None
        try:
            tmp = temp_beside(self.path, directory=False)
            # the bytes into our own temporary: safetensors' save_file writes a .tmpXXXXXX of its
            # own beside it, which a kill would leave where no sweep knows it
            data = save({"latents": latents.detach().cpu().contiguous()}, metadata={"key": self.key, "step": str(steps_done)})
            with open(tmp, "wb") as handle:
                handle.write(data)
            commit(tmp, self.path, replace=True)
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, UserError) and isinstance(exc.__cause__, OSError) else exc
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else first_line(exc)
            raise UserError(
                f"{shown(self.output)}: cannot write its resume checkpoint beside it ({reason}); free space on that disk or "
                "choose an output on another one, then run again"
            ) from exc
        finally:
            discard(tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
