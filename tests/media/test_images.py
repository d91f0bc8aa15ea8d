"""media.images: image files read as viewers show them (EXIF, ICC profiles, HEIC, transparency) and written."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magicanimate_cli import media
from magicanimate_cli.errors import UserError


def test_sixteen_bit_images_are_scaled_not_clipped():
    image = Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16))
    assert image.mode == "I;16" and media.to_rgb(image)[0, 0, 0] == 100


def test_a_16bit_colour_png_is_read_from_its_high_bytes_and_told_apart(tmp_path):
    # how a 16-bit RGB PNG (OpenCV's imwrite of uint16) reads: scaled values right, values 0..255 as black
    cv2 = pytest.importorskip("cv2")
    values = np.array([[[0, 24, 200]]], np.uint16).repeat(2, axis=0)
    for name, scale, shown in [("small.png", 1, [0, 0, 0]), ("scaled.png", 257, [200, 24, 0])]:
        assert cv2.imwrite(str(tmp_path / name), values * scale)  # (BGR: read as RGB, reversed)
        assert media.read_image(tmp_path / name)[0, 0].tolist() == shown and media.is_16bit_colour(tmp_path / name)
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "eight.png")
    Image.fromarray(values[..., 0]).save(tmp_path / "grey16.png")  # I;16: grey, scaled by to_rgb
    assert not media.is_16bit_colour(tmp_path / "eight.png") and not media.is_16bit_colour(tmp_path / "grey16.png")
    assert not media.is_16bit_colour(tmp_path / "missing.png")


def test_transparent_pixels_become_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert (media.to_rgb(Image.fromarray(rgba, "RGBA")) == 255).all()


def test_png_writes_are_atomic_and_lossless(tmp_path, clip):
    media.write_png(tmp_path / "x.png", clip[0], replace=False)
    assert np.array_equal(media.read_image(tmp_path / "x.png"), clip[0])
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert media.read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


def test_damaged_exif_and_empty_images(tmp_path):
    image = Image.fromarray(np.full((8, 12, 3), 90, np.uint8))
    exif = image.getexif()
    exif[0x010F] = "a camera maker long enough to be stored away from its entry"
    image.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    data = bytearray((tmp_path / "photo.jpg").read_bytes())
    ifd = data.index(b"Exif\x00\x00") + 6 + 8
    data[ifd : ifd + 2] = b"\x7f\x00" if data[ifd - 8] == ord("I") else b"\x00\x7f"  # 127 entries: the block runs out
    (tmp_path / "photo.jpg").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Corrupt EXIF data" would be printed on stderr
        assert media.read_image(tmp_path / "photo.jpg").shape == (8, 12, 3)
    (tmp_path / "blank.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"blank.png: empty file \(0 bytes\)"):
        media.read_image(tmp_path / "blank.png")


def test_an_iphone_heic_photo_reads_as_rgb(tmp_path, monkeypatch):
    # HEIC is an iPhone camera's default format; Pillow reads it through pillow-heif's plugin
    pillow_heif = pytest.importorskip("pillow_heif")
    photo = np.zeros((48, 64, 3), np.uint8)
    photo[:, :32] = (200, 40, 40)  # a red left half: orientation and colour survive the lossy codec
    pillow_heif.from_pillow(Image.fromarray(photo)).save(str(tmp_path / "IMG_0001.HEIC"), quality=95)  # Pillow's own opener untouched
    read = media.read_image(tmp_path / "IMG_0001.HEIC")
    assert read.shape == (48, 64, 3) and media.is_image(tmp_path / "IMG_0001.HEIC")
    assert np.abs(read.astype(int) - photo).mean() < 4 and read[:, :24, 0].min() > 150 and read[:, 40:, 0].max() < 40
    assert media.read_alpha(tmp_path / "IMG_0001.HEIC") is None
    monkeypatch.setattr(media.images, "_heif_plugin", lambda: False)  # installed without pillow-heif
    with pytest.raises(UserError, match=r"IMG_0001.HEIC: a HEIC/HEIF photo needs pillow-heif; pip install pillow-heif"):
        media.read_image(tmp_path / "IMG_0001.HEIC")


def test_a_colour_key_is_transparency(tmp_path):
    # PNG optimisers store an RGBA image whose alpha is only 0 and 255 as RGB (or grey) with a tRNS
    # colour key: its transparent pixels are composited on white and make its alpha, as RGBA's do
    rgb = np.full((8, 6, 3), 200, np.uint8)
    rgb[:4] = 0
    Image.fromarray(rgb).save(tmp_path / "rgb.png", transparency=(0, 0, 0))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png", transparency=0)
    for name in ("rgb.png", "grey.png"):
        image = media.read_image(tmp_path / name)
        assert (image[:4] == 255).all() and (image[4:] == 200).all(), name
        assert media.read_alpha(tmp_path / name)[:, 0].tolist() == [0] * 4 + [255] * 4, name
    Image.fromarray(rgb).save(tmp_path / "opaque.png")
    assert media.read_alpha(tmp_path / "opaque.png") is None


def test_a_heic_photo_under_a_jpeg_name_reads(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.fromarray(np.full((16, 24, 3), 90, np.uint8))).save(str(tmp_path / "photo.jpg"))
    assert media.read_image(tmp_path / "photo.jpg").shape == (16, 24, 3)


def _tagged(path: Path, pixels: np.ndarray, icc: bytes | None, fmt: str = "PNG") -> Path:
    Image.fromarray(pixels).save(path, format=fmt, **({"icc_profile": icc} if icc is not None else {}))
    return path


def test_a_photo_with_a_display_p3_profile_reads_in_srgb(tmp_path):
    from PIL import ImageCms

    from preprocess_helpers import display_p3_profile

    pixels = np.array([[[200, 60, 60], [128, 128, 128], [60, 160, 60]], [[255, 255, 255], [0, 0, 0], [40, 80, 200]]], np.uint8)
    shown = media.read_image(_tagged(tmp_path / "p3.png", pixels, display_p3_profile())).astype(int)
    assert shown[0, 0, 0] >= 210 and shown[0, 0, 1] <= 50  # P3's red is redder than sRGB's: more saturated in sRGB
    assert shown[0, 2, 1] > 160 and shown[0, 2, 0] < 30
    assert np.abs(np.diff(shown[0, 1])).max() <= 1 and abs(shown[0, 1, 0] - 128) <= 2  # grey stays grey
    assert shown[1, 0].tolist() == [255, 255, 255] and shown[1, 1].tolist() == [0, 0, 0]
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, icc in (("plain.png", None), ("srgb.png", srgb), ("damaged.png", b"not a profile")):
        assert np.array_equal(media.read_image(_tagged(tmp_path / name, pixels, icc)), pixels), name  # as stored
    p3_jpeg = media.read_image(_tagged(tmp_path / "p3.jpg", np.full((8, 8, 3), (200, 60, 60), np.uint8), display_p3_profile(), "JPEG"))
    assert p3_jpeg[4, 4, 0] >= 210 and p3_jpeg[4, 4, 1] <= 50
