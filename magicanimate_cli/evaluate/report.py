"""Rich tables for an ``EvalResult``: per-clip frame metrics, then the distribution metrics."""

from __future__ import annotations

import math

from . import LOWER_IS_BETTER

LABELS = {"l1": "L1", "psnr": "PSNR", "ssim": "SSIM", "ssim_gray": "SSIM gray", "lpips": "LPIPS", "fid": "FID", "fid-vid": "FID-VID", "fvd": "FVD"}


def _fmt(column: str, value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if column == "l1" and abs(value) < 1e-3:
        return f"{value:.3e}"
    if column in ("psnr", "fid", "fid-vid", "fvd"):
        return f"{value:.2f}"
    return f"{value:.4f}"


def _arrow(column: str) -> str:
    return "↓" if column.split("_")[0] in LOWER_IS_BETTER else "↑"


def tables(result):
    """The per-clip table, the table that says what each number is, and the notes, as one Rich group."""
    from rich.console import Group
    from rich.table import Table

    parts = []

    frame_columns = [c for c in result.columns if c not in ("fid", "fid-vid", "fvd")]
    if frame_columns:
        table = Table(title=f"magicanimate eval · protocol {result.protocol}", title_justify="left")
        table.add_column("clip")
        table.add_column("frames", justify="right")
        for column in frame_columns:
            table.add_column(f"{LABELS.get(column, column)} {_arrow(column)}", justify="right")
        for clip in result.clips:
            table.add_row(clip.name, str(clip.frames), *[_fmt(c, clip.scores[c].value) for c in frame_columns])
        if len(result.clips) > 1 or not result.clips:
            table.add_section()
            samples = str(result.overall[frame_columns[0]].samples)
            table.add_row("[bold]overall[/bold]", samples, *[f"[bold]{_fmt(c, result.overall[c].value)}[/bold]" for c in frame_columns])
        parts.append(table)

    table = Table(title="what each number is", title_justify="left", show_lines=False)
    for header in ("metric", "value", "protocol", "clip length", "samples", "extractor / definition"):
        table.add_column(header, overflow="fold")
    for column in result.columns:
        score = result.overall[column]
        what = score.extractor + " · " + score.definition if score.extractor else score.definition
        length = str(score.clip_length) if score.clip_length is not None else ("whole video" if score.note else "varies")
        table.add_row(
            f"{LABELS.get(column, column)} {_arrow(column)}", _fmt(column, score.value), score.protocol, length, str(score.samples), what
        )
    parts.append(table)
    parts.extend(f"[yellow]note[/yellow]: {note}" for note in result.notes)
    return Group(*parts)
