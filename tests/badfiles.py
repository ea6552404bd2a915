"""Builders of the bad and awkward files users have: truncated, 16-bit, CMYK, EXIF-rotated, huge, pickles."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gradient(h: int, w: int, offset: int = 0) -> np.ndarray:
    """An RGB image whose pixels all differ."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7 + offset) % 256, (y * 5) % 256, (x + y) % 256], -1).astype(np.uint8)


def image(path: Path, h: int = 40, w: int = 40, offset: int = 0, mode: str = "RGB", **save) -> Path:
    """Write a small image (any Pillow mode) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient(h, w, offset)).convert(mode).save(path, **save)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in half, as an interrupted download leaves it."""
    image(path, 64, 64)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _png(path: Path, width: int, height: int, depth: int, color: int, raw: bytes | None) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
    if raw is not None:
        body += chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


def png16_rgb(path: Path, value: tuple[int, int, int] = (65535, 32896, 0), size: int = 40) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write these), every pixel ``value``."""
    row = b"\x00" + np.tile(np.array(value, ">u2"), size).tobytes()
    return _png(path, size, size, 16, 2, row * size)


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height pixels: a decompression bomb needs no more to be refused."""
    return _png(path, width, height, 1, 0, None)


def exif_rotated_jpeg(path: Path, h: int = 40, w: int = 60, orientation: int = 6) -> Path:
    """A JPEG stored w x h whose EXIF orientation says to show it turned (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return image(path, h, w, exif=exif.tobytes(), quality=100)


class RunsCode:
    """A pickle payload that creates ``marker`` when unpickled: proof that a loader executed code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
