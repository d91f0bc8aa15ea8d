"""``animate --devices``: one process per device, each denoising its share of every step's windows.

``run_distributed`` starts the processes (``torch.multiprocessing``; NCCL between GPUs, gloo
between CPU processes, for tests) and waits for them; each loads the pipeline and runs the same
``_Job`` (``animate/stage.py``); the pipeline shares the windows out (``pipeline._share``) and
rank 0 decodes and writes the outputs. The frames are those of the same run in one process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import UserError, debugging, show_library_logs

__all__ = ["check_devices", "parse_devices", "run_distributed"]


def parse_devices(devices: str | None) -> list[str]:
    """``"0,1"`` (or ``"cuda:0,cuda:1"``) -> ``["cuda:0", "cuda:1"]``; ``"cuda"`` is ``cuda:0``;
    ``"cpu,cpu"`` -> two CPU processes (for tests). No torch import."""
    if not devices:
        return []
    out = []
    for item in devices.split(","):
        item = item.strip()
        index = item.removeprefix("cuda:") if item.startswith("cuda:") else item
        if index.isascii() and index.isdigit():
            out.append(f"cuda:{int(index)}")
        elif item in ("cpu", "cuda"):
            out.append("cuda:0" if item == "cuda" else item)
        else:
            raise UserError(f"--devices {devices}: expected GPU indices like 0,1,2 (or cuda:0,cuda:1; cpu,cpu to test on CPU)")
    if len(set(out)) != len(out) and any(d.startswith("cuda") for d in out):
        raise UserError(f"--devices {devices}: each GPU may appear once")
    if len({d.split(":")[0] for d in out}) > 1:
        raise UserError(f"--devices {devices}: all GPUs or all cpu, not a mix")
    return out


def check_devices(devices: list[str]) -> None:
    """``UserError`` unless PyTorch sees every device of ``parse_devices``'s list (imports torch)."""
    from ..device import resolve_device

    for device in devices:
        resolve_device(device, "--devices")


def run_distributed(job, devices: list[str], models, dtype: str) -> None:
    """One process per device (torch.multiprocessing, NCCL on GPUs, gloo on CPU).

    The processes meet through a file in a private temporary folder (torch's ``FileStore``), not a
    TCP port: a free port picked here could be taken by another program before rank 0 bound it."""
    import tempfile

    import torch
    import torch.multiprocessing as mp

    check_devices(devices)
    with tempfile.TemporaryDirectory(prefix="magicanimate-devices-") as meeting:
        # each process computes with this process's thread count: parallel sums add up in an order
        # that depends on it, and the frames are those of the same run in one process
        threads = torch.get_num_threads()
        store = str(Path(meeting, "store"))
        args = (job, devices, str(models) if models else None, dtype, store, threads, debugging())  # --debug's library logs too
        _run_processes(mp, args, len(devices))


def _run_processes(mp, args: tuple, count: int) -> None:
    context = mp.spawn(_worker, args=args, nprocs=count, join=False)
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as exc:
        message = str(exc).strip().splitlines()[-1]
        if "UserError" in message:
            raise UserError(message.split("UserError: ", 1)[-1]) from None
        raise RuntimeError(f"a device process failed: {message}") from None
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM to this process alone (`kill PID`, `docker stop`): the device
        from ..processes import stop_children

        stop_children(context.processes)  # processes stop too (else they went on and wrote the output)
        raise


def _worker(rank: int, job, devices: list[str], models, dtype: str, store: str, threads: int, debug: bool = False) -> None:
    import signal

    import torch
    import torch.distributed as dist

    from ..processes import stop_once_on
    from .loading import load_pipeline
    from .stage import _check_window, _render

    stop_once_on(signal.SIGINT, signal.SIGTERM)
    torch.set_num_threads(threads)
    if debug:
        show_library_logs()
    device = devices[rank]
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, store=dist.FileStore(store, len(devices)), rank=rank, world_size=len(devices))
    try:
        pipeline = load_pipeline(models, "cuda" if device.startswith("cuda") else "cpu", dtype)
        _check_window(job.call["context_frames"], pipeline.unet.config.motion_max_seq_length)
        _render(job, pipeline, None, distributed=True)
        # the other ranks are done after the last step; they wait here while rank 0 decodes and
        # writes, so that no process tears its connections down while another still holds them
        dist.barrier()
    finally:
        dist.destroy_process_group()
    _leave_without_teardown()


def _leave_without_teardown() -> None:
    """End a device process that has done its work without the interpreter's teardown.

    A spawned process that returns exits through ``sys.exit``, and in the teardown that follows
    (no Python frame left) gloo's threads can end the process with ``terminate called without an
    active exception`` (SIGABRT) after the output is complete: measured, 3 of 70 two-process CPU
    runs; ``torch.multiprocessing.spawn`` then stops the other process and the run fails. By now
    everything is written, closed and renamed, so the process flushes its streams and leaves with
    exit code 0. A process that raised never gets here: spawn reports its error as before.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

