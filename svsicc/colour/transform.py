"""ICC profiles and the exact colour table.

The transform is LittleCMS (Pillow ImageCms), source profile -> target profile, 8 bits per channel.
Because an 8-bit RGB transform is a function of 2**24 inputs, one LittleCMS pass over every colour
fills a table that reproduces it bit for bit; applying the table is one gather per pixel, several
times cheaper than calling LittleCMS per tile. The table is cached on disk per
(source, target, intent, LittleCMS version, layout) so a worker pool or a migration builds it once.

The table is laid out by chroma differences, not in RGB order: colour (R, G, B) sits in slot
``((R-G) & 255) << 16 | ((B-G) & 255) << 8 | G``, a one-to-one map of the 2**24 colours. The
gather waits on memory (64 MiB of table, thousands of cache lines per tile), and neighbouring
pixels differ mostly in lightness, which keeps R-G and B-G: in this layout more of a tile's
colours share a cache line (2.1x fewer lines on YCbCr 4:2:0 tiles).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from svsicc.exceptions import ProfileError

if TYPE_CHECKING:
    from PIL import ImageCms

# Pillow's ImageCms (and PIL.features) import PIL.Image, about 15 ms of every run's start-up. A
# run whose table is cached needs only LittleCMS's reading of the two profiles, which Pillow's C
# module gives without PIL.Image; ImageCms is imported where a table is built or a transform run.

_native: ModuleType | None
_native_missing: str | None = None  # why the C gather is not there, when it is not
try:
    from svsicc.colour import _native as _native_gather

    _native = _native_gather
except ImportError as exc:  # built without a C compiler: numpy does the same gather, slower
    _native = None
    _native_missing = str(exc)

ICC_HEADER_SIZE = 128
_LOW_24_BITS = 0xFFFFFF
TABLE_SIZE = 1 << 24
# Names the slot layout in cache file names: a table cached in another layout is not reused.
TABLE_LAYOUT = "chroma-diff"


class Intent(IntEnum):
    PERCEPTUAL = 0
    RELATIVE = 1
    SATURATION = 2
    ABSOLUTE = 3

    @property
    def label(self) -> str:
        return {0: "perceptual", 1: "relative", 2: "saturation", 3: "absolute"}[self.value]

    @classmethod
    def parse(cls, text: str) -> Intent:
        names = {
            "perceptual": cls.PERCEPTUAL,
            "relative": cls.RELATIVE,
            "relative-colorimetric": cls.RELATIVE,
            "saturation": cls.SATURATION,
            "absolute": cls.ABSOLUTE,
            "absolute-colorimetric": cls.ABSOLUTE,
        }
        try:
            return names[text.lower()]
        except KeyError:
            raise ValueError(f"unknown rendering intent {text!r}") from None


@dataclass(frozen=True)
class IccProfile:
    data: bytes
    description: str
    sha256: str
    version: str
    device_class: str
    color_space: str
    pcs: str
    default_intent: Intent

    @classmethod
    def from_bytes(cls, data: bytes, origin: str | Path | None = None) -> IccProfile:
        """Parse and validate; ``origin`` names the file in errors."""
        if len(data) < ICC_HEADER_SIZE + 4:
            raise ProfileError(origin, f"ICC profile is {len(data)} bytes, too short to be one")
        (declared,) = struct.unpack_from(">I", data, 0)
        if data[36:40] != b"acsp":
            raise ProfileError(origin, "ICC profile lacks the 'acsp' signature; not an ICC profile")
        if declared > len(data):
            raise ProfileError(
                origin, f"ICC profile is truncated ({len(data)} of {declared} bytes)"
            )
        try:
            description = _littlecms_description(data)
        except _LittleCmsCannotRead as exc:
            raise ProfileError(origin, f"LittleCMS cannot read the ICC profile: {exc}") from None
        color_space = data[16:20].decode("latin-1").strip()
        if color_space != "RGB":
            raise ProfileError(
                origin,
                f"ICC profile has colour space {color_space!r}; an RGB profile is required",
            )
        major, minor = data[8], data[9] >> 4
        intent_value = struct.unpack_from(">I", data, 64)[0]
        return cls(
            data=bytes(data),
            description=description or "(no description)",
            sha256=hashlib.sha256(data).hexdigest(),
            version=f"{major}.{minor}",
            device_class=data[12:16].decode("latin-1"),
            color_space=color_space,
            pcs=data[20:24].decode("latin-1").strip(),
            default_intent=Intent(intent_value) if intent_value < 4 else Intent.PERCEPTUAL,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> IccProfile:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ProfileError(path, f"cannot read ICC profile: {exc.strerror}") from None
        return cls.from_bytes(data, path)

    def text_lines(self, where: str) -> list[str]:
        """``svsicc info``'s lines for this profile; ``where`` says where the slide keeps it."""
        return [
            f"profile: {self.description!r}, {len(self.data):,} bytes, ICC v{self.version} "
            f"{self.device_class} -> {self.pcs}, default intent {self.default_intent.label}, "
            f"{where}",
            f"  sha256 {self.sha256}",
        ]

    def summary(self) -> dict[str, object]:
        return {
            "description": self.description,
            "size": len(self.data),
            "sha256": self.sha256,
            "version": self.version,
            "device_class": self.device_class,
            "pcs": self.pcs,
            "default_intent": self.default_intent.label,
        }


class _LittleCmsCannotRead(Exception):
    pass


def _littlecms_description(data: bytes) -> str:
    """The profile's description as LittleCMS reads it (what ImageCms.getProfileDescription
    returns, stripped); _LittleCmsCannotRead when LittleCMS cannot read the profile."""
    try:
        from PIL import _imagingcms
    except ImportError:  # a Pillow that moved its C module: the public API, at its import cost
        from PIL import ImageCms

        try:
            cms = ImageCms.ImageCmsProfile(io.BytesIO(data))
            return (ImageCms.getProfileDescription(cms) or "").strip()
        except ImageCms.PyCMSError as exc:
            raise _LittleCmsCannotRead(str(exc)) from None
    try:
        profile = _imagingcms.profile_frombytes(data)
    except (OSError, ValueError, TypeError) as exc:
        raise _LittleCmsCannotRead(str(exc)) from None
    return str(getattr(profile, "profile_description", "") or "").strip()


_SRGB_FILE = Path(__file__).resolve().parent.parent / "data" / "sRGB-v2-magic.icc"


def default_target() -> IccProfile:
    """A compact ICC v2 sRGB profile (CC0, saucecontrol/Compact-ICC-Profiles)."""
    try:
        data = _SRGB_FILE.read_bytes()
    except OSError:  # installed where package data are not plain files (a zip)
        from importlib import resources

        data = resources.files("svsicc").joinpath("data/sRGB-v2-magic.icc").read_bytes()
    return IccProfile.from_bytes(data, "built-in sRGB profile")


def _littlecms_version() -> str:
    # A table is exact only for the LittleCMS that built it. PIL.features reads this same
    # attribute, after importing PIL.Image.
    try:
        from PIL import _imagingcms

        return str(_imagingcms.littlecms_version)
    except (ImportError, AttributeError):
        from PIL import features

        return str(features.version("littlecms2"))


def _cache_dir() -> Path:
    root = os.environ.get("SVSICC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "svsicc"
    )
    return Path(root)


def _slots_of(colours: np.ndarray) -> np.ndarray:
    """Table slots of 0xRRGGBB colours (uint32): ``((R-G) & 255) << 16 | ((B-G) & 255) << 8 | G``.

    ``svsicc/_native.c`` computes the same slots; the module docstring says why this layout.
    """
    colours = colours.astype(np.uint32, copy=False)
    green = (colours >> np.uint32(8)) & np.uint32(0xFF)
    red_minus_green = ((colours >> np.uint32(16)) - green) & np.uint32(0xFF)
    blue_minus_green = (colours - green) & np.uint32(0xFF)
    slots: np.ndarray = (red_minus_green << np.uint32(16)) | (blue_minus_green << np.uint32(8))
    slots |= green
    return slots


def _colours_in(slots: np.ndarray) -> np.ndarray:
    """0xRRGGBB colours (uint32) held by table slots: the inverse of :func:`_slots_of`."""
    slots = slots.astype(np.uint32, copy=False)
    green = slots & np.uint32(0xFF)
    red = ((slots >> np.uint32(16)) + green) & np.uint32(0xFF)
    blue = ((slots >> np.uint32(8)) + green) & np.uint32(0xFF)
    colours: np.ndarray = (red << np.uint32(16)) | (green << np.uint32(8)) | blue
    return colours


def _all_colours_by_slot() -> np.ndarray:
    """Every colour once, in slot order, as a 4096x4096 RGB image."""
    colours = _colours_in(np.arange(TABLE_SIZE, dtype=np.uint32))
    rgb = np.empty((TABLE_SIZE, 3), np.uint8)
    rgb[:, 0] = colours >> np.uint32(16)
    rgb[:, 1] = (colours >> np.uint32(8)) & np.uint32(0xFF)
    rgb[:, 2] = colours & np.uint32(0xFF)
    return rgb.reshape(4096, 4096, 3)


@dataclass(frozen=True)
class TransformKey:
    source_sha256: str
    target_sha256: str
    intent: Intent

    @property
    def name(self) -> str:
        tag = f"{self.source_sha256[:16]}-{self.target_sha256[:16]}-{int(self.intent)}"
        return f"table-{tag}-lcms{_littlecms_version()}-{TABLE_LAYOUT}.npy"


class ColourTable:
    """The exact 8-bit LittleCMS transform as a table of 2**24 packed RGBX words.

    The slot of colour (r, g, b) (:func:`_slots_of`, the module docstring says why this layout)
    holds the output's bytes R, G, B, 0 (a little-endian word).
    """

    def __init__(self, table: np.ndarray, key: TransformKey) -> None:
        self.table = table
        self.key = key
        self.file: Path | None = None  # where workers can load it from

    @classmethod
    def build(cls, source: IccProfile, target: IccProfile, intent: Intent) -> ColourTable:
        """Run LittleCMS once over every colour (about a second)."""
        from PIL import Image, ImageCms

        key = TransformKey(source.sha256, target.sha256, intent)
        transform = build_transform(source, target, intent)
        # Colours fed in slot order come out in slot order: no permutation afterwards.
        out = np.asarray(
            ImageCms.applyTransform(Image.fromarray(_all_colours_by_slot()), transform)
        )
        rgbx = np.zeros((TABLE_SIZE, 4), np.uint8)
        rgbx[:, :3] = out.reshape(-1, 3)
        return cls(rgbx.view("<u4").reshape(-1), key)

    @classmethod
    def load_or_build(
        cls, source: IccProfile, target: IccProfile, intent: Intent, cache: bool = True
    ) -> ColourTable:
        key = TransformKey(source.sha256, target.sha256, intent)
        path = _cache_dir() / key.name
        if cache and path.is_file():
            with contextlib.suppress(OSError, ValueError):
                loaded = cls.from_file(path, key)
                loaded.file = path
                return loaded
        built = cls.build(source, target, intent)
        if cache and built.save(path):
            built.file = path
        return built

    @classmethod
    def from_file(cls, path: Path, key: TransformKey | None = None) -> ColourTable:
        """The table in ``path``: mapped from the page cache in 2 MiB pages when the system
        allows it, else a private copy (:func:`_load_table` says why)."""
        return cls(_load_table(path), key or TransformKey("", "", Intent.PERCEPTUAL))

    def save(self, path: Path) -> bool:
        """Write atomically; a cache that cannot be written is not an error (returns False)."""
        import tempfile

        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, self.table)
                    fh.flush()
                    os.fsync(fh.fileno())
                    # Written pages sit in the page cache in small folios; dropped now, the
                    # next reader maps the file into fresh 2 MiB ones (see _load_table).
                    _drop_cached_pages(fh.fileno())
                os.replace(tmp, path)
                return True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return False

    def is_identity(self, tolerance: int) -> bool:
        """Whether no colour moves by more than ``tolerance`` levels in any channel."""
        # A real scanner profile moves most colours: a sample decides that in a millisecond.
        # Every 4099th slot (a prime stride: no alignment with the 256-slot rows of the layout).
        sample = np.arange(0, TABLE_SIZE, 4099, dtype=np.uint32)
        if _max_deviation(self.table[sample], _colours_in(sample)) > tolerance:
            return False
        return self.max_deviation_from_identity() <= tolerance

    def max_deviation_from_identity(self) -> int:
        return _max_deviation(self.table, _colours_in(np.arange(TABLE_SIZE, dtype=np.uint32)))

    def lookup(self, colours: np.ndarray) -> np.ndarray:
        """Packed RGBX outputs of 0xRRGGBB ``colours``."""
        result: np.ndarray = self.table[_slots_of(colours)]
        return result

    def apply(self, pixels: np.ndarray, layout: str, out: np.ndarray | None = None) -> np.ndarray:
        """Decoded ``pixels`` in ``layout`` ("BGRX" or "RGB", :mod:`svsicc.codecs.pixels`) ->
        (rows, cols, 4) RGBX pixels, written into ``out`` when it is given, writable and
        contiguous. For BGRX ``out`` may be ``pixels`` itself; for RGB it is a buffer the caller
        reuses tile after tile. Fresh memory per tile costs page faults comparable to the gather.
        """
        if layout == "BGRX":
            if out is pixels:
                return self.apply_bgrx(pixels, in_place=True)
            if out is None or not (out.flags.c_contiguous and out.flags.writeable):
                return self.apply_bgrx(pixels)
            return self._gather_bgrx(np.ascontiguousarray(pixels), out)
        if layout != "RGB":
            raise ValueError(f"the colour table takes BGRX or RGB pixels, not {layout}")
        rgb = np.ascontiguousarray(pixels)
        if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
            raise ValueError(f"RGB pixels are (..., 3) uint8, not {rgb.shape} {rgb.dtype}")
        shape = (*rgb.shape[:-1], 4)
        usable = out is not None and out.flags.c_contiguous and out.flags.writeable
        if out is None or not usable or out.shape != shape:
            out = np.empty(shape, np.uint8)
        if _native is not None:
            _native.apply_table_rgb(self.table, rgb, out)
            return out
        return self._apply_rgb_numpy(rgb, out)

    def _apply_rgb_numpy(self, rgb: np.ndarray, out: np.ndarray) -> np.ndarray:
        colours = rgb[..., 0].astype(np.uint32) << np.uint32(16)
        colours |= rgb[..., 1].astype(np.uint32) << np.uint32(8)
        colours |= rgb[..., 2]
        index = _slots_of(colours).astype(np.intp)
        np.take(self.table, index, mode="clip", out=out.view("<u4")[..., 0])
        return out

    def _gather_bgrx(self, bgrx: np.ndarray, out: np.ndarray) -> np.ndarray:
        if _native is not None:
            _native.apply_table(self.table, bgrx, out)
            return out
        return self._apply_bgrx_numpy(bgrx, out)

    def apply_bgrx(self, bgrx: np.ndarray, *, in_place: bool = False) -> np.ndarray:
        """(rows, cols, 4) BGRX pixels -> (rows, cols, 4) RGBX pixels.

        ``in_place`` overwrites ``bgrx`` (when it is writable and contiguous) instead of
        allocating: a fresh 256 KiB array per tile costs page faults comparable to the gather.
        """
        writable = in_place and bgrx.flags.c_contiguous and bgrx.flags.writeable
        out = bgrx if writable else np.empty(bgrx.shape, np.uint8)
        return self._gather_bgrx(np.ascontiguousarray(bgrx), out)

    def _apply_bgrx_numpy(self, bgrx: np.ndarray, out: np.ndarray) -> np.ndarray:
        words = np.ascontiguousarray(bgrx).view("<u4")[..., 0]
        # Native integers for the index: numpy's take converts any other index type first,
        # which costs more than the gather. mode="clip" skips the per-element bounds check;
        # every slot is below 2**24.
        index = _slots_of(words & np.uint32(_LOW_24_BITS)).astype(np.intp)
        np.take(self.table, index, mode="clip", out=out.view("<u4")[..., 0])
        return out

    def apply_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """(..., 3) RGB -> (..., 3) RGB, for callers that hold plain arrays."""
        return self.apply(rgb, "RGB")[..., :3]


class ColourOut:
    """Where the colour stage writes, segment after segment: BGRX pixels in place, RGB pixels
    into one RGBX buffer reused while the shape stays (the encoder is done with it before the
    next decode; it stays in cache and costs no page faults). Serves one thread."""

    def __init__(self) -> None:
        self._rgbx = np.empty((0, 0, 4), np.uint8)

    def for_pixels(self, pixels: np.ndarray, layout: str) -> np.ndarray:
        if layout == "BGRX":
            return pixels
        wanted = (*pixels.shape[:-1], 4)
        if self._rgbx.shape != wanted:
            self._rgbx = np.empty(wanted, np.uint8)
        return self._rgbx


# Cache files whose pages this process has already dropped once: files a filesystem cannot hold
# in 2 MiB pages are copied from then on, not evicted and re-read from disk at every load.
_dropped_once: set[tuple[int, int, int]] = set()


def _load_table(path: Path) -> np.ndarray:
    """The table in the cache file ``path``, as a read-only array.

    The gather misses the cache on almost every table line it touches, so the table must sit in
    2 MiB pages: in 4 KiB pages each miss also misses the TLB (measured: the colour stage 25%
    slower). Mapping the file (``MAP_SHARED``) with ``MADV_HUGEPAGE`` lets Linux (6.16 and later
    on ext4; XFS and others with large folios) read it into 2 MiB page-cache folios; a later
    process maps those in about 2 ms, and every process and worker shares the one copy. Copying
    64 MiB into fresh memory instead took 12-200 ms per process on the reference VM, by how
    quickly the host handed over the memory. Where the mapping is not in 2 MiB pages (the pages
    were cached in small folios by an earlier read, a filesystem without large folios, another
    OS), the cached pages are dropped and the file mapped once more (once per file and
    process), and failing that the table is copied into memory numpy allocates in huge pages.

    The cache is only ever replaced atomically (``os.replace``), never rewritten in place: a
    mapping always sees a whole file (truncating a mapped file would kill the process).
    """
    if not sys.platform.startswith("linux"):
        return _read_table(path)  # no way to tell what page size a mapping got
    try:
        mapped = _map_table(path)
    except OSError:  # a filesystem that cannot map files
        return _read_table(path)
    if _in_huge_pages(mapped):
        return mapped
    identity = _file_identity(path)
    if identity in _dropped_once:
        return _read_only(mapped.copy())
    del mapped  # the pages of a mapped file are not dropped
    _dropped_once.add(identity)
    with open(path, "rb") as fh:
        _drop_cached_pages(fh.fileno())
    mapped = _map_table(path)
    return mapped if _in_huge_pages(mapped) else _read_only(mapped.copy())


def _file_identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


def _table_data_offset(fh: BinaryIO, path: Path) -> int:
    """Where the table starts in the .npy file ``fh``; ValueError for any other file."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f".npy version {version}")
    except ValueError as exc:
        raise ValueError(f"{path} is not a colour table: {exc}") from None
    data_offset = fh.tell()
    if (
        shape != (TABLE_SIZE,)
        or fortran_order
        or dtype != np.dtype("<u4")
        or data_offset % 4  # the C gather reads whole aligned words
        or os.fstat(fh.fileno()).st_size != data_offset + 4 * TABLE_SIZE
    ):
        raise ValueError(f"{path} is not a colour table")
    return data_offset


def _map_table(path: Path) -> np.ndarray:
    """``path`` mapped read-only, every page faulted in."""
    with open(path, "rb") as fh:
        data_offset = _table_data_offset(fh, path)
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):  # a kernel without transparent huge pages
            mapping.madvise(mmap.MADV_HUGEPAGE)
    table = np.frombuffer(mapping, "<u4", TABLE_SIZE, data_offset)
    # Fault every page in now, not one by one inside the first tiles' gathers.
    int(np.frombuffer(mapping, np.uint8)[:: mmap.PAGESIZE].sum())
    return table


def _read_table(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        data_offset = _table_data_offset(fh, path)
        fh.seek(data_offset)
        return _read_only(np.fromfile(fh, "<u4", TABLE_SIZE))


def _read_only(table: np.ndarray) -> np.ndarray:
    table.flags.writeable = False
    return table


# Fields of /proc/self/smaps that count a mapping's memory mapped in 2 MiB pages.
_HUGE_PAGE_FIELDS = (b"FilePmdMapped:", b"AnonHugePages:", b"ShmemPmdMapped:")


def _in_huge_pages(table: np.ndarray) -> bool:
    """Whether ``table``, a mapping of its own (as :func:`_map_table` makes), is at least 3/4
    mapped in 2 MiB pages (smaps counts per mapping, not per array)."""
    try:
        with open("/proc/self/smaps", "rb") as smaps:
            huge_kib = huge_kib_of_mapping(smaps, table.ctypes.data)
    except (OSError, ValueError):
        return False
    return huge_kib * 1024 >= table.nbytes * 3 // 4


def huge_kib_of_mapping(smaps: Iterable[bytes], address: int) -> int:
    """KiB mapped in 2 MiB pages in the mapping of ``smaps`` (the lines of a /proc/PID/smaps)
    that holds ``address``; 0 when no mapping holds it."""
    huge_kib = 0
    inside = False
    for line in smaps:
        first = line.split(b" ", 1)[0]
        if b"-" in first:  # a mapping's header line: "start-end perms offset dev inode path"
            if inside:
                break  # smaps costs the kernel a page walk per mapping: stop at the next one
            low, high = first.split(b"-")
            inside = int(low, 16) <= address < int(high, 16)
        elif inside and first in _HUGE_PAGE_FIELDS:
            huge_kib += int(line.split()[1])
    return huge_kib


def _drop_cached_pages(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def native_gather_available() -> bool:
    """Whether the C gather was built (``pip install`` with a C compiler)."""
    return _native is not None


def colour_path() -> str:
    """Which gather applies the table, and why the slower one when it is the fallback."""
    if _native is not None:
        return "C gather (svsicc.colour._native)"
    return (
        "numpy fallback, colour stage 6-13x slower (C extension not built: "
        f"{_native_missing or 'svsicc.colour._native is missing'}; reinstall with a C compiler)"
    )


def _max_deviation(outputs: np.ndarray, inputs: np.ndarray) -> int:
    """Largest channel difference between packed RGBX ``outputs`` and 0xRRGGBB ``inputs``."""
    worst = 0
    for shift in (0, 8, 16):
        # Output byte k is channel k (R at bits 0-7); input channel R is bits 16-23.
        got = (outputs >> np.uint32(shift)) & np.uint32(0xFF)
        want = (inputs >> np.uint32(16 - shift)) & np.uint32(0xFF)
        worst = max(worst, int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()))
    return worst


def build_transform(
    source: IccProfile, target: IccProfile, intent: Intent
) -> ImageCms.ImageCmsTransform:
    from PIL import ImageCms

    try:
        return ImageCms.buildTransform(
            ImageCms.ImageCmsProfile(io.BytesIO(source.data)),
            ImageCms.ImageCmsProfile(io.BytesIO(target.data)),
            "RGB",
            "RGB",
            renderingIntent=ImageCms.Intent(int(intent)),
        )
    except ImageCms.PyCMSError as exc:
        raise ProfileError(
            None,
            f"LittleCMS cannot build a transform from {source.description!r} to "
            f"{target.description!r} with {intent.label} intent: {exc}",
        ) from None


def reference_transform(
    rgb: np.ndarray, source: IccProfile, target: IccProfile, intent: Intent
) -> np.ndarray:
    """LittleCMS applied directly, per pixel: the ground truth tests and verify compare to."""
    transform = build_transform(source, target, intent)
    from PIL import Image, ImageCms

    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB")
    result: np.ndarray = np.asarray(ImageCms.applyTransform(image, transform))
    return result
