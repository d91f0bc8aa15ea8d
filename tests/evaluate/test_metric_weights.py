"""The metric networks' weights (``weights.py``): download once, checksums, refusals."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from magicanimate_cli.errors import NetworkError, UserError
from magicanimate_cli.evaluate import weights as W


class _Server:
    """A loopback HTTP server serving ``files`` (name -> bytes)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        files_ = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = files_.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_verifies_sha256_records_it_and_checks_it_at_load(tmp_path):
    payload = b"weights" * 5000
    digest = hashlib.sha256(payload).hexdigest()
    seen = []
    with _Server({"w.pth": payload}) as server:
        good = W.WeightFile("t", "w.pth", f"{server.url}/w.pth", "test", sha256=digest)
        path = W.ensure(good, tmp_path, progress=lambda stage, done, total: seen.append((stage, done, total)))
        assert path.read_bytes() == payload and path == tmp_path / "metrics" / "w.pth"
        assert (tmp_path / "metrics" / "w.pth.sha256").read_text().split()[0] == digest
        assert seen[-1] == ("download w.pth", len(payload), len(payload))

        wrong = W.WeightFile("t", "x.pth", f"{server.url}/w.pth", "test", sha256_prefix="00000000")
        with pytest.raises(UserError, match="does not start with 00000000"):
            W.ensure(wrong, tmp_path)
        assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["w.pth", "w.pth.sha256"]  # nothing half-written

        with pytest.raises(UserError, match="download failed"):
            W.ensure(W.WeightFile("t", "y.pth", f"{server.url}/missing", "test"), tmp_path)

    path.write_bytes(payload[:-1])  # truncated after download
    with pytest.raises(UserError, match="recorded at download"):
        W.verify(good, tmp_path)
    with pytest.raises(UserError, match="missing; run without --no-download to fetch http://127.0.0.1"):
        W.ensure(good, tmp_path / "elsewhere", download=False)
    manual = W.WeightFile("t", "m.pth", None, "hand-placed")
    with pytest.raises(UserError, match="no public download"):
        W.ensure(manual, tmp_path)


def test_no_answer_is_a_network_error_that_names_where_the_file_goes(tmp_path):
    weight = W.WeightFile("t", "w.pth", "http://127.0.0.1:9/w.pth", "test")  # nothing listens there
    target = tmp_path / "models" / "metrics" / "w.pth"
    with pytest.raises(NetworkError, match=f"no answer from the server.*put the file at {target} yourself"):
        W.ensure(weight, tmp_path / "models")
    assert not (tmp_path / "models").exists()  # no empty folders left behind


def test_every_pinned_weight_has_a_source():
    for weight in W.WEIGHTS.values():
        assert weight.url or "DisCo" in weight.source
        if weight.sha256 and weight.sha256_prefix:
            assert weight.sha256.startswith(weight.sha256_prefix)
        if weight.sha256_prefix:
            assert weight.sha256_prefix in weight.filename




@pytest.mark.parametrize("refusal", ["read-only", "no permission"])
def test_weights_in_a_folder_that_cannot_take_their_record_are_used(tmp_path, monkeypatch, refusal):
    import errno

    from magicanimate_cli import files

    payload = b"weights" * 100
    weight = W.WeightFile("t", "w.pth", None, "hand-placed", sha256=hashlib.sha256(payload).hexdigest())
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "w.pth").write_bytes(payload)

    def refuse(final, text, *, replace):  # a shared models folder mounted read-only, or owned by another user
        if refusal == "read-only":
            with files.writing(final):
                raise OSError(errno.EROFS, "Read-only file system")
        raise PermissionError(errno.EACCES, "Permission denied", str(final))

    monkeypatch.setattr(files, "write_text", refuse)
    assert W.verify(weight, tmp_path) == tmp_path / "metrics" / "w.pth"  # checked against its pin, not remembered
    assert not (tmp_path / "metrics" / "w.pth.sha256").exists()
    weight = W.WeightFile("t", "w.pth", None, "hand-placed", sha256="0" * 64)
    with pytest.raises(UserError, match="is not the published"):  # the pin still holds
        W.verify(weight, tmp_path)
