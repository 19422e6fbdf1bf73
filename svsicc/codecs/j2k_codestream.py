"""JPEG 2000 codestream main headers (SIZ, COD) as Aperio 33003 / 33005 tiles carry them: parsed,
summarised, and compared so the encoder's COD can be replaced by the source's when the two are
packet-for-packet equivalent (one layer, one precinct per resolution, resolution-major
progression), which keeps even the progression order and precinct signalling.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from svsicc.exceptions import CodecError

SOC, SOT, SIZ, COD, COM = 0xFF4F, 0xFF90, 0xFF51, 0xFF52, 0xFF64
PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")
# With one layer and one precinct per resolution these three visit packets in the same order:
# resolution, then component.
RESOLUTION_MAJOR = frozenset({0, 1, 2})
DEFAULT_PRECINCT_EXPONENT = 15  # no precinct sizes signalled: 2**15, i.e. one precinct
CODEBLOCK_EXPONENT_OFFSET = 2  # SPcod stores log2(code-block size) - 2


class Jpeg2000FormatError(CodecError):
    """A codestream svsicc cannot parse or OpenJPEG cannot decode."""


# --------------------------------------------------------------------------- codestream header


@dataclass(frozen=True)
class ComponentInfo:
    precision: int
    signed: bool
    dx: int  # XRsiz: horizontal subsampling
    dy: int  # YRsiz


@dataclass(frozen=True)
class CodingStyle:
    """The COD marker segment, decoded."""

    precincts_signalled: bool
    sop: bool
    eph: bool
    progression: int
    layers: int
    mct: int
    levels: int  # decomposition levels (resolutions - 1)
    codeblock_exponents: tuple[int, int]  # log2 of code-block width and height
    codeblock_style: int
    reversible: bool  # 5/3 integer wavelet; False: 9/7
    precinct_exponents: tuple[tuple[int, int], ...]  # (PPx, PPy) per resolution, lowest first

    @property
    def wavelet(self) -> str:
        return "5/3 reversible" if self.reversible else "9/7 irreversible"

    @property
    def progression_name(self) -> str:
        if self.progression < len(PROGRESSIONS):
            return PROGRESSIONS[self.progression]
        return f"progression {self.progression}"

    def effective_codeblocks(self) -> tuple[tuple[int, int], ...]:
        """Code-block exponents per resolution after precinct clipping (ITU-T T.800 B.7)."""
        cbw, cbh = self.codeblock_exponents
        out = []
        for r, (ppx, ppy) in enumerate(self.precinct_exponents):
            cut = 1 if r > 0 else 0
            out.append((min(cbw, ppx - cut), min(cbh, ppy - cut)))
        return tuple(out)


@dataclass(frozen=True)
class CodestreamHeader:
    """SIZ and COD of a raw J2K codestream's main header."""

    width: int
    height: int
    image_offset: tuple[int, int]
    tile_size: tuple[int, int]
    tile_offset: tuple[int, int]
    components: tuple[ComponentInfo, ...]
    coding: CodingStyle
    siz_segment: bytes  # marker, length and payload, as found
    cod_segment: bytes

    @property
    def subsampled(self) -> bool:
        return any((c.dx, c.dy) != (1, 1) for c in self.components)

    def summary(self) -> str:
        c = self.coding
        return (
            f"{self.width}x{self.height}, {len(self.components)} components, {c.wavelet}, "
            f"{c.levels} levels, MCT {c.mct}, {c.layers} layer(s), {c.progression_name}"
        )


def main_header_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, payload start, payload end) of the main header's segments, up to the first SOT."""
    if len(data) < 4 or struct.unpack_from(">H", data, 0)[0] != SOC:
        raise Jpeg2000FormatError("not a raw JPEG 2000 codestream (no SOC marker)")
    out: list[tuple[int, int, int]] = []
    pos = 2
    while True:
        if pos + 4 > len(data):
            raise Jpeg2000FormatError("main header ends before the first tile (no SOT marker)")
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker < 0xFF00:
            raise Jpeg2000FormatError(f"expected a marker at byte {pos}")
        if marker == SOT:
            return out
        if length < 2 or pos + 2 + length > len(data):
            raise Jpeg2000FormatError(f"marker 0x{marker:04X} runs past the end of the tile")
        out.append((marker, pos + 4, pos + 2 + length))
        pos += 2 + length


def parse_header(data: bytes) -> CodestreamHeader:
    segments = main_header_segments(data)
    if not segments or segments[0][0] != SIZ:
        raise Jpeg2000FormatError("the SIZ marker does not follow SOC")
    siz_start, siz_end = segments[0][1], segments[0][2]
    siz = data[siz_start:siz_end]
    if len(siz) < 36:
        raise Jpeg2000FormatError("truncated SIZ marker")
    _rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, _ncomp = struct.unpack_from(">H8IH", siz)
    components = siz_components(siz)
    cods = [(s, e) for m, s, e in segments if m == COD]
    if len(cods) != 1:
        raise Jpeg2000FormatError(f"the main header has {len(cods)} COD markers, expected 1")
    cod_start, cod_end = cods[0]
    coding = _parse_cod(data[cod_start:cod_end])
    return CodestreamHeader(
        width=xsiz - xo,
        height=ysiz - yo,
        image_offset=(xo, yo),
        tile_size=(xt, yt),
        tile_offset=(xto, yto),
        components=components,
        coding=coding,
        siz_segment=data[siz_start - 4 : siz_end],
        cod_segment=data[cod_start - 4 : cod_end],
    )


def siz_components(siz: bytes) -> tuple[ComponentInfo, ...]:
    """The components a SIZ payload declares."""
    if len(siz) < 36:
        raise Jpeg2000FormatError("truncated SIZ marker")
    ncomp = struct.unpack_from(">H", siz, 34)[0]
    if ncomp < 1 or len(siz) < 36 + 3 * ncomp:
        raise Jpeg2000FormatError(f"SIZ declares {ncomp} components but is too short for them")
    return tuple(
        ComponentInfo(
            precision=(siz[36 + 3 * i] & 0x7F) + 1,
            signed=bool(siz[36 + 3 * i] & 0x80),
            dx=siz[37 + 3 * i],
            dy=siz[38 + 3 * i],
        )
        for i in range(ncomp)
    )


def _parse_cod(cod: bytes) -> CodingStyle:
    if len(cod) < 10:
        raise Jpeg2000FormatError("truncated COD marker")
    scod, progression, layers, mct, levels, cbw, cbh, cbstyle, transform = struct.unpack_from(
        ">BBHBBBBBB", cod
    )
    if transform > 1:
        raise Jpeg2000FormatError(f"unknown wavelet transform {transform} in COD")
    if scod & 1:
        if len(cod) < 10 + levels + 1:
            raise Jpeg2000FormatError("COD signals precinct sizes but does not hold them")
        precincts = tuple((b & 0x0F, b >> 4) for b in cod[10 : 10 + levels + 1])
    else:
        precincts = ((DEFAULT_PRECINCT_EXPONENT, DEFAULT_PRECINCT_EXPONENT),) * (levels + 1)
    return CodingStyle(
        precincts_signalled=bool(scod & 1),
        sop=bool(scod & 2),
        eph=bool(scod & 4),
        progression=progression,
        layers=layers,
        mct=mct,
        levels=levels,
        codeblock_exponents=(cbw + CODEBLOCK_EXPONENT_OFFSET, cbh + CODEBLOCK_EXPONENT_OFFSET),
        codeblock_style=cbstyle,
        reversible=transform == 1,
        precinct_exponents=precincts,
    )


def _one_precinct_per_resolution(coding: CodingStyle, width: int, height: int) -> bool:
    for r, (ppx, ppy) in enumerate(coding.precinct_exponents):
        scale = 1 << (coding.levels - r)
        if -(-width // scale) > (1 << ppx) or -(-height // scale) > (1 << ppy):
            return False
    return True


def equivalent_cod(ours: CodestreamHeader, source: CodestreamHeader) -> bytes | None:
    """The source's COD segment, adjusted to one layer and no SOP/EPH, if it describes exactly
    the packets in ``ours`` (else None): same wavelet, levels, code-blocks, MCT, one precinct per
    resolution in both, and progression orders that visit one layer's packets identically."""
    a, b = ours.coding, source.coding
    same_coding = (
        a.reversible == b.reversible
        and a.levels == b.levels
        and a.mct == b.mct
        and a.codeblock_style == b.codeblock_style
        and a.effective_codeblocks() == b.effective_codeblocks()
        and a.layers == 1
        and not (a.sop or a.eph)
        and a.progression in RESOLUTION_MAJOR
        and b.progression in RESOLUTION_MAJOR
    )
    if not same_coding or ours.subsampled or source.subsampled:
        return None
    size = (ours.width, ours.height)
    if not (_one_precinct_per_resolution(a, *size) and _one_precinct_per_resolution(b, *size)):
        return None
    cod = bytearray(source.cod_segment)
    cod[4] &= 0x01  # keep the precinct flag, drop SOP/EPH: our packets have neither
    struct.pack_into(">H", cod, 6, 1)  # one quality layer
    return bytes(cod)
