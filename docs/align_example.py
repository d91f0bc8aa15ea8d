"""Draw docs/align.png: a synthetic reference, its driving pose before and after ``magicanimate align``.

Run from the repository root: ``python docs/align_example.py``. The figure goes through the real
code path (``align()`` on files); only the person and the DensePose body are synthetic.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from magicanimate_cli import media
from magicanimate_cli.align import align
from magicanimate_cli.densepose import render_labels

SIZE = 256
# a stick figure in unit coordinates (x, y in [0, 1] of its own box): (label, polygon or ellipse)
PARTS = [
    (23, "ellipse", (0.36, 0.00, 0.64, 0.16)),  # head
    (2, "rect", (0.30, 0.16, 0.70, 0.52)),  # torso
    (15, "rect", (0.12, 0.17, 0.30, 0.34)),  # upper arms
    (16, "rect", (0.70, 0.17, 0.88, 0.34)),
    (19, "rect", (0.04, 0.30, 0.18, 0.50)),  # forearms
    (20, "rect", (0.82, 0.30, 0.96, 0.50)),
    (8, "rect", (0.31, 0.52, 0.49, 0.78)),  # thighs
    (9, "rect", (0.51, 0.52, 0.69, 0.78)),
    (12, "rect", (0.32, 0.78, 0.48, 1.00)),  # legs
    (13, "rect", (0.52, 0.78, 0.68, 1.00)),
]


def figure(draw: ImageDraw.ImageDraw, box, colour_of) -> None:
    x0, y0, x1, y1 = box
    for label, kind, (u0, v0, u1, v1) in PARTS:
        shape = (x0 + u0 * (x1 - x0), y0 + v0 * (y1 - y0), x0 + u1 * (x1 - x0) - 1, y0 + v1 * (y1 - y0) - 1)
        (draw.ellipse if kind == "ellipse" else draw.rectangle)(shape, fill=colour_of(label))


def reference_image(box) -> Image.Image:
    """A person in clothes colours on a transparent background (RGBA)."""
    clothes = {23: (233, 196, 160), 2: (200, 60, 60), 15: (200, 60, 60), 16: (200, 60, 60), 19: (233, 196, 160),
               20: (233, 196, 160), 8: (40, 60, 130), 9: (40, 60, 130), 12: (40, 60, 130), 13: (40, 60, 130)}
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    figure(ImageDraw.Draw(image), box, lambda label: (*clothes[label], 255))
    return image


def pose_clip(boxes) -> np.ndarray:
    """DensePose renderings (the package's palette) of the figure in each box."""
    frames = []
    for box in boxes:
        labels = Image.new("L", (SIZE, SIZE), 0)
        figure(ImageDraw.Draw(labels), box, lambda label: label)
        frames.append(render_labels(np.asarray(labels)))
    return np.stack(frames)


def outline(frame: np.ndarray, box, colour=(255, 255, 255)) -> Image.Image:
    image = Image.fromarray(frame).convert("RGB")
    ImageDraw.Draw(image).rectangle((box[0] - 1, box[1] - 1, box[2], box[3]), outline=colour, width=1)
    return image


def main(out: Path = Path(__file__).with_name("align.png")) -> None:
    ref_box = (40, 24, 136, 248)  # a tall person standing left of centre
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        reference_image(ref_box).save(scratch / "ref.png")
        media.write_frames(scratch / "poses", pose_clip([(160, 112, 196, 196), (164, 110, 200, 194)]))
        result = align(scratch / "ref.png", scratch / "poses", scratch / "aligned", size=SIZE)
        before = media.read_frames(scratch / "poses").array[0]
        after = media.read_frames(scratch / "aligned").array[0]
        reference = media.read_image(scratch / "ref.png")
    box = [round(v) for v in result.transform["ref_box"]]
    panels = [outline(reference, box, (120, 120, 120)), outline(before, box), outline(after, box)]
    captions = ["reference (alpha -> person box)", "driving pose (before)", f"aligned: x{result.transform['scale']:.2f}, feet"]
    canvas = Image.new("RGB", (3 * SIZE + 4 * 8, SIZE + 30), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (panel, caption) in enumerate(zip(panels, captions)):
        canvas.paste(panel, (8 + i * (SIZE + 8), 8))
        draw.rectangle((7 + i * (SIZE + 8), 7, 8 + i * (SIZE + 8) + SIZE, 8 + SIZE), outline=(160, 160, 160))
        draw.text((8 + i * (SIZE + 8), SIZE + 12), caption, fill=(0, 0, 0))
    canvas.save(out, optimize=True)


if __name__ == "__main__":
    main()
