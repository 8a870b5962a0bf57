"""Every Pillow mode a user can meet becomes the RGB it should look like: pixel values, not modes.

Each case builds a known picture as numpy, stores it in one mode (through a real file
where the mode comes from one), converts it with crossfuse and compares the pixels with
the numpy reference.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from crossfuse.data.images import load_rgb, to_rgb

H, W = 8, 16
RAMP8 = np.tile(np.linspace(0, 255, W).round().astype(np.uint8), (H, 1))      # [H, W] dark -> light
RAMP16 = RAMP8.astype(np.uint16) * 257                                         # the same, 16-bit
COLOURS = np.stack([RAMP8, RAMP8[:, ::-1], np.full((H, W), 90, np.uint8)], axis=2)  # [H, W, 3]


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def close(image: Image.Image, expected: np.ndarray, tol: int = 1) -> None:
    got = np.asarray(image)
    assert image.mode == "RGB" and got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= tol, f"max pixel error {diff.max()} (> {tol})"


def saved(img: Image.Image, tmp_path, fmt: str = "PNG", name: str = "x"):
    path = tmp_path / f"{name}.{fmt.lower()}"
    img.save(path, format=fmt)
    return path


def png16_rgb(rgb16: np.ndarray) -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG: Pillow cannot write one, so write it by hand."""
    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tiff16_rgb(rgb16: np.ndarray) -> bytes:
    """A little-endian, uncompressed, 16-bit-per-channel RGB TIFF, written by hand."""
    h, w, _ = rgb16.shape
    pixels = rgb16.astype("<u2").tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, None), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)),
               (284, 3, 1, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    data_at = bits_at + 6
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = bits_at if tag == 258 else data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 and tag != 258 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + pixels


def test_sixteen_bit_grayscale_keeps_its_gray_levels(tmp_path):
    """The reported bug: a 16-bit ramp came out 98% white."""
    for mode, order in (("I;16", "<u2"), ("I;16B", ">u2")):
        img = Image.frombytes(mode, (W, H), RAMP16.astype(order).tobytes())
        close(to_rgb(img), gray_rgb(RAMP8))
    path = saved(Image.frombytes("I;16", (W, H), RAMP16.astype("<u2").tobytes()), tmp_path)
    with Image.open(path) as opened:  # however this Pillow opens a 16-bit PNG (I;16 or I)
        assert opened.mode in {"I;16", "I"}
    close(load_rgb(path), gray_rgb(RAMP8))
    white = (np.asarray(load_rgb(path)) == 255).mean()
    assert white < 0.1


def test_32_bit_integer_and_float_images_scale_by_their_range():
    as_int32 = Image.frombytes("I", (W, H), RAMP16.astype("<i4").tobytes())
    close(to_rgb(as_int32), gray_rgb(RAMP8))                       # 16-bit data held in I
    close(to_rgb(Image.frombytes("I", (W, H), RAMP8.astype("<i4").tobytes())), gray_rgb(RAMP8))
    unit = (RAMP8 / 255.0).astype("<f4")
    close(to_rgb(Image.frombytes("F", (W, H), unit.tobytes())), gray_rgb(RAMP8))
    byte_range = RAMP8.astype("<f4")
    close(to_rgb(Image.frombytes("F", (W, H), byte_range.tobytes())), gray_rgb(RAMP8))
    odd = (RAMP8.astype("<f4") * 4.0 - 300.0)                      # [-300, 720]: min-max
    close(to_rgb(Image.frombytes("F", (W, H), odd.tobytes())), gray_rgb(RAMP8))
    with_nan = unit.copy()
    with_nan[0, 0] = np.nan
    assert np.asarray(to_rgb(Image.frombytes("F", (W, H), with_nan.tobytes())))[0, 0, 0] == 0


def test_eight_bit_colour_modes(tmp_path):
    rgb = Image.fromarray(COLOURS)
    close(to_rgb(rgb), COLOURS)
    close(to_rgb(Image.fromarray(RAMP8)), gray_rgb(RAMP8))                        # L
    bilevel = Image.fromarray(RAMP8).convert("1", dither=Image.Dither.NONE)
    close(to_rgb(bilevel), gray_rgb(np.where(RAMP8 >= 128, 255, 0).astype(np.uint8)))
    palette = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    close(to_rgb(palette), COLOURS, tol=12)                                       # P: quantised
    close(to_rgb(rgb.convert("YCbCr")), COLOURS, tol=6)     # both store 8-bit, lossy channels
    close(to_rgb(rgb.convert("HSV")), COLOURS, tol=6)
    cmyk = np.stack([255 - COLOURS[..., 0], 255 - COLOURS[..., 1], 255 - COLOURS[..., 2],
                     np.zeros((H, W), np.uint8)], axis=2)
    with Image.open(saved(Image.fromarray(cmyk, mode="CMYK"), tmp_path, "TIFF")) as img:
        close(to_rgb(img), COLOURS)
    half_black = cmyk.copy()
    half_black[..., 3] = 128                                   # K=50%: every channel halved
    close(to_rgb(Image.fromarray(half_black, mode="CMYK")),
          np.rint(COLOURS.astype(float) * 127 / 255).astype(np.uint8))


def lab_bytes_to_srgb(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CIE reference: Pillow's LAB bytes (L* scaled to 0-255, a*/b* signed) -> sRGB.

    L*a*b* relative to D50 (the ICC connection space) -> XYZ -> Bradford to D65 -> sRGB.
    Returns (sRGB bytes, in_gamut): colour managers clip out-of-gamut colours each their
    own way, so only in-gamut pixels have one right answer.
    """
    L = lab[..., 0] * (100.0 / 255.0)
    a, b = (lab[..., 1:].astype(np.int8).astype(float)).transpose(2, 0, 1)
    fy = (L + 16) / 116
    f = np.stack([fy + a / 500, fy, fy - b / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * [0.96422, 1.0, 0.82521]
    bradford = np.array([[0.9555766, -0.0230393, 0.0631636], [-0.0282895, 1.0099416, 0.0210077],
                         [0.0122982, -0.0204830, 1.3299098]])
    to_linear = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                          [0.0556434, -0.2040259, 1.0572252]])
    linear = xyz @ bradford.T @ to_linear.T
    in_gamut = ((linear >= -0.002) & (linear <= 1.002)).all(-1)
    rgb = np.clip(linear, 0, 1)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)
    return np.rint(srgb * 255).astype(np.uint8), in_gamut


def test_lab_is_converted_by_colour_science_not_read_as_rgb():
    rng = np.random.default_rng(0)
    lab = np.stack([rng.integers(20, 236, (H, W)), rng.integers(-40, 40, (H, W)) % 256,
                    rng.integers(-40, 40, (H, W)) % 256], axis=2).astype(np.uint8)
    expected, in_gamut = lab_bytes_to_srgb(lab)
    got = np.asarray(to_rgb(Image.frombytes("LAB", (W, H), lab.tobytes()))).astype(int)
    assert in_gamut.mean() > 0.7
    error = np.abs(got - expected)[in_gamut]
    # LittleCMS's sRGB differs from the textbook one by a few levels, most near black.
    assert error.mean() < 1.5 and error.max() <= 16


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparency_is_composited_on_white(mode, tmp_path):
    alpha = np.zeros((H, W), np.uint8)
    alpha[:, W // 2:] = 255                                      # left half transparent
    base = Image.fromarray(COLOURS) if mode != "LA" else Image.fromarray(RAMP8)
    if mode == "PA":
        base = base.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    img = base.convert(mode) if mode != "PA" else Image.merge(
        "PA", [base.getchannel(0), Image.fromarray(alpha)])
    if mode != "PA":
        img.putalpha(Image.fromarray(alpha))
    expected = (COLOURS if mode != "LA" else gray_rgb(RAMP8)).copy()
    expected[:, : W // 2] = 255
    tol = 12 if mode == "PA" else 1
    close(to_rgb(img), expected, tol=tol)
    if mode in ("RGBA", "LA"):                                  # and through a real PNG file
        close(load_rgb(saved(img, tmp_path)), expected, tol=tol)


def test_palette_with_a_transparent_index_is_composited_on_white(tmp_path):
    img = Image.fromarray(COLOURS).quantize(colors=16, dither=Image.Dither.NONE)
    index = np.asarray(img)[0, 0]
    img.info["transparency"] = int(index)
    out = np.asarray(load_rgb(saved(img, tmp_path)))
    transparent = np.asarray(img) == index
    assert (out[transparent] == 255).all() and transparent.any()


def test_sixteen_bit_rgb_png_and_tiff(tmp_path):
    rgb16 = COLOURS.astype(np.uint16) * 257
    (tmp_path / "a.png").write_bytes(png16_rgb(rgb16))
    (tmp_path / "a.tif").write_bytes(tiff16_rgb(rgb16))
    for name in ("a.png", "a.tif"):
        close(load_rgb(tmp_path / name), COLOURS)


def test_a_served_image_goes_through_the_same_conversion():
    from crossfuse.data.images import prepare_image

    buf = io.BytesIO()
    Image.frombytes("I;16", (W, H), RAMP16.astype("<u2").tobytes()).save(buf, format="PNG")
    buf.seek(0)
    out = np.asarray(prepare_image(buf, 16))
    assert 100 < out.mean() < 155  # a ramp averages mid-gray; the bug gave ~255
