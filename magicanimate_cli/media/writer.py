"""Writing frames: ``FrameWriter`` streams them to a video (H.264 through ffmpeg, with the sound it
is to keep; or a GIF, WebM or animated WebP to share) or to a folder of PNGs, atomically; ``committed_together`` commits several writers'
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
from .paths import H264_EXTENSIONS, SOUNDLESS_EXTENSIONS, check_output, is_video_output, needs_even_sides
from .sound import (
    EDIT_LISTS,
    audio_streams,
    check_holds_sound,
    encoded_sound,
    sound_end,
    sound_options,
    warn_without_sound,
)

VP9 = {"vcodec": "libvpx-vp9", "pix_fmt": "yuv420p", "crf": 24, "b:v": 0, "row-mt": 1, "deadline": "good", "cpu-used": 4}
"""A WebM's picture: VP9 in constant quality, CRF 24 being about the PSNR of H.264 at CRF 18 (at a
half to two thirds of its size)."""
WEBP_LOSSY_QUALITY = 85  # libwebp's 0-100: about the PSNR of H.264 at CRF 18
STORED = {".gif", ".webp"}  # encoded from the whole clip, kept in a file meanwhile: a GIF's palette, a WebP's lossless or not
EXACT_COLOURS = 256  # a clip with no more colours (a DensePose render, masks) is written with exactly them
GIF_MAX_FPS = 50.0
"""The fastest a GIF plays: its delays are in 1/100 s, and browsers show a frame of 0 or 1/100 s
for 1/10 s (a 60 fps GIF stuttered, a 120 fps one played 10× slower)."""
MAX_SIDES = {".webp": 16383, ".gif": 65535}
"""The longest side each format takes: libwebp's ``WEBP_MAX_DIMENSION`` (its encoder fails "Picture
size is too large. Max is 16383x16383"), a GIF's 16-bit screen size (ffmpeg's encoder: "GIF does
not support resolutions above 65535x65535"). ffmpeg says so only when it encodes, after every
frame was computed and stored: ``check_clip_fits`` says it first."""


def check_clip_fits(path: Path, width: int, height: int, frames: int | None = None, kept: int = 0) -> None:
    """Refuse, before any frame is computed, a clip of ``frames`` frames of ``width``×``height``
    that ``FrameWriter`` cannot write to ``path``: a side longer than its format takes
    (``MAX_SIDES``), or a GIF's or WebP's frames (``STORED``: kept uncompressed until they are
    encoded, ``width·height·3`` bytes each) more than the free space of the disk it goes on
    (``files.free_bytes``), with ``kept`` bytes that other outputs of the same run keep on that
    disk meanwhile (``animate``'s GIF beside its GIF grid); ``frames`` None (not known yet) checks
    the sides only. One line naming the output and the fix."""
    from ..files import free_bytes
    from ..weights_manifest import human_size

    path = Path(path)
    suffix, stem = path.suffix.lower(), path.stem
    longest = MAX_SIDES.get(suffix)
    if longest is not None and max(width, height) > longest:
        kind, other = ("a WebP", f"{stem}.webm or a folder of frames ({stem}/)") if suffix == ".webp" else ("a GIF", f"a folder of frames ({stem}/)")
        raise UserError(f"{shown(path)}: its frames are {width}x{height}, but {kind}'s sides are at most {longest} pixels; "
                        f"make the frames smaller (a smaller --size) or write {other} instead")
    if frames and suffix in STORED:
        need, free = width * height * 3 * frames, free_bytes(path.parent)
        if need + kept > free:
            kind = "GIF" if suffix == ".gif" else "WebP"
            besides = f" besides the {human_size(kept)} the run's other output keeps there" if kept else ""
            raise UserError(f"{shown(path)}: its {frames} frames of {width}x{height} are kept uncompressed until the {kind} is encoded, "
                            f"{human_size(need)}{besides}, but only {human_size(free)} is free on that disk; free space, write it on another "
                            f"disk, or write {stem}.mp4 or {stem}.webm (encoded as they come)")


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
    size written, width × height); a folder keeps them exact, as do the formats to share a clip as
    it is: a ``.webm`` (VP9, ``VP9``), a ``.gif`` and a ``.webp`` (animated, looping forever). The
    frames of those two are kept in a temporary file beside the output (not in memory) and encoded
    at the end: a clip of at most 256 colours (a DensePose render, masks) with exactly its colours,
    so it reads back byte for byte (a GIF with them as its palette, a lossless WebP); any other clip
    as a GIF with one palette for the whole clip (ffmpeg's ``palettegen``), ordered dithering (no
    noise crawling over still parts from frame to frame), or as a lossy WebP. A WebP keeps every frame, a held one
    too (``_stored_frames``), so it reads back frame for frame at its rate. A GIF faster than
    ``GIF_MAX_FPS`` is written at that rate, every frame kept, with a warning (``InputWarning``). Folder
    frames are named ``00000.png``, ... unless ``names`` (or ``write(..., name=)``) gives names,
    e.g. to keep the file names of the input frames. A video gets the first sound stream of
    ``audio`` (a video or sound file; ``check_audio_source``) from the file's start, where every
    reader's first frame is (a picture that starts after its sound is read with its first frame
    repeated until it begins), or ``audio_start`` seconds after it, as long as the frames written last
    (copied when the container holds its codec, else AAC: ``sound_options``; encoded too when it is
    cut at a time for a WebM or an MKV, where a copy would delay the picture: ``EDIT_LISTS``). The sound is muxed
    in after the picture is encoded, by a second ffmpeg pass that copies the picture, so the
    frames are encoded as without it. If that pass fails or yields no sound (no packet:
    ``sound_end``), the video is written without it: with a ``warning:`` line
    (``InputWarning``) when the sound was only kept along (``sound_kept``, as ``kept_sound`` gives
    it), as an error naming ``audio`` when it was asked for; a full disk is an error either way.
    A GIF or a WebP holds no sound: ``audio`` asked for is refused at once (``check_holds_sound``),
    a sound only kept along is dropped, as a folder drops it (``kept_sound`` gives none for them).
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
        if audio is not None and self.path.suffix.lower() in SOUNDLESS_EXTENSIONS:
            if not sound_kept:
                check_holds_sound(self.path)
            audio = None
        self.overwrite = overwrite
        self.commit = commit
        self.pending: Path | None = None  # with commit=False: the finished temporary, for committed_together
        self.names = names
        self.fps = float(fps)
        self.crf = crf
        self.audio, self.sound_kept, self.audio_start = audio, sound_kept, float(audio_start)
        if self.path.suffix.lower() == ".gif" and self.fps > GIF_MAX_FPS:
            warnings.warn(InputWarning(
                f"{shown(self.path)}: a GIF plays at most {GIF_MAX_FPS:g} fps (browsers show shorter frames for 1/10 s), so its "
                f"{self.fps:g} fps frames are written at {GIF_MAX_FPS:g} fps, every one, playing {self.fps / GIF_MAX_FPS:.3g}× slower; "
                f"write {self.path.stem}.webp or {self.path.stem}.webm to keep the rate"), stacklevel=2)  # fmt: skip
        self.count = 0
        self._process = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._store = None  # a GIF's or WebP's frames (STORED): the file, and its name
        self._stored: Path | None = None
        self._colours: np.ndarray | None = np.zeros(0, np.uint32)  # the clip's colours while there are few (EXACT_COLOURS)

    def __enter__(self) -> FrameWriter:
        return self  # the temporary file appears with the first frame, not before a long computation

    def write(self, frame: np.ndarray, name: str | None = None) -> None:
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
            raise ValueError("frames must be uint8 H×W or H×W×3")
        if self._size is None:
            check_clip_fits(self.path, frame.shape[1], frame.shape[0])  # before any temporary
            self._size = frame.shape[:2]
            self._tmp = temp_beside(self.path, directory=not is_video_output(self.path))
            if self.path.suffix.lower() in STORED:
                self._stored = temp_beside(self.path, directory=False, suffix=".rgb")
                self._store = open(self._stored, "wb")
        elif frame.shape[:2] != self._size:
            raise ValueError("all frames must have the same size")
        from ..files import writing

        with writing(self.path):  # a full disk names the output, not the temporary
            if self._store is not None:
                self._store_frame(frame)
            elif is_video_output(self.path):
                self._write_video_frame(frame)
            else:
                from PIL import Image

                name = name or (self.names[self.count] if self.names else frame_name(self.count))
                Image.fromarray(frame).save(self._tmp / name, format="PNG")
        self.count += 1

    @property
    def written_size(self) -> tuple[int, int] | None:
        """(width, height) of the frames as written (an H.264 video's padded to even sides); None before any."""
        if self._size is None:
            return None
        height, width = self._size
        return (width + width % 2, height + height % 2) if needs_even_sides(self.path) else (width, height)

    def _store_frame(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        frame = np.ascontiguousarray(frame)
        self._store.write(frame.tobytes())
        if self._colours is not None:
            packed = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8) | frame[..., 2]
            colours = np.union1d(self._colours, np.unique(packed))
            self._colours = colours if len(colours) <= EXACT_COLOURS else None

    def _encode_stored(self) -> None:
        """Encode the stored frames into the temporary output (``STORED``)."""
        import ffmpeg

        height, width = self._size
        rate = min(self.fps, GIF_MAX_FPS) if self.path.suffix.lower() == ".gif" else self.fps

        def frames():
            return ffmpeg.input(_ffmpeg_path(self._stored), format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=rate)

        exact = self._colours is not None
        if self.path.suffix.lower() == ".webp":
            quality = {"lossless": 1, "pix_fmt": "bgra"} if exact else {"lossless": 0, "quality": WEBP_LOSSY_QUALITY}
            error = _run_ffmpeg(frames().output(_ffmpeg_path(self._tmp), vcodec="libwebp_anim", loop=0, **quality))
            if error is None and self.count > 1 and _stored_frames(self._tmp) != self.count:
                error = _run_ffmpeg(frames().filter("settb", "1/1000").filter("setpts", "floor(N*1000/FRAME_RATE)").output(
                    _ffmpeg_path(self._tmp), vcodec="libwebp", format="webp", enc_time_base="1/1000", loop=0, **quality))  # fmt: skip
        else:
            palette = temp_beside(self.path, directory=False, suffix=".png")
            try:
                if exact:  # its own colours as the palette (palettegen's, averaged in OkLab, may be 1 off), no dithering
                    from PIL import Image

                    colours = np.resize(self._colours, 256)  # 16×16 entries, as paletteuse takes them (repeats fill the rest)
                    rgb = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.uint8)
                    Image.fromarray(rgb.reshape(16, 16, 3)).save(palette, format="PNG")
                    error = None
                else:
                    error = _run_ffmpeg(frames().filter("palettegen", stats_mode="full").output(_ffmpeg_path(palette), vframes=1))
                if error is None:
                    dither = {"dither": "none"} if exact else {"dither": "bayer", "bayer_scale": 5}
                    used = ffmpeg.filter([frames(), ffmpeg.input(_ffmpeg_path(palette))], "paletteuse", **dither)
                    error = _run_ffmpeg(used.output(_ffmpeg_path(self._tmp), loop=0))
            finally:
                discard(palette)
        if error is not None:
            from ..files import ffmpeg_write_error

            raise ffmpeg_write_error(error, self.path, 1) or UserError(f"{self.path}: ffmpeg failed to encode ({error})")

    def _write_video_frame(self, frame: np.ndarray) -> None:
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        height, width = frame.shape[:2]
        even = needs_even_sides(self.path)
        pad_h, pad_w = (height % 2, width % 2) if even else (0, 0)
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
            codec = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": self.crf, "movflags": "+faststart"} if even else VP9
            stream = ffmpeg.output(stream, _ffmpeg_path(self._tmp), r=self.fps, **codec).global_args("-hide_banner", "-loglevel", "error")
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
            if self._store is not None:
                self._store.close()
                if ok:
                    with files.writing(self.path):  # a full disk names the output
                        self._encode_stored()
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
            discard(self._stored)

    def _add_sound(self) -> None:
        """Mux the sound of ``audio`` into the encoded picture (copied): cut by the sound input's
        length (the frames written), not by ``-shortest``, which may cut the last frames."""
        import ffmpeg

        from ..files import ffmpeg_write_error

        muxed = temp_beside(self.path, directory=False)  # a full disk names the output
        try:
            codecs = audio_streams(self.audio)
            begin = self.audio_start  # from the file's start, as the frames are read (``iter_frames``)
            window = ({"ss": f"{begin:.6f}"} if begin > 0 else {}) | {"t": f"{self.count / self.fps:.6f}"}
            sound = sound_options(codecs[0], self.path) if codecs else {}
            if begin > 0 and sound.get("acodec") == "copy" and self.path.suffix.lower() not in EDIT_LISTS:
                sound = encoded_sound(self.path)  # a copy would start before ``begin`` and delay the picture (``EDIT_LISTS``)
            error = "no sound stream" if not codecs else _run_ffmpeg(ffmpeg.output(
                ffmpeg.input(_ffmpeg_path(self._tmp))["v:0"], ffmpeg.input(_ffmpeg_path(self.audio), **window)["a:0"], _ffmpeg_path(muxed),
                vcodec="copy", **_mp4_flags(self.path), **sound))  # fmt: skip
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


def _stored_frames(path: Path) -> int:
    """How many frames the WebP ``path`` stores: libwebp's animation encoder merges a frame identical
    to the one before (in a lossy WebP, one within a few levels of it) into that one, made longer,
    and no option turns that off (not even every frame a key frame, ``kmax`` 1). A clip of
    identical frames (a pose held, the masks of an empty scene) then becomes one still image, read
    back as one frame; one of two or three runs of frames lists too few to give its rate; one
    whose frames come in pairs (25 fps made from 12.5) reads back at 12.5 fps, half its frames.
    ``FrameWriter`` then encodes each frame on its own (ffmpeg's ``libwebp`` encoder, whose frames
    ffmpeg's WebP muxer stores one by one, at libwebp's timestamps: milliseconds rounded down),
    so it reads back frame for frame at its rate; larger (each frame whole), so only then."""
    from .paths import is_animated_webp
    from .video import _frame_times

    if not is_animated_webp(path):
        return 1
    times = _frame_times(path)
    return len(times[0]) - 1 if times is not None else 0


def _mp4_flags(path: Path) -> dict:
    """The moov atom first (played while it downloads), where the container is an mp4's (not a WebM)."""
    return {"movflags": "+faststart"} if Path(path).suffix.lower() in H264_EXTENSIONS else {}


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
