"""Test helpers for the preprocessing stages: tiny videos, a loopback HTTP server, DensePose tables.

The DensePose palette and swap table are written out here from the reference
(official-inference.md §10.3 and §10.5), independently of ``magicanimate_cli.densepose``, so the
flip tests check the package against the documented values rather than against itself.
"""

from __future__ import annotations

import http.server
import socketserver
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# §10.3: RGB of label l = OpenCV VIRIDIS at floor(l * 10.625), as decoded by PyAV.
TABLE_10_3 = np.array(
    [
        (68, 1, 84), (71, 16, 99), (72, 31, 112), (71, 44, 122), (68, 57, 131),
        (64, 70, 136), (59, 81, 139), (54, 93, 141), (49, 104, 142), (44, 113, 142),
        (40, 124, 142), (37, 133, 142), (33, 144, 141), (31, 154, 138), (32, 163, 134),
        (39, 173, 129), (53, 183, 121), (70, 192, 111), (92, 200, 99), (115, 208, 86),
        (142, 214, 69), (170, 220, 50), (197, 224, 33), (226, 228, 24), (253, 231, 37),
    ],
    dtype=np.uint8,
)  # fmt: skip
# §10.5: detectron2 DensePoseTransformData.POINT_LABEL_SYMMETRIES
SYMMETRY_10_5 = np.array([0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21, 24, 23])


def grey_level(index: int) -> int:
    """The grey value that marks frame ``index`` of the generated videos (survives h264)."""
    return (index * 8) % 240 + 8


def decode_index(frame: np.ndarray) -> int:
    """Inverse of ``grey_level`` for frames with index < 30 (reads the top-left corner)."""
    value = float(frame[:4, :4].mean())
    return int(round((value - 8) / 8))


def make_video(path: Path, count: int = 30, fps: float = 25.0, width: int = 64, height: int = 48, moving: bool = False) -> Path:
    """An mp4 whose frame i is grey level ``grey_level(i)`` (top-left corner marks the index).

    ``moving``: instead, a still grey frame where a bright 12-pixel-wide bar crosses the right half.
    """
    from magicanimate_cli import media

    frames = np.zeros((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i] = grey_level(i)
        if moving:
            frames[i] = 60
            x = width // 2 + (i * 3) % max(1, width // 2 - 12)
            frames[i, height // 4 : height - 4, x : x + 12] = (230, 200, 180)
    return media.write_frames(path, frames, fps=fps, overwrite=True)


def add_sound(video: Path, seconds: float, rising: bool = False) -> Path:
    """Give ``video`` a 440 Hz tone of ``seconds`` (AAC), its frames copied as they are: a phone's
    dance video has its music. ``rising``: the tone's amplitude grows from 0 to 0.9 over the
    ``seconds``, so its level tells the time (``sound_level``)."""
    import subprocess

    from magicanimate_cli import media

    video = Path(video)
    silent = video.with_name(f"silent-{video.name}")
    video.rename(silent)
    tone = f"aevalsrc=0.9*t/{seconds}*sin(2*PI*440*t):s=44100:d={seconds}" if rising else "sine=frequency=440"
    subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-i", str(silent), "-f", "lavfi", "-t", f"{seconds}",
                    "-i", tone, "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(video)], check=True)  # fmt: skip
    silent.unlink()
    return video


def with_empty_sound(video: Path, target: Path) -> Path:
    """``target`` (an .mkv): ``video``'s picture and a sound stream that its header lists but no
    packet fills, a sound that cannot be kept (``written without the sound of ...``)."""
    import subprocess

    from magicanimate_cli import media

    subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-i", str(video), "-map", "0", "-c", "copy",
                    "-bsf:a", "noise=drop=1", str(target)], check=True)  # fmt: skip
    return Path(target)


SOUND_RATE = 8000  # samples per second of ``read_sound``


def read_sound(path: Path, rate: int = SOUND_RATE) -> np.ndarray:
    """The first sound stream of ``path`` decoded by ffmpeg: mono float samples at ``rate``."""
    import subprocess

    from magicanimate_cli import media

    done = subprocess.run([media.ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                           "-ar", str(rate), "-f", "s16le", "-"], check=True, capture_output=True)  # fmt: skip
    return np.frombuffer(done.stdout, np.int16).astype(np.float64) / 32768


def sound_level(samples: np.ndarray, at: float, window: float = 0.05) -> float:
    """The amplitude of a tone around ``at`` seconds (√2 × the RMS of ``window`` seconds)."""
    start = int(at * SOUND_RATE)
    part = samples[start : start + int(window * SOUND_RATE)]
    return float(np.sqrt(2 * np.mean(part**2)))


def write_clip(folder: Path, count: int = 3, width: int = 40, height: int = 30, seed: int = 0, person=(20, 5, 36, 28)) -> dict:
    """A clip folder with images/, masks/, densepose/ (exact palette) and densepose_labels/.

    The 'person' is the box ``person`` (x0, y0, x1, y1): labels 1..24 inside, 0 outside.
    Returns the arrays written, keyed by subfolder (T×H×W[×3]).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = person
    images = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
    labels = np.zeros((count, height, width), np.uint8)
    labels[:, y0:y1, x0:x1] = rng.integers(1, 25, (count, y1 - y0, x1 - x0), dtype=np.uint8)
    masks = np.where(labels > 0, 255, 0).astype(np.uint8)
    renders = TABLE_10_3[labels]
    for sub in ("images", "masks", "densepose", "densepose_labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"{i:05d}.png"
        Image.fromarray(images[i]).save(folder / "images" / name)
        Image.fromarray(masks[i]).save(folder / "masks" / name)
        Image.fromarray(renders[i]).save(folder / "densepose" / name)
        Image.fromarray(labels[i]).save(folder / "densepose_labels" / name)
    return {"images": images, "masks": masks, "densepose": renders, "densepose_labels": labels}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.root``; ``server.plan`` scripts failures per path.

    plan[path] = list of actions consumed one per GET of that path (after which files are served
    normally): ``503`` answers 503, ``"cut"`` sends half the file and drops the connection.
    GETs of paths that do not exist answer 404. Every request is logged in ``server.requests``.
    """

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve()

    def _serve(self, head: bool = False) -> None:
        server = self.server
        path = self.path.split("?")[0]
        server.requests.append((self.command, path, self.headers.get("Range")))
        file = server.root / path.lstrip("/")
        if not file.is_file():
            self.send_response(404)
            self.end_headers()
            return
        actions = server.plan.get(path, [])
        action = actions.pop(0) if actions and not head else None
        if action == 503:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = file.read_bytes()
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", {".mpd": "application/dash+xml", ".m4a": "audio/mp4", ".mkv": "video/x-matroska"}.get(file.suffix, "video/mp4"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        if action == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            import socket

            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@contextmanager
def serve(root: Path):
    """A loopback HTTP server for ``root``; yields it (``.url``, ``.plan``, ``.requests``)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.root = Path(root)
    server.plan = {}
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def save_sideways(path: Path, shown: np.ndarray) -> None:
    """Save the uint8 picture ``shown`` as a phone does: stored a quarter turn counter-clockwise,
    with EXIF orientation 6 ("turn 90° clockwise to display"); PNG keeps the pixels exact."""
    from PIL import Image

    stored = Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1)))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)


def display_p3_profile() -> bytes:
    """A minimal ICC v2 display profile with Display P3's primaries (D50-adapted, as Apple's) and a
    2.2 gamma: a photo's embedded non-sRGB profile, built here as no ICC file ships with the tools."""
    import struct

    def number(value: float) -> bytes:  # s15Fixed16Number
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ " + bytes(4) + number(x) + number(y) + number(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)) + bytes(2)
    name = b"Display P3 (test)"
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(name) + 1) + name + b"\0" + bytes(4 + 4 + 2 + 1 + 67)),
        (b"wtpt", xyz(0.964203, 1.0, 0.824905)),
        (b"rXYZ", xyz(0.515121, 0.241196, -0.001053)),
        (b"gXYZ", xyz(0.291977, 0.692245, 0.041885)),
        (b"bXYZ", xyz(0.157104, 0.066574, 0.784073)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
    ]
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12) + b"acsp"
              + bytes(4 * 4 + 8 + 4) + number(0.9642) + number(1.0) + number(0.8249) + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def assert_keeps_sound(output: Path, source: Path, seconds: float) -> None:
    """``output`` has the sound of ``source`` from its start, copied as it is (the same samples,
    no second encoding), for the ``seconds`` its frames last."""
    from magicanimate_cli import media

    assert media.audio_streams(output) == ["aac"]
    kept, original = read_sound(output, 44100), read_sound(source, 44100)
    assert seconds <= len(kept) / 44100 < seconds + 0.05  # up to the next AAC packet (1024 samples)
    assert np.array_equal(kept[:8192], original[:8192])
