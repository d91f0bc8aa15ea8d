"""Writing frames: ``FrameWriter`` streams them to a video (H.264 through ffmpeg, with the sound it
is to keep) or to a folder of PNGs, atomically; ``committed_together`` commits several writers'
outputs all or none; ``write_frames`` writes a whole clip; ``FrameStore`` keeps frames in a file,
not in memory."""

from __future__ import annotations

import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputWarning, UserError, shown
from ..files import discard, temp_beside
from ..frames import DEFAULT_FPS
from .ffmpeg import _ffmpeg_path, _run_ffmpeg, ffmpeg_binary
from .frame_folders import frame_name
from .paths import check_output, is_video
from .sound import audio_streams, picture_start, sound_end, sound_options, warn_without_sound


class FrameStore:
    """Square uint8 RGB frames (``size``²) in a file, so memory does not grow with the clip: ``append``
    them, then ``frames()`` maps them (``T×size×size×3``, read-only). ``animate`` and ``align`` keep the
    fitted motion in one.

    The file is a locked temporary beside the output (``files.temp_beside``): a run killed with
    ``kill -9`` leaves it, and the next run writing the same output removes it.
    """

    def __init__(self, path: Path, size: int) -> None:
        from ..files import output_of

        self.path = Path(path)
        self.output = output_of(self.path)  # what a full disk names: the output, not this temporary
        self.size = size
        self.count = 0
        self._file = open(self.path, "wb")

    def append(self, frame) -> None:
        from ..files import writing

        with writing(self.output):
            self._file.write(frame.tobytes())
        self.count += 1

    def frames(self):
        self._file.close()
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, self.size, self.size, 3))


class FrameWriter:
    """Stream frames to an mp4 (any video extension) or to a folder of PNGs, atomically.

    Use as a context manager; frames become visible under ``path`` only when the block ends
    without an exception. H.264 in yuv420p (what players take) has even sides: odd frames are
    padded by one edge pixel in a video, with a warning (``InputWarning``; ``written_size`` is the
    size written, width × height); a folder keeps them exact. Folder
    frames are named ``00000.png``, ... unless ``names`` (or ``write(..., name=)``) gives names,
    e.g. to keep the file names of the input frames. A video gets the first sound stream of
    ``audio`` (a video or sound file; ``check_audio_source``) from its first picture
    (``picture_start``), or ``audio_start`` seconds after it, as long as the frames written last
    (copied when the container holds its codec, else AAC: ``sound_options``). The sound is muxed
    in after the picture is encoded, by a second ffmpeg pass that copies the picture, so the
    frames are encoded as without it. If that pass fails or yields no sound (no packet:
    ``sound_end``), the video is written without it: with a ``warning:`` line
    (``InputWarning``) when the sound was only kept along (``sound_kept``, as ``kept_sound`` gives
    it), as an error naming ``audio`` when it was asked for; a full disk is an error either way.
    """

    def __init__(
        self,
        path: Path,
        fps: float = DEFAULT_FPS,
        overwrite: bool = False,
        crf: int = 18,
        names: list[str] | None = None,
        commit: bool = True,
        audio: Path | None = None,
        sound_kept: bool = False,
        audio_start: float = 0.0,
    ):
        self.path = check_output(Path(path), overwrite)
        self.overwrite = overwrite
        self.commit = commit
        self.pending: Path | None = None  # with commit=False: the finished temporary, for committed_together
        self.names = names
        self.fps = float(fps)
        self.crf = crf
        self.audio, self.sound_kept, self.audio_start = audio, sound_kept, float(audio_start)
        self.count = 0
        self._process = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> FrameWriter:
        return self  # the temporary file appears with the first frame, not before a long computation

    def write(self, frame: np.ndarray, name: str | None = None) -> None:
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError("frames must be uint8 H×W or H×W×3")
        if self._size is None:
            self._size = frame.shape[:2]
            self._tmp = temp_beside(self.path, directory=not is_video(self.path))
        elif frame.shape[:2] != self._size:
            raise ValueError("all frames must have the same size")
        from ..files import writing

        with writing(self.path):  # a full disk names the output, not the temporary
            if is_video(self.path):
                self._write_video_frame(frame)
            else:
                from PIL import Image

                name = name or (self.names[self.count] if self.names else frame_name(self.count))
                Image.fromarray(frame).save(self._tmp / name, format="PNG")
        self.count += 1

    @property
    def written_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames as written (a video's padded to even sides); None before any."""
        if self._size is None:
            return None
        height, width = self._size
        return (width + width % 2, height + height % 2) if is_video(self.path) else (width, height)

    def _write_video_frame(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        height, width = frame.shape[:2]
        pad_h, pad_w = height % 2, width % 2
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self._process is None:
            import ffmpeg

            if pad_h or pad_w:
                warnings.warn(
                    InputWarning(f"{shown(self.path)}: H.264 video needs even sides: the {width}x{height} frames are written as "
                                 f"{width + pad_w}x{height + pad_h}, the last column or row repeated; write a folder of frames to keep the size"),
                    stacklevel=3,
                )

            stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width + pad_w}x{height + pad_h}", framerate=self.fps)
            stream = ffmpeg.output(
                stream, _ffmpeg_path(self._tmp), vcodec="libx264", pix_fmt="yuv420p", crf=self.crf, movflags="+faststart", r=self.fps,
            ).global_args("-hide_banner", "-loglevel", "error")
            self._process = ffmpeg.run_async(
                stream, cmd=ffmpeg_binary(), pipe_stdin=True, pipe_stderr=True, overwrite_output=True, quiet=False
            )
        try:
            self._process.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            from ..files import ffmpeg_write_error

            code = self._process.wait()
            stderr = self._process.stderr.read().decode(errors="replace")
            lines = stderr.strip().splitlines()
            raise ffmpeg_write_error(stderr, self.path, code) or UserError(
                f"{self.path}: ffmpeg stopped encoding ({lines[-1] if lines else 'no message'})"
            ) from None

    def __exit__(self, exc_type, exc, tb) -> None:
        from .. import files

        ok = exc_type is None and self.count > 0
        try:
            if self._process is not None:
                self._process.stdin.close()
                err = self._process.stderr.read().decode(errors="replace")
                self._process.stderr.close()
                code = self._process.wait()
                if code != 0 and ok:
                    lines = err.strip().splitlines()
                    raise files.ffmpeg_write_error(err, self.path, code) or UserError(
                        f"{self.path}: ffmpeg failed to encode ({lines[-1] if lines else 'no message'})"
                    )
                if ok and self.audio is not None:
                    self._add_sound()
            if ok and self.commit:
                files.commit(self._tmp, self.path, replace=self.overwrite)
                self._tmp = None
            elif ok:
                self.pending, self._tmp = self._tmp, None
        finally:
            discard(self._tmp)

    def _add_sound(self) -> None:
        """Mux the sound of ``audio`` into the encoded picture (copied): cut by the sound input's
        length (the frames written), not by ``-shortest``, which may cut the last frames."""
        import ffmpeg

        from ..files import ffmpeg_write_error

        muxed = temp_beside(self.path, directory=False)  # a full disk names the output
        try:
            codecs = audio_streams(self.audio)
            begin = picture_start(self.audio) + self.audio_start
            window = ({"ss": f"{begin:.6f}"} if begin > 0 else {}) | {"t": f"{self.count / self.fps:.6f}"}
            error = "no sound stream" if not codecs else _run_ffmpeg(ffmpeg.output(
                ffmpeg.input(_ffmpeg_path(self._tmp))["v:0"], ffmpeg.input(_ffmpeg_path(self.audio), **window)["a:0"], _ffmpeg_path(muxed),
                vcodec="copy", movflags="+faststart", **sound_options(codecs[0], self.path)))  # fmt: skip
            if error is None and sound_end(muxed) <= 0:  # the header may list a stream that no packet fills
                error = "no sound came out (an empty sound stream, or none from that time on?)"
        except BaseException:  # Ctrl-C during the second pass: no temporary left behind
            discard(muxed)
            raise
        if error is None:
            discard(self._tmp)
            self._tmp = muxed
            return
        discard(muxed)
        full = ffmpeg_write_error(error, self.path, 1)
        if full is not None:
            raise full
        if not self.sound_kept:
            raise UserError(f"{shown(self.audio)}: its sound could not be added to {shown(self.path)} (ffmpeg: {error}); "
                            "give --audio another file")
        warn_without_sound(self.path, self.audio, f"ffmpeg: {error}", stacklevel=4)


@contextmanager
def committed_together(writers: list[FrameWriter], replace: bool):
    """Enter every ``FrameWriter(..., commit=False)``; when the block succeeds, commit all their
    outputs together (``files.commit_together``) or, if one cannot be, none of them."""
    from .. import files

    try:
        with ExitStack() as stack:
            for writer in writers:
                stack.enter_context(writer)
            yield writers
        pending = [(w.pending, w.path) for w in writers if w.pending is not None]
        if pending and len(pending) == len(writers):
            files.commit_together(pending, replace=replace)
    finally:
        for writer in writers:
            files.discard(writer.pending)
            writer.pending = None


def write_frames(path: Path, frames: np.ndarray, fps: float = DEFAULT_FPS, overwrite: bool = False) -> Path:
    """Write a whole clip (see ``FrameWriter`` for streaming)."""
    with FrameWriter(path, fps, overwrite) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
