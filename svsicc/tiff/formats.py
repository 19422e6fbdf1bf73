"""Which kind of TIFF a file is, guessed from its content (never its name), and a description of
any TIFF svsicc can parse.

svsicc converts Aperio SVS, generic tiled TIFF and Ventana BIF, each through its driver
(:mod:`svsicc.drivers`). Other whole-slide formats are TIFFs too, so a user may well point svsicc
at one; ``apply`` refuses it naming the format and ``info`` describes it (pages, tiling,
compression, profile) and says why it cannot be converted.

The tests decide: Hamamatsu NDPI by its private tags (65420 and up), Philips by its XML
ImageDescription (``DPUfsImport``) or Software tag, Ventana BIF by ``iScan`` in its XMP packet
(tag 700) or description, Leica SCN and OME-TIFF by their XML namespaces, then a tiled IFD 0 makes
a generic tiled TIFF and anything else a plain TIFF.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svsicc.codecs.registry import entry_for
from svsicc.colour.transform import IccProfile
from svsicc.exceptions import ProfileError, SvsiccError
from svsicc.tiff import file as tiff
from svsicc.tiff.slide import MAX_DESCRIPTION_BYTES, MAX_ICC_BYTES

APERIO = "Aperio SVS"
NDPI = "Hamamatsu NDPI"
PHILIPS = "Philips TIFF"
VENTANA = "Ventana BIF"
LEICA = "Leica SCN"
OME = "OME-TIFF"
GENERIC_TILED = "generic tiled TIFF"
PLAIN = "plain TIFF"

TAG_SOFTWARE = 305
TAG_XMP = 700
# Hamamatsu's private tags start at 65420 (file format, magnification, offsets, ...).
NDPI_FIRST_TAG = 65420
NDPI_LAST_TAG = 65480
MAX_XMP_BYTES = 4 << 20
PHOTOMETRIC_NAMES = {0: "min-is-white", 1: "grey", 2: "RGB", 3: "palette", 6: "YCbCr"}
# Compressions other scanners and tools use, besides those svsicc converts.
OTHER_COMPRESSIONS = {
    6: "old-style JPEG", 8: "deflate", 32773: "PackBits", 32946: "deflate", 33004: "JPEG 2000",
    33007: "JPEG 2000", 34712: "JPEG 2000", 34887: "LERC", 50000: "zstd", 50001: "WebP",
    52546: "JPEG XL",
}  # fmt: skip

WHY_NOT = (
    "svsicc converts Aperio SVS, generic tiled TIFF, Ventana BIF and DICOM WSI; it does not know "
    "how this format records its layout and profile"
)


@dataclass(frozen=True)
class FormatGuess:
    name: str
    evidence: str  # what in the content decided it


def guess_format(reader: tiff.TiffReader) -> FormatGuess:
    """The whole-slide format of an open TIFF, from its tags and texts."""
    first = reader.structure.ifds[0]
    vendor = sorted(t for t in first.entries if NDPI_FIRST_TAG <= t <= NDPI_LAST_TAG)
    if vendor:
        return FormatGuess(NDPI, f"Hamamatsu tags {vendor[0]}..{vendor[-1]} on IFD 0")
    description = reader.ascii(first, tiff.TAG_IMAGE_DESCRIPTION, MAX_DESCRIPTION_BYTES) or ""
    software = reader.ascii(first, TAG_SOFTWARE, MAX_DESCRIPTION_BYTES) or ""
    if description.startswith("Aperio"):
        return FormatGuess(APERIO, "ImageDescription starts with 'Aperio'")
    if "DPUfsImport" in description or software.startswith("Philips"):
        return FormatGuess(PHILIPS, "Philips XML ImageDescription or Software tag")
    if _ventana(reader, description):
        return FormatGuess(VENTANA, "'iScan' in the XMP packet (tag 700) or description")
    if "leica-microsystems.com/scn" in description:
        return FormatGuess(LEICA, "Leica SCN XML ImageDescription")
    if "<OME" in description:
        return FormatGuess(OME, "OME-XML ImageDescription")
    if tiff.TAG_TILE_WIDTH in first.entries:
        return FormatGuess(GENERIC_TILED, "IFD 0 is tiled; no whole-slide vendor tags or texts")
    return FormatGuess(PLAIN, "IFD 0 is stored in strips; no whole-slide vendor tags or texts")


def _ventana(reader: tiff.TiffReader, description: str) -> bool:
    if "iScan" in description:
        return True
    for ifd in reader.structure.ifds[:2]:
        xmp = reader.raw_value(ifd, TAG_XMP, MAX_XMP_BYTES)
        if xmp and b"iScan" in xmp:
            return True
    return False


@dataclass(frozen=True)
class PageSummary:
    """One IFD as any TIFF reader would list it; read leniently (nothing here is rewritten)."""

    index: int
    width: int
    height: int
    tiled: bool
    segment_width: int
    segment_height: int
    segments: int
    compression: str
    photometric: str
    samples_per_pixel: int
    bits_per_sample: tuple[int, ...]
    icc_bytes: int
    description: str  # first line, shortened

    def to_dict(self) -> dict[str, object]:
        values = dict(self.__dict__)
        values["layout"] = "tiled" if self.tiled else "stripped"
        values["segment_size"] = [values.pop("segment_width"), values.pop("segment_height")]
        values["bits_per_sample"] = list(self.bits_per_sample)
        return values


@dataclass(frozen=True)
class TiffSummary:
    """What ``svsicc info`` says about a TIFF it cannot convert."""

    path: Path
    bigtiff: bool
    file_size: int
    format: FormatGuess
    why_not: str
    profile: IccProfile | None
    profile_ifds: tuple[int, ...]
    profile_error: str | None
    pages: tuple[PageSummary, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "format": "BigTIFF" if self.bigtiff else "TIFF",
            "wsi_format": self.format.name,
            "evidence": self.format.evidence,
            "convertible": False,
            "why_not": self.why_not,
            "file_size": self.file_size,
            "profile": None
            if self.profile is None
            else {**self.profile.summary(), "ifds": list(self.profile_ifds)},
            "profile_error": self.profile_error,
            "ifds": [p.to_dict() for p in self.pages],
        }

    def format_text(self) -> str:
        lines = [
            f"{self.path}  ({'BigTIFF' if self.bigtiff else 'TIFF'}, {self.file_size:,} bytes)",
            f"format: {self.format.name} ({self.format.evidence})",
            f"svsicc cannot convert it: {self.why_not}",
        ]
        if self.profile is not None:
            ifds = ", ".join(str(i) for i in self.profile_ifds)
            lines.append(
                f"profile: {self.profile.description!r}, {len(self.profile.data):,} bytes, "
                f"on IFD {ifds}"
            )
        elif self.profile_error:
            lines.append(f"profile: unreadable ({self.profile_error})")
        else:
            lines.append("profile: none embedded")
        lines.append("IFDs:")
        for p in self.pages:
            size = f"{p.width}x{p.height}"
            seg = f"{p.segment_width}x{p.segment_height}"
            bits = "/".join(str(b) for b in p.bits_per_sample)
            lines.append(
                f"  {p.index}: {size:>13} {'tiled' if p.tiled else 'stripped'} {seg:>11} "
                f"x{p.segments:<6} {p.compression}, {p.photometric} {bits}-bit"
                + (f", ICC {p.icc_bytes:,} B" if p.icc_bytes else "")
                + (f", {p.description!r}" if p.description else "")
            )
        return "\n".join(lines)


def summarise_tiff(reader: tiff.TiffReader, why_not: str | None = None) -> TiffSummary:
    """Describe every IFD of an open TIFF and its profile; ``why_not`` defaults to WHY_NOT."""
    pages = tuple(_page_summary(reader, ifd) for ifd in reader.structure.ifds)
    carriers = [p.index for p in pages if p.icc_bytes]
    profile = None
    error = None
    if carriers:
        ifd = reader.structure.ifds[carriers[0]]
        data = reader.raw_value(ifd, tiff.TAG_ICC_PROFILE, MAX_ICC_BYTES) or b""
        try:
            profile = IccProfile.from_bytes(data, f"IFD {carriers[0]} tag 34675")
        except ProfileError as exc:
            error = exc.problem
    return TiffSummary(
        path=reader.path,
        bigtiff=reader.structure.bigtiff,
        file_size=reader.file_size,
        format=guess_format(reader),
        why_not=why_not or WHY_NOT,
        profile=profile,
        profile_ifds=tuple(carriers),
        profile_error=error,
        pages=pages,
    )


def _page_summary(reader: tiff.TiffReader, ifd: tiff.TiffIfd) -> PageSummary:
    def value(tag: int, default: int) -> int:
        try:
            found = reader.int_value(ifd, tag, default)
        except SvsiccError:
            return default
        return default if found is None else found

    width, height = value(tiff.TAG_IMAGE_WIDTH, 0), value(tiff.TAG_IMAGE_LENGTH, 0)
    tiled = tiff.TAG_TILE_WIDTH in ifd.entries
    seg_w = value(tiff.TAG_TILE_WIDTH, 0) if tiled else width
    seg_h = (
        value(tiff.TAG_TILE_LENGTH, 0)
        if tiled
        else min(value(tiff.TAG_ROWS_PER_STRIP, height) or height, height)
    )
    offsets = ifd.entries.get(tiff.TAG_TILE_OFFSETS if tiled else tiff.TAG_STRIP_OFFSETS)
    compression = value(tiff.TAG_COMPRESSION, 1)
    photometric = value(tiff.TAG_PHOTOMETRIC, -1)
    spp = value(tiff.TAG_SAMPLES_PER_PIXEL, 1)
    bits_entry = ifd.entries.get(tiff.TAG_BITS_PER_SAMPLE)
    try:
        bits = reader.ints(ifd, tiff.TAG_BITS_PER_SAMPLE, max_count=64) if bits_entry else None
    except SvsiccError:
        bits = None
    icc = ifd.entries.get(tiff.TAG_ICC_PROFILE)
    try:
        text = reader.ascii(ifd, tiff.TAG_IMAGE_DESCRIPTION, MAX_DESCRIPTION_BYTES) or ""
    except SvsiccError:
        text = ""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return PageSummary(
        index=ifd.index,
        width=width,
        height=height,
        tiled=tiled,
        segment_width=seg_w,
        segment_height=seg_h,
        segments=offsets.count if offsets is not None else 0,
        compression=entry.name
        if (entry := entry_for(compression)) is not None
        else OTHER_COMPRESSIONS.get(compression, f"compression {compression}"),
        photometric=PHOTOMETRIC_NAMES.get(photometric, f"photometric {photometric}"),
        samples_per_pixel=spp,
        bits_per_sample=bits or (1,),
        icc_bytes=icc.nbytes if icc is not None else 0,
        description=first_line[:60] + ("..." if len(first_line) > 60 else ""),
    )
