"""JPEG 2000 tiles (Aperio compression 33003 and 33005): decode with OpenJPEG (imagecodecs), and
re-encode so the new codestream means what the old one meant.

* 33005 stores RGB; the codestream may carry the irreversible/reversible colour transform (MCT).
* 33003 stores YCbCr samples with no codestream colour transform, converted as OpenSlide
  converts them (:mod:`.j2k_ycbcr`).

Every tile keeps the source's wavelet (reversible 5/3 stays lossless, irreversible 9/7 stays 9/7),
number of decomposition levels, MCT flag, component count and image size.

Lossy tiles are encoded once, through svsicc's own OpenJPEG binding (:mod:`.openjpeg`) in
OpenJPEG's rate mode at the source tile's byte count, with the source's coding style
(progression, code-blocks, precincts, SOP/EPH) in one quality layer: how ``svsicc verify`` builds
its floor, and one encode where a search of imagecodecs' target PSNR took 1.6-2.1. Sources under
SHORT_SOURCE_BYTES (glass, edge tiles that are mostly padding), where rate mode misses, and every
lossy tile when the binding does not load, are rated by :class:`~.j2k_rate.RateControl` as
before (imagecodecs for 4:4:4). Lossless 4:4:4 tiles are written by imagecodecs (one quality
layer, 64x64 code-blocks). Whatever wrote a stream, the source's COD segment is spliced in when
the two are packet-for-packet equivalent (:mod:`.j2k_codestream`).

The codec is an ``AdaptiveCodec`` for RateControl's sake: the engine fits the page model on a
sample of the page's tiles, then starts every batch of tiles from that model (without the
sample's debt), so the bytes are the same for any worker count.

Chroma-subsampled 33003 (Cb and Cr at XRsiz 2, "4:2:2", as some Aperio scanners write, or also
YRsiz 2, 4:2:0) needs the binding whatever its rate, because imagecodecs can neither write
subsampled components nor return them unconverted. Decoding replicates each
chroma sample over its block and converts as above, which is exactly what OpenSlide shows.
Encoding keeps the SIZ's sampling and the COD's wavelet, levels, progression, code-blocks,
precincts and SOP/EPH (in one quality layer): with shared chroma the exact transform output is
not reachable. Other subsampled layouts (33005, subsampled Y, odd tile sizes) are refused.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import imagecodecs
import numpy as np

from svsicc.codecs import openjpeg
from svsicc.codecs.codes import Compression
from svsicc.codecs.j2k_codestream import (
    COM,
    CodestreamHeader,
    Jpeg2000FormatError,
    equivalent_cod,
    main_header_segments,
    parse_header,
)
from svsicc.codecs.j2k_rate import CHECK_BELOW_BYTES, RateControl
from svsicc.codecs.j2k_ycbcr import (
    rgb_from_ycbcr,
    subsampled_ycbcr,
    subsampled_ycbcr_for_openslide,
    upsample_chroma,
    ycbcr_for_openslide,
    ycbcr_rounded,
)
from svsicc.codecs.pixels import rgb_from_layout
from svsicc.exceptions import UnsupportedLayoutError

__all__ = [
    "CodestreamHeader",
    "Jpeg2000Codec",
    "Jpeg2000FormatError",
    "Jpeg2000Settings",
    "RateControl",
    "encoded_by_binding",
    "equivalent_cod",
    "parse_header",
    "parse_settings",
    "rgb_from_ycbcr",
    "subsampled_ycbcr_for_openslide",
    "upsample_chroma",
]


@dataclass(frozen=True)
class Jpeg2000Settings:
    """How to re-encode one kind of tile so it matches the source codestream."""

    header: CodestreamHeader
    ycbcr: bool  # the samples are YCbCr (33003) converted by the reader
    lossless: bool
    chroma: tuple[int, int] | None = None  # (dx, dy) of subsampled Cb/Cr; None: 4:4:4

    @property
    def mct(self) -> bool:
        return self.header.coding.mct != 0

    @property
    def resolutions(self) -> int:
        return self.header.coding.levels + 1


# Sources shorter than this (blank glass, edge tiles that are mostly padding) are rated as
# without the binding, by RateControl's checked search: at a ~200-byte budget OpenJPEG's rate
# mode spends the stream on headers and lets the DC drift, e.g. a uniform glass tile of 189
# source bytes came out at 201 bytes one level off (the floor's encode was exact), and two
# nearly blank ones at 49.8 dB against a 61.3 dB floor, over verify's per-tile dE2000 margin.
SHORT_SOURCE_BYTES = CHECK_BELOW_BYTES

SUPPORTED_CHROMA = frozenset({(2, 1), (2, 2)})  # 4:2:2 and 4:2:0


def _chroma_factors(header: CodestreamHeader, compression: int) -> tuple[int, int] | None:
    """(dx, dy) of Cb and Cr when the tile is subsampled YCbCr svsicc can reproduce: Y at full
    resolution, Cb and Cr alike, a tile size the factors divide (OpenSlide derives the factor
    from the plane widths, so odd sizes would read wrongly anyway)."""
    if compression != Compression.JPEG2000_YCBCR or len(header.components) != 3:
        return None
    y, cb, cr = ((c.dx, c.dy) for c in header.components)
    if y != (1, 1) or cb != cr or cb not in SUPPORTED_CHROMA:
        return None
    if header.width % cb[0] or header.height % cb[1]:
        return None
    return cb


def parse_settings(data: bytes, compression: int) -> Jpeg2000Settings:
    header = parse_header(data)
    if len(header.components) != 3:
        raise UnsupportedLayoutError(
            None, f"JPEG 2000 tile with {len(header.components)} components; only 3 are supported"
        )
    if any(c.precision != 8 or c.signed for c in header.components):
        raise UnsupportedLayoutError(
            None, "JPEG 2000 tile samples are not 8-bit unsigned; only 8-bit RGB is supported"
        )
    chroma = _chroma_factors(header, compression) if header.subsampled else None
    if header.subsampled and chroma is None:
        factors = ", ".join(f"{c.dx}x{c.dy}" for c in header.components)
        raise UnsupportedLayoutError(
            None,
            f"JPEG 2000 tile with component subsampling {factors} cannot be re-encoded "
            "faithfully: only 33003 YCbCr with full-resolution Y and Cb/Cr subsampled 2x1 "
            "(4:2:2) or 2x2 (4:2:0), on a tile of even size, is supported",
            hint="the slide is left as it was",
        )
    if header.image_offset != (0, 0) or header.tile_offset != (0, 0):
        raise UnsupportedLayoutError(
            None, "JPEG 2000 tile with a non-zero image or tile origin is not supported"
        )
    if header.tile_size[0] < header.width or header.tile_size[1] < header.height:
        raise UnsupportedLayoutError(
            None, "JPEG 2000 tile split into several codestream tiles is not supported"
        )
    return Jpeg2000Settings(
        header=header,
        ycbcr=compression == Compression.JPEG2000_YCBCR,
        lossless=header.coding.reversible,
        chroma=chroma,
    )


def _check_damage(decoded: openjpeg.Decoded) -> None:
    # OpenJPEG decodes what it can of a damaged codestream and warns about the rest.
    if decoded.warnings:
        raise Jpeg2000FormatError(f"damaged data, OpenJPEG: {decoded.warnings[0]}")


def encoded_by_binding(stream: bytes | memoryview) -> bool:
    """Whether a tile svsicc encoded came from its OpenJPEG binding whenever that loads (the
    caller asks whether it does): every lossy (9/7) tile goes through it, and only it writes
    subsampled components (imagecodecs cannot). Reads the main header only."""
    try:
        header = parse_header(bytes(stream))
    except Jpeg2000FormatError:
        return False
    return header.subsampled or not header.coding.reversible


def _real_psnr(encoded: tuple[np.ndarray, ...], stream: bytes) -> float:
    """PSNR of ``stream`` decoded against the samples it was encoded from: planes of any
    subsampling (svsicc's binding) or one (rows, cols, 3) array (imagecodecs)."""
    if len(encoded) == 1:
        decoded: tuple[np.ndarray, ...] = (imagecodecs.jpeg2k_decode(stream, numthreads=1),)
    else:
        decoded = openjpeg.decode(stream).planes
    squared = sum(
        float(np.square(d.astype(np.int32) - e.astype(np.int32), dtype=np.int64).sum())
        for d, e in zip(decoded, encoded, strict=True)
    )
    mse = squared / sum(e.size for e in encoded)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _binding_unavailable(exc: openjpeg.OpenJpegUnavailable) -> UnsupportedLayoutError:
    """Only chroma-subsampled tiles need the binding: they are refused, everything else works."""
    return UnsupportedLayoutError(
        None,
        f"a JPEG 2000 tile with subsampled chroma needs svsicc's OpenJPEG binding: {exc}",
        hint=openjpeg.HOW_TO_FIX,
    )


class Jpeg2000Codec:
    """Decode to RGB and encode from any layout, reproducing the source tile's codestream."""

    lossless = False  # per stream: True once a 5/3 (reversible) tile has been seen
    decoded_layout = "RGB"  # OpenJPEG's components, interleaved

    def __init__(self, compression: int) -> None:
        if compression not in (Compression.JPEG2000_YCBCR, Compression.JPEG2000_RGB):
            raise ValueError(f"compression {compression} is not Aperio JPEG 2000")
        self.compression = compression
        self.rate = RateControl()  # only without the binding
        self._binding: bool | None = None
        self._settings: dict[bytes, Jpeg2000Settings] = {}

    # AdaptiveCodec: the rate control's model of the page is what steers later encodes.
    def learned_state(self) -> object:
        """The model of the page, without its debt: every batch starts from this state, and a
        surplus carried into each would be repaid once per batch."""
        state = copy.deepcopy(self.rate)
        state.written_bytes = state.source_bytes
        return state

    def restore_state(self, state: object) -> None:
        if not isinstance(state, RateControl):
            raise TypeError(f"not a JPEG 2000 rate-control state: {type(state).__name__}")
        self.rate = copy.deepcopy(state)

    def settings_for(self, data: bytes) -> Jpeg2000Settings:
        try:
            segments = main_header_segments(data)
        except Jpeg2000FormatError:
            return parse_settings(data, self.compression)  # raises with the precise reason
        # COM markers differ from tile to tile (Kakadu logs per-tile rates there).
        key = b"".join(data[s - 4 : e] for m, s, e in segments if m != COM)
        settings = self._settings.get(key)
        if settings is None:
            settings = parse_settings(data, self.compression)
            self._settings[key] = settings
            self.lossless = settings.lossless
        return settings

    def decode(self, data: bytes, rows: int, cols: int) -> np.ndarray:
        settings = self.settings_for(data)
        header = settings.header
        if (header.width, header.height) != (cols, rows):
            raise Jpeg2000FormatError(
                f"codestream is {header.width}x{header.height}, the tile is {cols}x{rows}"
            )
        if settings.chroma is not None:
            return rgb_from_ycbcr(self._decode_subsampled(data, settings))
        samples = self._decode_full(data, settings)
        if samples.shape != (rows, cols, 3) or samples.dtype != np.uint8:
            raise Jpeg2000FormatError(f"decodes to {samples.shape} {samples.dtype}")
        return rgb_from_ycbcr(samples) if settings.ycbcr else samples

    def binding_loads(self) -> bool:
        """Whether svsicc's OpenJPEG binding is usable here (asked once per codec: a failed
        load is not cached by the binding and would search the candidates for every tile)."""
        if self._binding is None:
            try:
                openjpeg.library()
            except openjpeg.OpenJpegUnavailable:
                self._binding = False
            else:
                self._binding = True
        return self._binding

    def encode(self, pixels: np.ndarray, layout: str, source: bytes) -> bytes:
        """Encode uint8 pixels in ``layout`` ("RGB", "RGBX" or "BGRX")."""
        settings = self.settings_for(source)
        rgb = rgb_from_layout(pixels, layout)
        encode_at: Callable[[float], bytes]
        encoded: tuple[np.ndarray, ...]  # the samples as encoded, component by component
        planes: tuple[np.ndarray, ...]  # the same, one plane per component
        if settings.chroma is not None:
            make_planes = subsampled_ycbcr_for_openslide if settings.lossless else subsampled_ycbcr
            encoded = make_planes(rgb, settings.chroma)
            planes = encoded
            encode_at = functools.partial(self._encode_openjpeg, encoded, settings)
        else:
            if settings.ycbcr:
                samples = ycbcr_for_openslide(rgb) if settings.lossless else ycbcr_rounded(rgb)
            else:
                samples = rgb
            encoded = (samples,)
            planes = tuple(samples[..., k] for k in range(samples.shape[2]))
            encode_at = functools.partial(self._encode, samples, settings)
        if settings.lossless:
            return self._finish(encode_at(0.0), settings)
        if self.binding_loads() and len(source) >= SHORT_SOURCE_BYTES:
            return self._finish(self._encode_at_length(planes, settings, len(source)), settings)
        # Without the binding imagecodecs offers only a target PSNR, searched per tile; short
        # tiles need that search's checks anyway (see SHORT_SOURCE_BYTES).
        psnr_of = functools.partial(_real_psnr, encoded)
        return self._finish(self.rate.encode(encode_at, len(source), psnr_of), settings)

    @staticmethod
    def _encode_at_length(
        planes: tuple[np.ndarray, ...], settings: Jpeg2000Settings, length: int
    ) -> bytes:
        """One encode in OpenJPEG's rate mode at ``length`` bytes, the source tile's: as the
        floor ``svsicc verify`` judges by is made (one encode of the ideal at the original
        tile's byte count), and as the source gave each tile its bytes."""
        header = settings.header
        raw = len(header.components) * header.width * header.height  # as OpenJPEG counts it
        return Jpeg2000Codec._encode_openjpeg(
            planes, settings, 0.0, ratio=max(1.0, raw / max(length, 1))
        )

    def _encode(self, samples: np.ndarray, settings: Jpeg2000Settings, level: float) -> bytes:
        try:
            encoded = imagecodecs.jpeg2k_encode(
                samples,
                # OpenJPEG takes the target PSNR as a float (imagecodecs passes it through to
                # tcp_distoratio); the type stub's int is narrower than the function.
                level=cast(int, level),
                codecformat="J2K",
                reversible=settings.lossless,
                mct=settings.mct,
                resolutions=settings.resolutions,
                numthreads=1,  # parallelism comes from the worker pool; threads cost more here
            )
        except imagecodecs.Jpeg2kError as exc:
            raise Jpeg2000FormatError(f"OpenJPEG cannot encode it: {exc}") from None
        return bytes(encoded)

    @staticmethod
    def _decode_full(data: bytes, settings: Jpeg2000Settings) -> np.ndarray:
        """(rows, cols, 3) samples of a codestream without subsampling.

        Through svsicc's binding, which hears OpenJPEG's errors and warnings (imagecodecs
        reports neither: "opj_decode failed" is all it says); through imagecodecs when the
        binding is unavailable. Both run the same OpenJPEG and give the same samples.
        """
        try:
            decoded = openjpeg.decode(data, (settings.header.width, settings.header.height))
        except openjpeg.OpenJpegUnavailable:
            try:
                return imagecodecs.jpeg2k_decode(data, numthreads=1)
            except (imagecodecs.Jpeg2kError, ValueError) as exc:
                raise Jpeg2000FormatError(f"OpenJPEG cannot decode it: {exc}") from None
        except openjpeg.OpenJpegError as exc:
            raise Jpeg2000FormatError(exc.problem) from None
        _check_damage(decoded)
        if len(decoded.planes) != 3:
            raise Jpeg2000FormatError(f"decodes to {len(decoded.planes)} components, not 3")
        return np.dstack([np.clip(p, 0, 255).astype(np.uint8) for p in decoded.planes])

    @staticmethod
    def _decode_subsampled(data: bytes, settings: Jpeg2000Settings) -> np.ndarray:
        """YCbCr samples at full resolution, chroma replicated as OpenSlide does.
        (imagecodecs would convert subsampled YCbCr to RGB its own way.)"""
        try:
            decoded = openjpeg.decode(data, (settings.header.width, settings.header.height))
        except openjpeg.OpenJpegUnavailable as exc:
            raise _binding_unavailable(exc) from None
        except openjpeg.OpenJpegError as exc:
            raise Jpeg2000FormatError(exc.problem) from None
        _check_damage(decoded)
        header = settings.header
        wanted = tuple((c.dx, c.dy) for c in header.components)
        if (decoded.width, decoded.height) != (header.width, header.height) or (
            decoded.subsampling != wanted
        ):
            raise Jpeg2000FormatError(
                f"decodes to {decoded.width}x{decoded.height} with subsampling "
                f"{decoded.subsampling}, the header says {header.width}x{header.height} {wanted}"
            )
        planes = tuple(np.clip(p, 0, 255).astype(np.uint8) for p in decoded.planes)
        assert settings.chroma is not None
        return upsample_chroma(planes, settings.chroma)

    @staticmethod
    def _encode_openjpeg(
        planes: tuple[np.ndarray, ...],
        settings: Jpeg2000Settings,
        level: float,
        ratio: float = 0.0,
    ) -> bytes:
        """Encode with the source's coding style (progression, code-blocks, precincts, SOP/EPH,
        code-block style) and component sampling, in one quality layer: at the target PSNR
        ``level``, or when that is 0 at the compression ``ratio`` (see EncodeOptions)."""
        header = settings.header
        coding = header.coding
        cbw, cbh = coding.codeblock_exponents
        options = openjpeg.EncodeOptions(
            reversible=coding.reversible,
            resolutions=coding.levels + 1,
            psnr=0.0 if settings.lossless else level,
            ratio=0.0 if settings.lossless else ratio,
            mct=coding.mct != 0,
            progression=coding.progression,
            codeblock=(1 << cbw, 1 << cbh),
            codeblock_style=coding.codeblock_style,
            precincts=tuple((1 << x, 1 << y) for x, y in coding.precinct_exponents)
            if coding.precincts_signalled
            else (),
            sop=coding.sop,
            eph=coding.eph,
        )
        factors = [(c.dx, c.dy) for c in header.components]
        try:
            return openjpeg.encode(planes, header.width, header.height, factors, options)
        except openjpeg.OpenJpegUnavailable as exc:
            raise _binding_unavailable(exc) from None
        except openjpeg.OpenJpegError as exc:
            raise UnsupportedLayoutError(
                None, f"cannot re-encode a JPEG 2000 tile with {header.summary()}: {exc}"
            ) from None

    def _finish(self, stream: bytes, settings: Jpeg2000Settings) -> bytes:
        """Check the encoder kept the source's parameters; give it the source's COD if that is
        packet-equivalent."""
        ours = parse_header(stream)
        source = settings.header
        kept = (
            ours.coding.reversible == source.coding.reversible
            and ours.coding.levels == source.coding.levels
            and ours.coding.mct == source.coding.mct
            and (ours.width, ours.height) == (source.width, source.height)
            and [(c.dx, c.dy) for c in ours.components] == [(c.dx, c.dy) for c in source.components]
        )
        if not kept:
            raise UnsupportedLayoutError(
                None,
                f"cannot re-encode a JPEG 2000 tile with {source.summary()}: the encoder "
                f"wrote {ours.summary()}",
            )
        cod = equivalent_cod(ours, source)
        if cod is None or cod == ours.cod_segment:
            return stream
        start = stream.index(ours.cod_segment)
        return stream[:start] + cod + stream[start + len(ours.cod_segment) :]
