"""A local stand-in for the Hugging Face Hub (and a plain file server) on 127.0.0.1.

``FakeHub`` serves the files of ``<folder>/<org>/<name>/...`` the way the Hub does for what
``huggingface_hub`` calls: ``POST /api/models/<repo>/paths-info/<rev>`` (sizes, git blob ids,
LFS sha256), ``HEAD``/``GET /<repo>/resolve/<rev>/<file>`` (``X-Repo-Commit``, ``X-Linked-Etag``,
``X-Linked-Size``, ranges), and ``GET /files/<name>`` for plain-URL downloads. Files of 1 kB or
more are served as "LFS" files (etag = sha256), smaller ones as plain git blobs (etag = blob id).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

LFS_THRESHOLD = 1024
COMMIT = "c0ffee" * 6 + "c0fe"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_after: dict[str, int] = {}  # file name -> bytes to send before dropping the connection
        self.slow: dict[str, float] = {}  # file name -> seconds each GET of it takes (its body sent in ten parts)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _file(self):
                path = unquote(self.path.split("?")[0])
                if path.startswith("/files/"):
                    return hub.folder / "files" / path[len("/files/") :]
                parts = path.strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, rel = "/".join(parts[:2]), "/".join(parts[4:])
                    return hub.folder / repo / rel
                return None

            def _headers_for(self, file: Path, data: bytes):
                self.send_header("X-Repo-Commit", COMMIT)
                etag = sha256(data) if len(data) >= LFS_THRESHOLD else blob_id(data)
                self.send_header("ETag", f'"{etag}"')
                if len(data) >= LFS_THRESHOLD:
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, None))
                file = self._file()
                if file is None or not file.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self._headers_for(file, data)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def do_GET(self):
                rng = self.headers.get("Range")
                hub.requests.append(("GET", self.path, rng))
                file = self._file()
                if file is None or not file.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[len("bytes=") :].split("-")[0])
                body = data[start:]
                self.send_response(206 if start else 200)
                self._headers_for(file, data)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = hub.cut_after.pop(file.name, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                seconds = hub.slow.get(file.name)
                if seconds:
                    step = -(-len(body) // 10)
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                        time.sleep(seconds / 10)
                    return
                self.wfile.write(body)

            def do_POST(self):
                hub.requests.append(("POST", self.path, None))
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                parts = unquote(self.path).strip("/").split("/")
                # /api/models/<org>/<name>/paths-info/<rev>
                repo = "/".join(parts[2:4])
                out = []
                for rel in form.get("paths", []):
                    file = hub.folder / repo / rel
                    if not file.is_file():
                        continue
                    data = file.read_bytes()
                    entry = {"type": "file", "path": rel, "size": len(data), "oid": blob_id(data)}
                    if len(data) >= LFS_THRESHOLD:
                        entry["lfs"] = {"oid": sha256(data), "size": len(data), "pointerSize": 134}
                    out.append(entry)
                body = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, name: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET" and r[1].endswith(name)]


def make_hub(folder: Path, seed: int = 0) -> tuple[Path, dict]:
    """A tiny hub and the manifest dict describing it.

    Three repos in the official layout's shape (small configs as git blobs, "weights" as LFS
    files), a plain-URL file and a zip with a member, covering the three groups.
    """
    import random
    import zipfile

    rnd = random.Random(seed)

    def blob(n: int) -> bytes:
        return bytes(rnd.getrandbits(8) for _ in range(n))

    files = {
        "org/sd/tokenizer/vocab.json": b'{"a": 1}',
        "org/sd/text_encoder/config.json": b'{"hidden_size": 4}',
        "org/sd/text_encoder/model.safetensors": blob(3000),
        "org/sd/unet/config.json": b'{"sample_size": 8}',
        "org/vae/config.json": b"{}",
        "org/vae/diffusion_pytorch_model.safetensors": blob(2000),
        "org/ma/temporal_attention/temporal_attention.ckpt": blob(5000),
        "files/model_final.pkl": blob(4000),
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    member = blob(1500)
    with zipfile.ZipFile(folder / "files" / "seg.zip", "w") as zf:
        zf.writestr("seg_pretrained/model.pdparams", member)
    manifest = {
        "schema": 1,
        "sources": {
            "sd": {"kind": "hf", "repo": "org/sd", "revision": COMMIT, "folder": "stable-diffusion-v1-5"},
            "vae": {"kind": "hf", "repo": "org/vae", "revision": COMMIT, "folder": "sd-vae-ft-mse"},
            "ma": {"kind": "hf", "repo": "org/ma", "revision": COMMIT, "folder": "MagicAnimate"},
            "dp": {"kind": "url", "folder": "DensePose"},
            "seg": {"kind": "url", "folder": "PaddleSeg"},
        },
        "files": [
            {"path": "stable-diffusion-v1-5/tokenizer/vocab.json", "group": "animate", "source": "sd"},
            {"path": "stable-diffusion-v1-5/text_encoder/config.json", "group": "animate", "source": "sd"},
            {
                "path": "stable-diffusion-v1-5/text_encoder/model.safetensors",
                "group": "animate",
                "source": "sd",
                "sha256": sha256(files["org/sd/text_encoder/model.safetensors"]),
                "alternatives": ["stable-diffusion-v1-5/text_encoder/pytorch_model.bin"],
            },
            {"path": "stable-diffusion-v1-5/unet/config.json", "group": "animate", "source": "sd"},
            {"path": "sd-vae-ft-mse/config.json", "group": "animate", "source": "vae"},
            {"path": "sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "group": "animate", "source": "vae"},
            {
                "path": "MagicAnimate/temporal_attention/temporal_attention.ckpt",
                "group": "animate",
                "source": "ma",
                "replaced_by": "MagicAnimate/temporal_attention/temporal_attention.safetensors",
            },
            {"path": "DensePose/model_final.pkl", "group": "densepose", "source": "dp", "url": None, "size": 4000},
            {"path": "PaddleSeg/seg/model.pdparams", "group": "matting", "source": "seg", "url": None, "archive_member": "model.pdparams", "sha256": sha256(member)},
        ],
    }
    contents = {
        "stable-diffusion-v1-5/tokenizer/vocab.json": files["org/sd/tokenizer/vocab.json"],
        "stable-diffusion-v1-5/text_encoder/config.json": files["org/sd/text_encoder/config.json"],
        "stable-diffusion-v1-5/text_encoder/model.safetensors": files["org/sd/text_encoder/model.safetensors"],
        "stable-diffusion-v1-5/unet/config.json": files["org/sd/unet/config.json"],
        "sd-vae-ft-mse/config.json": files["org/vae/config.json"],
        "sd-vae-ft-mse/diffusion_pytorch_model.safetensors": files["org/vae/diffusion_pytorch_model.safetensors"],
        "MagicAnimate/temporal_attention/temporal_attention.ckpt": files["org/ma/temporal_attention/temporal_attention.ckpt"],
        "DensePose/model_final.pkl": files["files/model_final.pkl"],
        "PaddleSeg/seg/model.pdparams": member,
    }
    return folder, {"manifest": manifest, "contents": contents}


def write_manifest(manifest: dict, base_url: str, path: Path) -> Path:
    """The manifest with the plain URLs pointing at the fake server."""
    manifest = json.loads(json.dumps(manifest))
    for entry in manifest["files"]:
        if "url" in entry:
            entry["url"] = f"{base_url}/files/" + ("seg.zip" if entry.get("archive_member") else "model_final.pkl")
    path.write_text(json.dumps(manifest))
    return path
