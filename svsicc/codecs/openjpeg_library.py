"""Finding, loading and checking the OpenJPEG library for svsicc's binding (:mod:`.openjpeg`),
and the library's C ABI as ctypes declares it: struct layouts, callback types, signatures.

Nothing is loaded at import. :func:`candidates` lists ``SVSICC_OPENJPEG_LIBRARY`` when set (and
then only it), else the copy imagecodecs ships, else Pillow's, else the system's under its
per-platform names. :func:`load` takes the first that is OpenJPEG 2.1 or later (below 3) and
passes the layout probe: struct layouts follow ``openjpeg.h`` (unchanged from 2.1 to 2.5); the
defaults the library writes into ``opj_cparameters_t`` are checked at fields spread over the
whole struct, and the struct carries a guard tail that must come back untouched, so a library
with another layout is refused (:class:`OpenJpegUnavailable`, saying per candidate why) instead
of corrupting memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from svsicc.exceptions import CodecError

OPJ_PATH_LEN = 4096
OPJ_J2K_MAXRLVLS = 33
JPWL_MAX_NO_TILESPECS = 16
JPWL_MAX_NO_PACKSPECS = 16
GUARD = b"\xa5" * 4096  # absorbs (and reveals) a library whose parameter structs are larger
ENV_LIBRARY = "SVSICC_OPENJPEG_LIBRARY"
# 2.1 gave opj_cparameters_t its last fields (rsiz, max_cs_size); a 3 may break the ABI.
MIN_VERSION, BELOW_VERSION = (2, 1), (3, 0)
HOW_TO_FIX = (
    f"set {ENV_LIBRARY} to the path of an OpenJPEG 2.1 or later library "
    "(libopenjp2.so.7, libopenjp2.7.dylib or openjp2.dll)"
)

c_size_t = ctypes.c_size_t
c_int64 = ctypes.c_int64
c_uint32 = ctypes.c_uint32
c_int = ctypes.c_int


class OpenJpegError(CodecError):
    """OpenJPEG refused the input or failed; the message carries OpenJPEG's own words."""


class OpenJpegUnavailable(OpenJpegError):
    """No usable OpenJPEG library was found; the message says, per candidate, why."""


class PocStruct(ctypes.Structure):  # opj_poc_t
    _fields_ = [
        ("resno0", c_uint32),
        ("compno0", c_uint32),
        ("layno1", c_uint32),
        ("resno1", c_uint32),
        ("compno1", c_uint32),
        ("layno0", c_uint32),
        ("precno0", c_uint32),
        ("precno1", c_uint32),
        ("prg1", c_int),
        ("prg", c_int),
        ("progorder", ctypes.c_char * 5),
        ("tile", c_uint32),
        ("tx0", ctypes.c_int32),
        ("tx1", ctypes.c_int32),
        ("ty0", ctypes.c_int32),
        ("ty1", ctypes.c_int32),
        *[(name, c_uint32) for name in ("layS", "resS", "compS", "prcS")],
        *[(name, c_uint32) for name in ("layE", "resE", "compE", "prcE")],
        *[(name, c_uint32) for name in ("txS", "txE", "tyS", "tyE", "dx", "dy")],
        *[(name, c_uint32) for name in ("lay_t", "res_t", "comp_t", "prc_t", "tx0_t", "ty0_t")],
    ]


class CParameters(ctypes.Structure):  # opj_cparameters_t
    _fields_ = [
        ("tile_size_on", c_int),
        ("cp_tx0", c_int),
        ("cp_ty0", c_int),
        ("cp_tdx", c_int),
        ("cp_tdy", c_int),
        ("cp_disto_alloc", c_int),
        ("cp_fixed_alloc", c_int),
        ("cp_fixed_quality", c_int),
        ("cp_matrice", ctypes.c_void_p),
        ("cp_comment", ctypes.c_char_p),
        ("csty", c_int),
        ("prog_order", c_int),
        ("POC", PocStruct * 32),
        ("numpocs", c_uint32),
        ("tcp_numlayers", c_int),
        ("tcp_rates", ctypes.c_float * 100),
        ("tcp_distoratio", ctypes.c_float * 100),
        ("numresolution", c_int),
        ("cblockw_init", c_int),
        ("cblockh_init", c_int),
        ("mode", c_int),
        ("irreversible", c_int),
        ("roi_compno", c_int),
        ("roi_shift", c_int),
        ("res_spec", c_int),
        ("prcw_init", c_int * OPJ_J2K_MAXRLVLS),
        ("prch_init", c_int * OPJ_J2K_MAXRLVLS),
        ("infile", ctypes.c_char * OPJ_PATH_LEN),
        ("outfile", ctypes.c_char * OPJ_PATH_LEN),
        ("index_on", c_int),
        ("index", ctypes.c_char * OPJ_PATH_LEN),
        ("image_offset_x0", c_int),
        ("image_offset_y0", c_int),
        ("subsampling_dx", c_int),
        ("subsampling_dy", c_int),
        ("decod_format", c_int),
        ("cod_format", c_int),
        ("jpwl_epc_on", c_int),
        ("jpwl_hprot_MH", c_int),
        ("jpwl_hprot_TPH_tileno", c_int * JPWL_MAX_NO_TILESPECS),
        ("jpwl_hprot_TPH", c_int * JPWL_MAX_NO_TILESPECS),
        ("jpwl_pprot_tileno", c_int * JPWL_MAX_NO_PACKSPECS),
        ("jpwl_pprot_packno", c_int * JPWL_MAX_NO_PACKSPECS),
        ("jpwl_pprot", c_int * JPWL_MAX_NO_PACKSPECS),
        ("jpwl_sens_size", c_int),
        ("jpwl_sens_addr", c_int),
        ("jpwl_sens_range", c_int),
        ("jpwl_sens_MH", c_int),
        ("jpwl_sens_TPH_tileno", c_int * JPWL_MAX_NO_TILESPECS),
        ("jpwl_sens_TPH", c_int * JPWL_MAX_NO_TILESPECS),
        ("cp_cinema", c_int),
        ("max_comp_size", c_int),
        ("cp_rsiz", c_int),
        ("tp_on", ctypes.c_char),
        ("tp_flag", ctypes.c_char),
        ("tcp_mct", ctypes.c_char),
        ("jpip_on", c_int),
        ("mct_data", ctypes.c_void_p),
        ("max_cs_size", c_int),
        ("rsiz", ctypes.c_uint16),
    ]


class GuardedCParameters(ctypes.Structure):
    _fields_ = [("p", CParameters), ("guard", ctypes.c_char * len(GUARD))]


class GuardedDParameters(ctypes.Structure):
    """opj_dparameters_t is only ever filled with the library's defaults and passed back, so
    its fields are not declared: its 2 path buffers and a few ints fit in the space reserved."""

    _fields_ = [
        ("opaque", ctypes.c_char * (3 * OPJ_PATH_LEN + 1024)),
        ("guard", ctypes.c_char * len(GUARD)),
    ]


class ImageComp(ctypes.Structure):  # opj_image_comp_t
    _fields_ = [
        *[(name, c_uint32) for name in ("dx", "dy", "w", "h", "x0", "y0", "prec", "bpp")],
        ("sgnd", c_uint32),
        ("resno_decoded", c_uint32),
        ("factor", c_uint32),
        ("data", ctypes.POINTER(ctypes.c_int32)),
        ("alpha", ctypes.c_uint16),
    ]


class Image(ctypes.Structure):  # opj_image_t
    _fields_ = [
        ("x0", c_uint32),
        ("y0", c_uint32),
        ("x1", c_uint32),
        ("y1", c_uint32),
        ("numcomps", c_uint32),
        ("color_space", c_int),
        ("comps", ctypes.POINTER(ImageComp)),
        ("icc_profile_buf", ctypes.c_void_p),
        ("icc_profile_len", c_uint32),
    ]


class ImageCompParam(ctypes.Structure):  # opj_image_cmptparm_t
    _fields_ = [
        (name, c_uint32) for name in ("dx", "dy", "w", "h", "x0", "y0", "prec", "bpp", "sgnd")
    ]


# Sizes on 64-bit platforms (LP64 and Windows' LLP64: no field is a C long) as the header lays
# the structs out; checked when the library is loaded, not at import (see _platform_problem).
EXPECTED_SIZES = {PocStruct: 148, ImageComp: 64, Image: 48, ImageCompParam: 36}

MessageFn = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
ReadFn = ctypes.CFUNCTYPE(c_size_t, ctypes.c_void_p, c_size_t, ctypes.c_void_p)
WriteFn = ctypes.CFUNCTYPE(c_size_t, ctypes.c_void_p, c_size_t, ctypes.c_void_p)
SkipFn = ctypes.CFUNCTYPE(c_int64, c_int64, ctypes.c_void_p)
SeekFn = ctypes.CFUNCTYPE(c_int, c_int64, ctypes.c_void_p)


def system_names(system: str | None = None) -> tuple[str, ...]:
    """The names the dynamic loader knows OpenJPEG 2.x by, per platform (as openslide-python's
    lowlevel loads libopenslide): the versioned name first, as distributions install it."""
    system = platform.system() if system is None else system
    if system == "Windows":
        # vcpkg and conda name it openjp2.dll, MSYS2 libopenjp2-7.dll.
        return ("openjp2.dll", "libopenjp2-7.dll", "libopenjp2.dll")
    if system == "Darwin":
        return ("libopenjp2.7.dylib", "libopenjp2.dylib")
    return ("libopenjp2.so.7", "libopenjp2.so")


def _bundled() -> list[str]:
    """Copies shipped inside the wheels of imagecodecs, then Pillow: what a pip install has even
    without a system OpenJPEG (auditwheel's ``<dist>.libs``, delocate's ``<package>/.dylibs``,
    delvewheel's ``<dist>.libs``)."""
    out: list[str] = []
    for package, dist in (("imagecodecs", "imagecodecs"), ("PIL", "pillow")):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        folder = Path(spec.origin).resolve().parent
        for where in (folder.parent / f"{dist}.libs", folder / ".dylibs"):
            for pattern in ("libopenjp2*.so*", "libopenjp2*.dylib", "*openjp2*.dll"):
                out += sorted(str(path) for path in where.glob(pattern))
    return out


def candidates() -> list[str]:
    """Where :func:`library` looks, in order. ``SVSICC_OPENJPEG_LIBRARY`` (a path or a name the
    dynamic loader resolves), when set, is the only candidate: an explicit choice that fails
    must say so rather than fall back to another library."""
    override = os.environ.get(ENV_LIBRARY, "").strip()
    if override:
        return [override]
    out = [*_bundled(), *system_names()]
    found = ctypes.util.find_library("openjp2")
    if found:
        out.append(found)
    return list(dict.fromkeys(out))


def _declare(lib: ctypes.CDLL) -> None:
    vp = ctypes.c_void_p
    signatures: dict[str, tuple[object, list[object]]] = {
        "opj_version": (ctypes.c_char_p, []),
        "opj_set_default_encoder_parameters": (None, [vp]),
        "opj_set_default_decoder_parameters": (None, [vp]),
        "opj_create_compress": (vp, [c_int]),
        "opj_create_decompress": (vp, [c_int]),
        "opj_destroy_codec": (None, [vp]),
        "opj_setup_encoder": (c_int, [vp, vp, vp]),
        "opj_setup_decoder": (c_int, [vp, vp]),
        "opj_set_error_handler": (c_int, [vp, MessageFn, vp]),
        "opj_set_warning_handler": (c_int, [vp, MessageFn, vp]),
        "opj_set_info_handler": (c_int, [vp, MessageFn, vp]),
        "opj_image_create": (ctypes.POINTER(Image), [c_uint32, vp, c_int]),
        "opj_image_destroy": (None, [vp]),
        "opj_stream_create": (vp, [c_size_t, c_int]),
        "opj_stream_destroy": (None, [vp]),
        "opj_stream_set_read_function": (None, [vp, ReadFn]),
        "opj_stream_set_write_function": (None, [vp, WriteFn]),
        "opj_stream_set_skip_function": (None, [vp, SkipFn]),
        "opj_stream_set_seek_function": (None, [vp, SeekFn]),
        "opj_stream_set_user_data": (None, [vp, vp, vp]),
        "opj_stream_set_user_data_length": (None, [vp, ctypes.c_uint64]),
        "opj_start_compress": (c_int, [vp, vp, vp]),
        "opj_encode": (c_int, [vp, vp]),
        "opj_end_compress": (c_int, [vp, vp]),
        "opj_read_header": (c_int, [vp, vp, ctypes.POINTER(ctypes.POINTER(Image))]),
        "opj_decode": (c_int, [vp, vp, vp]),
        "opj_end_decompress": (c_int, [vp, vp]),
    }
    if hasattr(lib, "opj_codec_set_threads"):  # OpenJPEG 2.2 and later
        signatures["opj_codec_set_threads"] = (c_int, [vp, c_int])
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


def _layout_matches(lib: ctypes.CDLL) -> bool:
    """The library's encoder defaults land on the fields where this module declares them, and
    its struct has exactly the declared size: it clears every byte of ours (pre-filled with a
    marker) and writes nothing past them."""
    params = GuardedCParameters()
    ctypes.memset(ctypes.byref(params), 0x5A, ctypes.sizeof(CParameters))
    params.guard = GUARD
    lib.opj_set_default_encoder_parameters(ctypes.byref(params))
    p = params.p
    cleared = bytes(params)[: ctypes.sizeof(CParameters)].count(0x5A) == 0
    return (
        cleared
        and bytes(params.guard) == GUARD
        and (p.numresolution, p.cblockw_init, p.cblockh_init, p.prog_order) == (6, 64, 64, 0)
        and (p.roi_compno, p.subsampling_dx, p.subsampling_dy) == (-1, 1, 1)
        and (p.decod_format, p.cod_format, p.max_comp_size, p.rsiz) == (-1, -1, 0, 0)
        and p.tcp_numlayers == 0
        and p.max_cs_size == 0
    )


def parse_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of what ``opj_version()`` returns ("2.5.4"), None if unreadable."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _platform_problem() -> str | None:
    """Why this module's struct declarations cannot match OpenJPEG's here, if they cannot."""
    for struct, size in EXPECTED_SIZES.items():
        if ctypes.sizeof(struct) != size:
            return (
                f"{struct.__name__} is {ctypes.sizeof(struct)} bytes on this platform, not "
                f"{size}: the binding needs a 64-bit Python"
            )
    return None


@dataclass(frozen=True)
class Library:
    """A loaded OpenJPEG whose version is in range and whose struct layout matches."""

    cdll: ctypes.CDLL
    version: str
    path: str


def load(
    names: Sequence[str | os.PathLike[str]],
    minimum: tuple[int, int] = MIN_VERSION,
    below: tuple[int, int] = BELOW_VERSION,
) -> Library:
    """The first of ``names`` that loads, is OpenJPEG ``minimum`` <= version < ``below`` and
    passes the struct-layout probe; else :class:`OpenJpegUnavailable` saying, per candidate,
    why not."""
    problem = _platform_problem()
    if problem is not None:
        raise OpenJpegUnavailable(f"no usable OpenJPEG library: {problem}")
    tried = []
    override = os.environ.get(ENV_LIBRARY, "").strip()
    for name in names:
        shown = f"{ENV_LIBRARY}={name}" if override and str(name) == override else str(name)
        try:
            cdll = ctypes.CDLL(os.fspath(name))
        except OSError as exc:
            tried.append(f"{shown}: cannot load ({exc})")
            continue
        if not hasattr(cdll, "opj_version"):
            tried.append(f"{shown}: not OpenJPEG (no opj_version)")
            continue
        cdll.opj_version.restype = ctypes.c_char_p
        cdll.opj_version.argtypes = []
        text = (cdll.opj_version() or b"").decode("ascii", "replace")
        number = parse_version(text)
        if number is None or not minimum <= number[:2] < below:
            wanted = f"{minimum[0]}.{minimum[1]} or later, below {below[0]}.{below[1]}"
            tried.append(f"{shown}: OpenJPEG {text or '(no version)'}, need {wanted}")
            continue
        try:
            _declare(cdll)
        except AttributeError as exc:
            tried.append(f"{shown}: OpenJPEG {text} lacks a function the binding calls ({exc})")
            continue
        if not _layout_matches(cdll):
            tried.append(f"{shown}: OpenJPEG {text} lays out opj_cparameters_t differently")
            continue
        return Library(cdll, text, os.fspath(name))
    raise OpenJpegUnavailable(f"no usable OpenJPEG library: {'; '.join(tried) or 'none found'}")
