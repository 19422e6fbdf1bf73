"""How a DICOM instance's frames are coded, in the terms of svsicc's codec registry.

=================================  =================  ======================================
transfer syntax                    photometric        codec (:mod:`svsicc.codecs.registry`)
=================================  =================  ======================================
JPEG baseline (.4.50)              YBR_FULL_422,      JPEG, YCbCr colourspace: self-contained
                                   YBR_FULL           JFIF-like streams, as GT450 tiles
JPEG baseline (.4.50)              RGB                JPEG, RGB colourspace (no colour
                                                    transform in the stream), as Aperio's
JPEG 2000 (.4.90 lossless, .4.91)  YBR_RCT, YBR_ICT   JPEG 2000 RGB input with the codestream's
                                                    MCT on (Aperio 33005 with MCT)
JPEG 2000                          RGB                JPEG 2000 RGB, MCT off (33005)
JPEG 2000                          YBR_FULL           JPEG 2000 YCbCr samples, no MCT (33003)
explicit / implicit VR little      RGB, planar 0      uncompressed (raw interleaved RGB)
endian (native)
=================================  =================  ======================================

Everything else (JPEG-LS, lossless JPEG, RLE, HTJ2K, JPEG XL, deflate, big endian, palette or
monochrome images, 12/16-bit samples, planar native RGB) is refused: svsicc could not re-encode
it with the source's settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from svsicc.codecs.codes import Compression, Photometric

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG2000 = "1.2.840.10008.1.2.4.91"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"

NATIVE = frozenset({EXPLICIT_LITTLE, IMPLICIT_LITTLE})
ENCAPSULATED = frozenset({JPEG_BASELINE, JPEG2000_LOSSLESS, JPEG2000})

# (transfer syntax family, photometric) -> (TIFF-style compression, TIFF-style photometric)
_JPEG = {
    "YBR_FULL_422": Photometric.YCBCR,
    "YBR_FULL": Photometric.YCBCR,
    "RGB": Photometric.RGB,
}
_J2K = {
    "YBR_ICT": Compression.JPEG2000_RGB,
    "YBR_RCT": Compression.JPEG2000_RGB,
    "RGB": Compression.JPEG2000_RGB,
    "YBR_FULL": Compression.JPEG2000_YCBCR,
}

# ISO method names for LossyImageCompressionMethod (0028,2114).
LOSSY_METHOD = {JPEG_BASELINE: "ISO_10918_1", JPEG2000: "ISO_15444_1"}


@dataclass(frozen=True)
class FrameCoding:
    """What the codec registry needs for one instance's frames."""

    compression: int
    photometric: int
    lossy: bool  # re-encoding loses information (JPEG baseline, irreversible JPEG 2000)


def frame_coding(transfer_syntax: str, photometric: str, planar: int) -> FrameCoding | str:
    """The coding of frames in ``transfer_syntax`` with ``photometric``, or why svsicc cannot
    re-encode them (a problem for an :class:`~svsicc.exceptions.UnsupportedLayoutError`)."""
    if transfer_syntax == JPEG_BASELINE:
        if photometric not in _JPEG:
            return f"JPEG baseline with photometric interpretation {photometric}"
        return FrameCoding(Compression.JPEG, _JPEG[photometric], lossy=True)
    if transfer_syntax in (JPEG2000, JPEG2000_LOSSLESS):
        if photometric not in _J2K:
            return f"JPEG 2000 with photometric interpretation {photometric}"
        photometric_code = Photometric.YCBCR if photometric == "YBR_FULL" else Photometric.RGB
        return FrameCoding(_J2K[photometric], photometric_code, lossy=transfer_syntax == JPEG2000)
    if transfer_syntax in NATIVE:
        if photometric != "RGB":
            return f"uncompressed frames with photometric interpretation {photometric}"
        if planar != 0:
            return "uncompressed frames with separate colour planes (planar configuration 1)"
        return FrameCoding(Compression.NONE, Photometric.RGB, lossy=False)
    return f"transfer syntax {transfer_syntax_name(transfer_syntax)}"


def short_name(transfer_syntax: str) -> str:
    """The compression in the words ``svsicc bench`` uses for a TIFF page ('JPEG', 'none'),
    so that the figures of both formats read alike."""
    if transfer_syntax == JPEG_BASELINE:
        return "JPEG"
    if transfer_syntax == JPEG2000:
        return "JPEG 2000"
    if transfer_syntax == JPEG2000_LOSSLESS:
        return "JPEG 2000 (lossless)"
    if transfer_syntax in NATIVE:
        return "none"
    return transfer_syntax_name(transfer_syntax)


def transfer_syntax_name(uid: str) -> str:
    """pydicom's name of ``uid`` ('JPEG Baseline (Process 1)'), or the UID itself."""
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else uid
