"""Inputs of ``bloodlib analyze``: which files form which sample, and reading one image safely.

A PATH on the command line is an image (a sample of one field) or a folder (one sample, one
patient's smear: every file directly inside it is a field of view; hidden files are skipped and
sub-folders are not descended into). Every problem is reported per file and never stops the
batch:

========================================  ==========================================================
input                                      outcome
========================================  ==========================================================
path that does not exist                   error
empty folder / folder without images       error (the sample fails)
unreadable file (permissions, I/O)         error
FIFO, socket, device (or a link to one)    error ("not a regular file"), never opened for reading
broken symbolic link                       error
file over ``max_bytes`` (default 200 MB)   error, checked before reading
empty or non-image file                    error ("not an image")
other formats (EPS, PDF, SVS, GIF, ...)    error: only JPEG, PNG, BMP and TIFF are decoded, told
                                           by their first bytes, whatever the file's name
over ``max_pixels`` (default 100 MP)       error (decompression bomb), before decoding
truncated or corrupt image                 error
grayscale image (8 or 16 bit)              error: the models read the stain colours
colour image with R = G = B everywhere     error (a grayscale image saved as RGB)
RGBA / palette with transparency           warning: composited onto white, then analysed
16-bit colour PNG                          warning: reduced to 8 bits per channel, then analysed
side over ``max_side`` pixels              warning: resized to ``max_side``, boxes reported in
                                           the original pixels
side under ``min_side`` pixels             error
odd or non-UTF-8 file name                 analysed; outputs get a safe name (letters, digits, ``._-``,
                                           at most 80 characters), messages show the name with
                                           undecodable bytes as ``\\xNN``
========================================  ==========================================================
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ERROR = "error"
WARNING = "warning"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
#: Default size limit of one input file, checked before it is read (``bloodlib analyze --max-file-mb``).
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Default limit of an image's pixels (width x height), checked before it is decoded (decompression bombs).
MAX_PIXELS = 100_000_000
#: The formats decoded, by their first bytes (Pillow is never asked to guess: no EPS through Ghostscript).
SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (PNG_SIGNATURE, "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
#: Longest output name made from an input name (a field's outputs add up to ~20 characters).
MAX_NAME = 80


class ImageInputError(ValueError):
    """An input file cannot be analysed; the message says why (the caller adds the path)."""


@dataclass(frozen=True)
class Problem:
    """One per-file (or per-sample) message of a run.

    Attributes:
        level: ``"error"`` (the file or sample was not analysed) or ``"warning"`` (it was, with a change).
        sample: the sample the input belongs to.
        path: the input as given (or the file inside a given folder).
        message: what happened, in words.
    """

    level: str
    sample: str
    path: str
    message: str


@dataclass(frozen=True)
class Field:
    """One image of a sample. ``name`` is unique within the sample (names its output files);
    ``error`` is set when the file was refused before reading (not a regular file, too large)."""

    sample: str
    path: Path
    name: str
    error: str | None = None

    @property
    def display(self) -> str:
        """The path as messages and output files show it (:func:`printable`)."""
        return printable(str(self.path))


def printable(text: str) -> str:
    """``text`` safe to print and to write as UTF-8: undecodable bytes of a file name (surrogate
    escapes) become ``\\xNN``, control characters their ``\\x``/``\\u`` escape."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


@dataclass
class InputPlan:
    """The samples of a run, in command-line order, and the problems found while listing them."""

    samples: dict[str, list[Field]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # sample -> the PATH given
    problems: list[Problem] = field(default_factory=list)

    @property
    def fields(self) -> list[Field]:
        """Every field of every sample, in order."""
        return [f for fields in self.samples.values() for f in fields]


def safe_name(text: str, default: str = "sample") -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (output file and folder names), at most
    :data:`MAX_NAME` characters (a longer name keeps its start and gets a short hash of the whole);
    ``default`` when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9].rstrip('._-')}-{digest}"
    return name or default


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate.lower() in taken:
        candidate, k = f"{name}-{k}", k + 1
    taken.add(candidate.lower())
    return candidate


def _field_names(paths: list[Path]) -> list[str]:
    """Output names of a sample's files: the stem, or the whole name where stems collide."""
    stems = [safe_name(p.stem, "image") for p in paths]
    taken: set[str] = set()
    out = []
    for path, stem in zip(paths, stems):
        base = stem if stems.count(stem) == 1 else safe_name(path.name, "image")
        out.append(_unique(base, taken))
    return out


def _sample_name(path: Path) -> str:
    """A folder's name, a file's stem (``.`` and ``..`` resolved)."""
    if path.name in ("", ".", ".."):
        path = path.resolve()
    return safe_name(path.stem if path.is_file() else path.name)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO, a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _not_regular(mode: int) -> str | None:
    """Why a file of ``mode`` is not read (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kind = next((words for test, words in _KINDS if test(mode)), "not a plain file")
    return f"not a regular file ({kind}): not read"


def check_file(path: Path, *, max_bytes: float = MAX_FILE_BYTES) -> str | None:
    """Why the input file ``path`` is refused before reading (None if it may be read): a broken link,
    not a regular file (a symbolic link is followed to its target), or over ``max_bytes``."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else "file does not exist"
    except OSError as err:
        return f"cannot read file: {err.strerror or err}"
    reason = _not_regular(info.st_mode)
    if reason is None and info.st_size > max_bytes:
        reason = f"file is {info.st_size / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:g} MB: not read"
    return reason


def plan_inputs(paths: list[str | Path], *, max_bytes: int = MAX_FILE_BYTES) -> InputPlan:
    """Turn command-line PATHs into samples (see the module docstring); never raises for bad paths.

    Files refused before reading (:func:`check_file`) are fields with ``error`` set.
    """
    plan = InputPlan()
    taken: set[str] = set()
    for given in paths:
        path = Path(given)
        shown = printable(str(given))
        sample = _unique(_sample_name(path), taken)
        plan.sources[sample] = shown
        if not path.exists() and not path.is_symlink():
            plan.samples[sample] = []
            plan.problems.append(Problem(ERROR, sample, shown, "path does not exist"))
        elif path.is_dir():
            try:
                entries = sorted(path.iterdir(), key=lambda p: p.name)
            except OSError as err:
                plan.samples[sample] = []
                plan.problems.append(Problem(ERROR, sample, shown, f"cannot list folder: {err.strerror or err}"))
                continue
            files = [p for p in entries if not p.name.startswith(".") and not p.is_dir()]
            for sub in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
                plan.problems.append(
                    Problem(
                        WARNING,
                        sample,
                        printable(str(sub)),
                        "sub-folder not analysed (a sample is one folder of images)",
                    )
                )
            plan.samples[sample] = [
                Field(sample, p, n, check_file(p, max_bytes=max_bytes)) for p, n in zip(files, _field_names(files))
            ]
            if not files:
                plan.problems.append(Problem(ERROR, sample, shown, "empty folder: no image files in it"))
        else:  # a file, a dangling link or a special file (a per-file error)
            plan.samples[sample] = [
                Field(sample, path, safe_name(path.stem, "image"), check_file(path, max_bytes=max_bytes))
            ]
    return plan


@dataclass
class LoadedImage:
    """A decoded input image.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 RGB, after any resize (what the models see).
        width, height: the file's size in pixels (boxes are reported in these coordinates).
        scale: ``rgb`` side / original side (1.0 unless resized).
        warnings: changes made to the image, in words.
    """

    rgb: np.ndarray
    width: int
    height: int
    scale: float
    warnings: list[str]


def read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (a separate function so that tests can make a file unreadable).

    The file is opened without blocking and checked through its descriptor, so a FIFO or a device
    swapped in after :func:`check_file` is refused, not read.

    Raises:
        ImageInputError: not a regular file, or over ``max_bytes`` (None: no limit).
        OSError: it cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        reason = _not_regular(info.st_mode)
        if reason is not None:
            raise ImageInputError(reason)
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageInputError(f"file is over the limit of {max_bytes / 2**20:g} MB: not read")
    return data


def image_format(data: bytes) -> str | None:
    """``"JPEG"``, ``"PNG"``, ``"BMP"`` or ``"TIFF"`` by the file's first bytes; None for anything else."""
    return next((name for signature, name in SIGNATURES if data.startswith(signature)), None)


def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 25:
        return data[24]
    return None


def _to_rgb(image, notes: list[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a decoded PIL image; grayscale is refused, alpha composited on white."""
    from PIL import Image

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in _GRAY_MODES:
        raise ImageInputError(
            f"grayscale image (mode {image.mode}): the detector and the WBC classifier read the stain "
            "colours; give a colour (RGB) image of a stained smear"
        )
    if image.mode in ("RGBA", "RGBa"):
        alpha = np.asarray(image.getchannel("A"))
        notes.append(
            "alpha channel: transparent parts composited onto white"
            if alpha.min() < 255
            else "alpha channel ignored (fully opaque)"
        )
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = background
    elif image.mode != "RGB":
        notes.append(f"converted from mode {image.mode} to RGB")
        image = image.convert("RGB")
    rgb = np.array(image, dtype=np.uint8)  # a writable copy
    sample = rgb[::8, ::8].astype(np.int16)
    if int(np.abs(sample - sample[..., :1]).max()) == 0:
        raise ImageInputError(
            "grayscale image saved as colour (R = G = B everywhere): the models read the stain colours; "
            "give a colour image of a stained smear"
        )
    return rgb


def load_image(
    path: Path, *, max_side: int, min_side: int, max_bytes: int | None = None, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """Decode and validate one input image (see the module docstring for every case).

    ``max_bytes`` (None: no limit here) is checked before reading; ``bloodlib analyze`` checks its
    ``--max-file-mb`` when it lists the inputs (:func:`plan_inputs`).

    Raises:
        ImageInputError: the file cannot be analysed; the message says why.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    refused = check_file(path, max_bytes=max_bytes if max_bytes is not None else float("inf"))
    if refused is not None:
        raise ImageInputError(refused)
    try:
        data = read_bytes(path) if max_bytes is None else read_bytes(path, max_bytes)
    except IsADirectoryError:
        raise ImageInputError("is a folder, not an image file") from None
    except OSError as err:
        raise ImageInputError(f"cannot read file: {err.strerror or err}") from None
    if not data:
        raise ImageInputError("empty file (0 bytes), not an image")
    kind = image_format(data)
    if kind is None:
        raise ImageInputError("not an image: only JPEG, PNG, BMP and TIFF files are read (told by their first bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as image:
                if image.width * image.height > max_pixels:
                    raise ImageInputError(
                        f"image is {image.width}x{image.height} px, over the limit of {max_pixels / 1e6:g} "
                        "megapixels: not decoded (decompression bomb guard)"
                    )
                if getattr(image, "n_frames", 1) > 1:
                    notes.append(f"{image.n_frames} frames: only the first is analysed")
                image.load()
                image = ImageOps.exif_transpose(image)
                width, height = image.size
                if _png_bit_depth(data) == 16:
                    notes.append("16-bit PNG: reduced to 8 bits per channel")
                if min(width, height) < min_side:
                    raise ImageInputError(f"image is {width}x{height} px, smaller than {min_side} px a side")
                rgb = _to_rgb(image, notes)
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError("not an image (or an image format Pillow cannot read)") from None
    except Image.DecompressionBombError as err:  # Pillow's own guard, at twice its MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "too many pixels"
        raise ImageInputError(
            f"image has {size}, over the limit of {max_pixels / 1e6:g} megapixels: not decoded "
            "(decompression bomb guard)"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(f"truncated or corrupt image: {err}") from None
    scale = 1.0
    if max(width, height) > max_side:
        import cv2

        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        notes.append(
            f"image is {width}x{height} px, over {max_side} px a side: resized to {size[0]}x{size[1]} "
            "(boxes are reported in the original pixels; the detector squashes every image to 300x300 as it did "
            "BCCD's 640x480 fields, so a field much wider than BCCD's should be cut into BCCD-sized fields first)"
        )
    return LoadedImage(rgb=rgb, width=width, height=height, scale=scale, warnings=notes)
