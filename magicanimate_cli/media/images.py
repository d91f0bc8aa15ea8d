"""Image files (Pillow): read as viewers show them (EXIF turn, ICC profile converted to sRGB, HEIC
through pillow-heif, transparency over white, 16-bit scaled), every unusable file a one-line
``UserError`` (``open_image``); written as an atomic PNG (``write_png``) or saved like their source."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import UserError, first_line, shown
from .paths import permission_denied

HEIF_EXTENSIONS = {".heic", ".heif"}  # iPhone photos: read through pillow-heif's Pillow plugin
MAX_PIXELS = 1 << 28  # 268 MP: a 200 MP phone photo (16320x12240) reads; Pillow alone refuses above 179 MP


def to_rgb(image) -> np.ndarray:
    """Any PIL image (RGBA, LA, P, L, I;16, I, F, CMYK, ...) as uint8 RGB.

    Transparent pixels are composited over white; 16-bit and float images are scaled to 8 bits
    instead of clipped.
    """
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F":
            peak = 1.0 if array.max() <= 1.0 else 255.0
        gray = np.clip(np.floor(array / peak * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def is_16bit_colour(path: Path) -> bool:
    """Whether ``path`` stores 16 bits per colour channel (an RGB or RGBA PNG or TIFF, as OpenCV's
    ``imwrite`` saves a ``uint16`` array), which Pillow reads as 8-bit RGB(A) by keeping each
    value's high byte (its raw mode ``RGB;16B``): ``read_image`` shows such a photo right, but
    values 0..255 read as 0. From the header only; False for a file Pillow cannot open."""
    from PIL import Image

    try:
        with _quiet_exif(), _pixel_limit(), Image.open(path) as image:
            return image.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in image.tile)
    except Exception:  # noqa: BLE001 - said where the image is read
        return False


def has_transparency(image) -> bool:
    """An alpha channel, or a colour key (a PNG's tRNS chunk: palette, RGB or grey pixels of one
    value are transparent, as PNG optimisers write a mask with only 0 and 255)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode in ("P", "RGB", "L") and "transparency" in image.info)


@contextmanager
def open_image(path: Path):
    """A loaded PIL image of ``path`` (any format Pillow reads), closed after the block.

    Every way an image file can be unusable — missing, not an image, truncated, a decompression
    bomb (more than ``MAX_PIXELS`` pixels, or than Pillow's own guard if that is set higher) — is a
    one-line ``UserError``.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{shown(path)}: is a folder; pass an image file (PNG or JPEG)")
    if not path.is_file():
        raise UserError(f"{shown(path)}: no such image file")
    if not _heif_plugin() and path.suffix.lower() in HEIF_EXTENSIONS:  # registered for every file: a HEIC may be named .jpg
        raise UserError(f"{shown(path)}: a HEIC/HEIF photo needs pillow-heif; pip install pillow-heif (or export the photo as JPEG)")
    if path.stat().st_size == 0:
        raise UserError(f"{shown(path)}: empty file (0 bytes); write the image again or remove it")
    try:
        with _quiet_exif(), _pixel_limit() as limit:
            image = Image.open(path)
            image.load()
    except Image.DecompressionBombError as exc:
        raise UserError(f"{shown(path)}: image too large to decode safely ({first_line(exc)}); resize it below {limit} pixels") from None
    except PermissionError as exc:
        raise UserError(f"{shown(path)}: {permission_denied()}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{shown(path)}: not a readable image ({exc.__class__.__name__}); pass a PNG or JPEG") from exc
    with image:
        yield image


@contextmanager
def _quiet_exif():
    """Pillow warns "Corrupt EXIF data" on stderr for a photo whose metadata is damaged but whose
    pixels are fine (the damaged EXIF then reads as none), and ``DecompressionBombWarning`` for an
    image of 89 to 179 megapixels (a 100 MP phone photo), which is read; only those warnings are
    silenced (above that, ``DecompressionBombError`` is said in one line)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


@contextmanager
def _pixel_limit():
    """Pillow's decompression-bomb guard raised to ``MAX_PIXELS`` for the block (restored after it;
    a caller's higher limit, or none, is kept); yields the number of pixels above which an image is
    refused. Pillow refuses above twice ``Image.MAX_IMAGE_PIXELS`` (179 MP by default), which a
    200 MP phone's photos exceed."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    if before is not None and 2 * before < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
    try:
        yield None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS
    finally:
        Image.MAX_IMAGE_PIXELS = before


@lru_cache(maxsize=1)
def _heif_plugin() -> bool:
    """Register pillow-heif's HEIC/HEIF opener with Pillow once; False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def upright(image):
    """A PIL ``image`` turned the way viewers show it (its EXIF orientation, as phones store photos
    sideways and tag them); ``image`` itself when it carries no turn. A corrupt EXIF block reads as
    no turn, without Pillow's warning."""
    from PIL import ExifTags, ImageOps

    with _quiet_exif():
        if image.getexif().get(ExifTags.Base.Orientation, 1) not in range(2, 9):
            return image
        return ImageOps.exif_transpose(image)


def as_shown(image):
    """A photo as viewers show it: turned by its EXIF orientation (``upright``) and with its colours
    in sRGB (``in_srgb``)."""
    return in_srgb(upright(image))


def in_srgb(image):
    """A PIL ``image`` with its colours converted to sRGB from the ICC profile it embeds (an
    iPhone's Display P3, a camera's Adobe RGB, a print CMYK profile), as colour-managed viewers
    show it; read as sRGB, such a photo's colours come out washed out (P3, Adobe RGB) or wrong
    (CMYK). ``image`` itself, byte for byte, when it embeds no profile, an sRGB one (by its
    description: a camera's "sRGB IEC61966-2.1"), a damaged one, or is not RGB(A)/CMYK. Relative
    colorimetric with black-point compensation, as photo editors convert by default; the profile
    is not kept (the pixels are sRGB now)."""
    import io

    from PIL import ImageCms

    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return image
        converted = ImageCms.profileToProfile(
            image, profile, ImageCms.createProfile("sRGB"), renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGBA" if image.mode == "RGBA" else "RGB", flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
        )  # fmt: skip
    except (ImageCms.PyCMSError, OSError, ValueError):  # a damaged or unusable profile reads as none
        return image
    converted.info = {key: value for key, value in image.info.items() if key != "icc_profile"}
    return converted


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB ``H×W×3`` as viewers show it: upright, colours in sRGB (``as_shown``)."""
    with open_image(path) as image:
        return to_rgb(as_shown(image))


def read_still(path: Path) -> np.ndarray:
    """``read_image`` of a file that must be one picture (a reference photo): an animation (a GIF,
    WebP or APNG of more than one frame, which Pillow opens at its first) is refused in one line,
    as a video is. A camera's multi-picture JPEG (MPO: the photo and a preview) is one picture."""
    with open_image(path) as image:
        frames = getattr(image, "n_frames", 1)
        if image.format in ("GIF", "WEBP", "PNG") and frames > 1:
            hint = f" (`magicanimate frames {shown(path)} -o FOLDER` gives its frames)" if image.format != "PNG" else ""
            raise UserError(f"{shown(path)}: an animation of {frames} frames, not one picture; pass one image of the person{hint}")
        return to_rgb(as_shown(image))


def read_alpha(path: Path) -> np.ndarray | None:
    """The alpha channel of an image file as uint8 ``H×W`` (oriented like ``read_image``), or None."""
    with open_image(path) as image:
        image = upright(image)
        if not has_transparency(image):
            return None
        return np.asarray(image.convert("RGBA"))[..., 3].copy()


def read_map(path: Path) -> np.ndarray:
    """A single-channel image (mask, label map) as stored, ``H×W``."""
    with open_image(path) as image:
        return np.asarray(image)


def write_png(path: Path, array: np.ndarray, *, replace: bool) -> None:
    """Write one PNG atomically (temporary name in the same folder, then rename). Without
    ``replace`` a file that appeared under ``path`` meanwhile is kept (``UserError``)."""
    from PIL import Image

    path = Path(path)
    from .. import files

    with files.temporary(path, replace=replace) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def save_image_like(image, path: Path, source) -> None:
    """Save a PIL ``image`` the way ``source`` was saved: same format and colour profile (a Display
    P3 photo stays one); a JPEG keeps its quantisation tables and subsampling. Not atomic by itself
    (callers write into a temporary folder)."""
    fmt = source.format or "PNG"
    profile = {"icc_profile": source.info["icc_profile"]} if source.info.get("icc_profile") else {}
    if fmt == "JPEG":
        from PIL import JpegImagePlugin

        image.save(path, format="JPEG", qtables=source.quantization, subsampling=JpegImagePlugin.get_sampling(source), **profile)
    else:
        image.save(path, format=fmt, **profile)


def save_png(image, path: Path, compress_level: int = 6) -> None:
    """Save a PIL image or a uint8 array as PNG (zlib ``compress_level``); not atomic by itself."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, format="PNG", compress_level=compress_level)
