"""A small ctypes binding to OpenJPEG 2 for what imagecodecs cannot do: encode and decode raw
J2K codestreams whose components have different sampling (Aperio 33003 4:2:2 YCbCr), giving
every coding parameter of the COD marker (progression, code-blocks, precincts, SOP/EPH) and a
rate: a byte budget (OpenJPEG's rate mode, which meets it in one encode by its post-compression
rate-distortion allocation; imagecodecs cannot set it) or a target PSNR (its fixed-quality mode,
what imagecodecs' ``level`` sets).

The library is found, loaded and checked on first use (:mod:`.openjpeg_library`): without a
usable one only the codestreams that need this binding are refused.

Streams live in Python buffers reached through module-level callbacks keyed by an integer; a
key is removed only after the OpenJPEG stream using it has been destroyed, so no callback can
see a freed buffer. Errors OpenJPEG reports become :class:`OpenJpegError` with its message.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from svsicc.codecs.openjpeg_library import (
    ENV_LIBRARY,
    GUARD,
    HOW_TO_FIX,
    OPJ_J2K_MAXRLVLS,
    CParameters,
    GuardedCParameters,
    GuardedDParameters,
    Image,
    ImageCompParam,
    Library,
    MessageFn,
    OpenJpegError,
    OpenJpegUnavailable,
    ReadFn,
    SeekFn,
    SkipFn,
    WriteFn,
    candidates,
    load,
)

__all__ = [
    "ENV_LIBRARY",
    "HOW_TO_FIX",
    "Decoded",
    "EncodeOptions",
    "OpenJpegError",
    "OpenJpegUnavailable",
    "decode",
    "encode",
    "library",
    "version",
]

OPJ_CODEC_J2K = 0
OPJ_CLRSPC_UNSPECIFIED = 0
CSTY_PRECINCTS, CSTY_SOP, CSTY_EPH = 0x01, 0x02, 0x04
PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
CODEBLOCK_STYLES = 0x3F  # bypass, reset, terminate all, vertical causal, predictable, segsym
STREAM_CHUNK = 1 << 16
MAX_COMPONENTS = 4
MAX_SIDE = 1 << 16  # larger planes are not tiles; refusing them keeps allocations bounded
STREAM_FAILED = ctypes.c_size_t(-1).value


# --------------------------------------------------------------------------- stream state


@dataclass
class _Call:
    """One encode or decode: its byte buffer, position and OpenJPEG's error messages."""

    data: bytearray = field(default_factory=bytearray)
    position: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # An exception raised in a callback (KeyboardInterrupt included). ctypes cannot raise it
    # through C and would hand OpenJPEG an undefined return value; the callback returns failure
    # instead and the exception is re-raised once OpenJPEG has returned.
    exception: BaseException | None = None

    def reraise(self) -> None:
        if self.exception is not None:
            raise self.exception


def _guarded(failure: int | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a callback body; on any exception remember it on its call and return ``failure``."""

    def wrap(body: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(body)
        def callback(*args: Any) -> Any:
            try:
                return body(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised by encode/decode
                call = _call(args[-1])
                if call is not None and call.exception is None:
                    call.exception = exc
                return failure

        return callback

    return wrap


_calls: dict[int, _Call] = {}
_keys = itertools.count(1)
_keys_lock = threading.Lock()


def _call(user_data: int | None) -> _Call | None:
    return _calls.get(user_data or 0)


@_guarded(None)
def _on_error(message: bytes | None, user_data: int | None) -> None:
    call = _call(user_data)
    if call is not None and message:
        call.errors.append(message.decode("utf-8", "replace").strip())


@_guarded(None)
def _on_warning(message: bytes | None, user_data: int | None) -> None:
    call = _call(user_data)
    if call is not None and message:
        call.warnings.append(message.decode("utf-8", "replace").strip())


def _ignore(message: bytes | None, user_data: int | None) -> None:
    return None


@_guarded(STREAM_FAILED)
def _read(buffer: int | None, size: int, user_data: int | None) -> int:
    call = _call(user_data)
    if call is None or not buffer:
        return STREAM_FAILED
    count = min(size, len(call.data) - call.position)
    if count <= 0:
        return STREAM_FAILED
    chunk = (ctypes.c_char * count).from_buffer(call.data, call.position)
    ctypes.memmove(buffer, chunk, count)
    call.position += count
    return count


@_guarded(STREAM_FAILED)
def _write(buffer: int | None, size: int, user_data: int | None) -> int:
    call = _call(user_data)
    if call is None or not buffer:
        return STREAM_FAILED
    end = call.position + size
    if end > len(call.data):
        call.data.extend(bytes(end - len(call.data)))
    call.data[call.position : end] = ctypes.string_at(buffer, size)
    call.position = end
    return size


@_guarded(-1)
def _skip(offset: int, user_data: int | None) -> int:
    call = _call(user_data)
    if call is None:
        return -1
    target = call.position + offset
    if target < 0:
        return -1
    call.position = target
    return offset


@_guarded(0)
def _seek(offset: int, user_data: int | None) -> int:
    call = _call(user_data)
    if call is None or offset < 0:
        return 0
    call.position = offset
    return 1


# Module-level objects: ctypes keeps a callback alive only as long as its Python object.
_ON_ERROR = MessageFn(_on_error)
_IGNORE = MessageFn(_ignore)
_ON_WARNING = MessageFn(_on_warning)
_READ = ReadFn(_read)
_WRITE = WriteFn(_write)
_SKIP = SkipFn(_skip)
_SEEK = SeekFn(_seek)


@cache
def _loaded() -> Library:
    return load(candidates())


def library() -> ctypes.CDLL:
    """The OpenJPEG the binding uses (see :func:`candidates` and :func:`load`), loaded on first
    use; :class:`OpenJpegUnavailable` when none is usable."""
    return _loaded().cdll


def version() -> str:
    """The version of the OpenJPEG the binding uses ("2.5.4")."""
    return _loaded().version


# --------------------------------------------------------------------------- encode


@dataclass(frozen=True)
class EncodeOptions:
    """What goes into the COD marker, plus the rate: ``psnr``, the target PSNR in dB of OpenJPEG's
    fixed-quality mode, or when it is 0, ``ratio``, the compression ratio of its rate mode (the
    raw bytes, every component counted at the first one's sampling, as OpenJPEG counts them,
    over the codestream's bytes, headers included); a ratio of 1 or less is every bit plane,
    i.e. lossless with the 5/3 wavelet."""

    reversible: bool
    resolutions: int
    psnr: float = 0.0
    ratio: float = 0.0
    mct: bool = False
    progression: int = 0  # LRCP, RLCP, RPCL, PCRL, CPRL
    codeblock: tuple[int, int] = (64, 64)
    codeblock_style: int = 0
    precincts: tuple[tuple[int, int], ...] = ()  # (width, height) per resolution, lowest first
    sop: bool = False
    eph: bool = False


@dataclass(frozen=True)
class Decoded:
    """Component planes as decoded (int32, rows x columns of each component) and their
    subsampling factors on the reference grid."""

    width: int
    height: int
    planes: tuple[np.ndarray, ...]
    subsampling: tuple[tuple[int, int], ...]
    # What OpenJPEG warned about while decoding: it decodes a truncated or damaged codestream
    # as far as it can and only warns, so a caller that wants the whole image must look here.
    warnings: tuple[str, ...] = ()


def _check_planes(
    planes: Sequence[np.ndarray], width: int, height: int, subsampling: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    if not 1 <= len(planes) <= MAX_COMPONENTS or len(subsampling) != len(planes):
        raise OpenJpegError(
            f"need 1 to {MAX_COMPONENTS} planes with one subsampling each, "
            f"got {len(planes)} and {len(subsampling)}"
        )
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise OpenJpegError(f"image size {width}x{height} is empty or too large")
    out = []
    for index, (plane, (dx, dy)) in enumerate(zip(planes, subsampling, strict=True)):
        if not (1 <= dx <= 255 and 1 <= dy <= 255):
            raise OpenJpegError(f"component {index}: subsampling {dx}x{dy} out of 1..255")
        expected = (-(-height // dy), -(-width // dx))
        array = np.asarray(plane)
        if array.dtype != np.uint8 or array.shape != expected:
            raise OpenJpegError(
                f"component {index}: need a {expected[0]}x{expected[1]} uint8 plane, "
                f"got {array.shape} {array.dtype}"
            )
        out.append(np.ascontiguousarray(array, dtype=np.int32))
    return out


def _set_parameters(params: CParameters, options: EncodeOptions, components: int) -> None:
    if not 1 <= options.resolutions <= OPJ_J2K_MAXRLVLS:
        raise OpenJpegError(f"{options.resolutions} resolutions; OpenJPEG allows 1 to 33")
    # OpenJPEG accepts these unchecked and writes a stream that does not say what was asked.
    if options.progression not in range(len(PROGRESSIONS)):
        raise OpenJpegError(f"unknown progression order {options.progression}")
    if options.codeblock_style & ~CODEBLOCK_STYLES:
        raise OpenJpegError(
            f"code-block style 0x{options.codeblock_style:02X} has bits OpenJPEG cannot encode "
            "(high-throughput or reserved)"
        )
    if not (options.psnr >= 0 and options.ratio >= 0):  # NaN included
        raise OpenJpegError(f"rate psnr={options.psnr} ratio={options.ratio}: need >= 0")
    params.tcp_numlayers = 1
    if options.psnr > 0:
        params.cp_fixed_quality = 1
        params.tcp_distoratio[0] = options.psnr
    else:
        params.cp_disto_alloc = 1
        # OpenJPEG itself takes a ratio of 1 or less as every bit plane.
        params.tcp_rates[0] = options.ratio if options.ratio > 1 else 0.0
    params.irreversible = 0 if options.reversible else 1
    params.numresolution = options.resolutions
    params.tcp_mct = b"\x01" if options.mct and components >= 3 else b"\x00"
    params.prog_order = options.progression
    params.cblockw_init, params.cblockh_init = options.codeblock
    params.mode = options.codeblock_style
    csty = (CSTY_SOP if options.sop else 0) | (CSTY_EPH if options.eph else 0)
    if options.precincts:
        csty |= CSTY_PRECINCTS
        # OpenJPEG takes the sizes highest resolution first.
        ordered = list(reversed(options.precincts))[:OPJ_J2K_MAXRLVLS]
        params.res_spec = len(ordered)
        for index, (width, height) in enumerate(ordered):
            params.prcw_init[index] = width
            params.prch_init[index] = height
    params.csty = csty


def encode(
    planes: Sequence[np.ndarray],
    width: int,
    height: int,
    subsampling: Sequence[tuple[int, int]],
    options: EncodeOptions,
) -> bytes:
    """A raw J2K codestream of 8-bit unsigned ``planes``; component i has
    ceil(height / dy_i) x ceil(width / dx_i) samples (``subsampling[i] = (dx_i, dy_i)``)."""
    samples = _check_planes(planes, width, height, subsampling)
    lib = library()
    params = GuardedCParameters()
    params.guard = GUARD
    lib.opj_set_default_encoder_parameters(ctypes.byref(params))
    _set_parameters(params.p, options, len(samples))

    component_params = (ImageCompParam * len(samples))()
    for param, plane, (dx, dy) in zip(component_params, samples, subsampling, strict=True):
        param.dx, param.dy = dx, dy
        param.h, param.w = plane.shape
        param.prec = param.bpp = 8
        param.sgnd = 0
    with _keys_lock:
        key = next(_keys)
    call = _calls[key] = _Call()
    image = codec = stream = None
    try:
        image = lib.opj_image_create(
            len(samples), ctypes.byref(component_params), OPJ_CLRSPC_UNSPECIFIED
        )
        if not image:
            raise OpenJpegError("opj_image_create failed (out of memory?)")
        image.contents.x0 = image.contents.y0 = 0
        image.contents.x1, image.contents.y1 = width, height
        for index, plane in enumerate(samples):
            comp = image.contents.comps[index]
            if not comp.data or (comp.h, comp.w) != plane.shape:
                raise OpenJpegError(f"OpenJPEG laid out component {index} differently")
            ctypes.memmove(comp.data, plane.ctypes.data, plane.nbytes)
        codec = lib.opj_create_compress(OPJ_CODEC_J2K)
        if not codec:
            raise OpenJpegError("opj_create_compress failed")
        _handlers(lib, codec, key)
        _single_thread(lib, codec)
        stream = _stream(lib, key, is_input=False)
        ok = (
            lib.opj_setup_encoder(codec, ctypes.byref(params), image)
            and lib.opj_start_compress(codec, image, stream)
            and lib.opj_encode(codec, stream)
            and lib.opj_end_compress(codec, stream)
        )
        call.reraise()
        if not ok or call.errors:
            raise OpenJpegError(_explain("encode", call))
        if bytes(params.guard) != GUARD:
            raise OpenJpegError("OpenJPEG wrote past its parameters: layout mismatch")
        return bytes(call.data)
    finally:
        if stream:
            lib.opj_stream_destroy(stream)
        if codec:
            lib.opj_destroy_codec(codec)
        if image:
            lib.opj_image_destroy(image)
        del _calls[key]


def decode(data: bytes, expected: tuple[int, int] | None = None) -> Decoded:
    """Decode a raw J2K codestream of unsigned components of up to 8 bits; ``expected``
    (width, height) is checked against the header before anything is decoded."""
    lib = library()
    if len(data) < 4 or data[:2] != b"\xff\x4f":
        raise OpenJpegError("not a raw JPEG 2000 codestream (no SOC marker)")
    params = GuardedDParameters()
    params.guard = GUARD
    lib.opj_set_default_decoder_parameters(ctypes.byref(params))
    if bytes(params.guard) != GUARD:
        raise OpenJpegUnavailable("OpenJPEG's opj_dparameters_t is larger than expected")
    with _keys_lock:
        key = next(_keys)
    call = _calls[key] = _Call(data=bytearray(data))
    image = ctypes.POINTER(Image)()
    codec = stream = None
    try:
        codec = lib.opj_create_decompress(OPJ_CODEC_J2K)
        if not codec:
            raise OpenJpegError("opj_create_decompress failed")
        _handlers(lib, codec, key)
        _single_thread(lib, codec)
        stream = _stream(lib, key, is_input=True)
        lib.opj_stream_set_user_data_length(stream, len(data))
        ok = lib.opj_setup_decoder(codec, ctypes.byref(params)) and lib.opj_read_header(
            stream, codec, ctypes.byref(image)
        )
        call.reraise()
        if not ok or not image:
            raise OpenJpegError(_explain("read the header of", call))
        # Checked before decoding: OpenJPEG allocates what the header claims (gigabytes).
        _check_header(image.contents, expected)
        decoded = lib.opj_decode(codec, stream, image) and lib.opj_end_decompress(codec, stream)
        call.reraise()
        if not decoded:
            raise OpenJpegError(_explain("decode", call))
        return dataclasses.replace(_unpack(image.contents), warnings=tuple(call.warnings))
    finally:
        if stream:
            lib.opj_stream_destroy(stream)
        if codec:
            lib.opj_destroy_codec(codec)
        if image:
            lib.opj_image_destroy(image)
        del _calls[key]


def _single_thread(lib: ctypes.CDLL, codec: int) -> None:
    # 0: code in the calling thread (1 would start one worker thread); the pool parallelises.
    # Before 2.2 OpenJPEG had no threads and no such function.
    if hasattr(lib, "opj_codec_set_threads"):
        lib.opj_codec_set_threads(codec, 0)


def _handlers(lib: ctypes.CDLL, codec: int, key: int) -> None:
    lib.opj_set_error_handler(codec, _ON_ERROR, key)
    lib.opj_set_warning_handler(codec, _ON_WARNING, key)
    lib.opj_set_info_handler(codec, _IGNORE, None)


def _stream(lib: ctypes.CDLL, key: int, *, is_input: bool) -> int:
    stream = lib.opj_stream_create(STREAM_CHUNK, 1 if is_input else 0)
    if not stream:
        raise OpenJpegError("opj_stream_create failed")
    if is_input:
        lib.opj_stream_set_read_function(stream, _READ)
    else:
        lib.opj_stream_set_write_function(stream, _WRITE)
    lib.opj_stream_set_skip_function(stream, _SKIP)
    lib.opj_stream_set_seek_function(stream, _SEEK)
    lib.opj_stream_set_user_data(stream, key, None)
    return int(stream)


def _explain(action: str, call: _Call) -> str:
    detail = "; ".join(call.errors[:3]) or "no message"
    return f"OpenJPEG could not {action} the codestream: {detail}"


def _check_header(image: Image, expected: tuple[int, int] | None) -> None:
    width, height = image.x1 - image.x0, image.y1 - image.y0
    if expected is not None and (width, height) != expected:
        raise OpenJpegError(
            f"codestream header says {width}x{height}, expected {expected[0]}x{expected[1]}"
        )
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise OpenJpegError(f"codestream header says {width}x{height}")
    if not 1 <= image.numcomps <= MAX_COMPONENTS or not image.comps:
        raise OpenJpegError(f"codestream header says {image.numcomps} components")
    for index in range(image.numcomps):
        comp = image.comps[index]
        if comp.prec > 8 or comp.sgnd:
            raise OpenJpegError(f"component {index} is {comp.prec}-bit signed={comp.sgnd}")


def _unpack(image: Image) -> Decoded:
    """The decoded planes; size, component count and precision were checked on the header."""
    width, height = image.x1 - image.x0, image.y1 - image.y0
    planes, factors = [], []
    for index in range(image.numcomps):
        comp = image.comps[index]
        expected = (-(-height // max(comp.dy, 1)), -(-width // max(comp.dx, 1)))
        if not comp.data or (comp.h, comp.w) != expected or comp.factor:
            raise OpenJpegError(f"component {index} decoded to {comp.w}x{comp.h}, no data")
        count = comp.w * comp.h
        plane = np.ctypeslib.as_array(comp.data, shape=(count,)).reshape(comp.h, comp.w).copy()
        planes.append(plane)
        factors.append((int(comp.dx), int(comp.dy)))
    return Decoded(width, height, tuple(planes), tuple(factors))
