"""What a converted DICOM instance says about itself: profile, record, derivation, new UIDs.

The record is kept twice, so that it survives tools that strip private attributes:

- a private block, creator ``svsicc`` in group 0x0009 (:data:`PRIVATE_GROUP`), in every instance
  of the copy (:data:`RECORD_ELEMENTS` lists its elements);
- one parseable sentence in DerivationDescription (0008,2111) of every converted instance,
  appended to any description already there::

      ICC profile applied by svsicc 0.1.0: 'ScanScope v1' (sha256 1397...d7bb) -> 'sRGB v2
      magic' (perceptual, transformed)

:func:`applied_record` reads the block first, the sentence otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from svsicc.colour.transform import IccProfile, Intent, default_target
from svsicc.tiff.record import AppliedRecord, format_kept, parse_kept

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "svsicc"
# element offset in the block -> (VR, what it holds)
RECORD_ELEMENTS: dict[int, tuple[str, str]] = {
    0x01: ("LT", "source profile description"),
    0x02: ("LO", "source profile sha256"),
    0x03: ("LO", "rendering intent"),
    0x04: ("LT", "target profile description"),
    0x05: ("LO", "mode: transformed or identity"),
    0x06: ("LO", "by: svsicc version (and codec library)"),
    0x07: ("UI", "SOP Instance UID of the instance this one was made from"),
    0x08: ("CS", "this instance's pixels: CONVERTED or KEPT (label, overview)"),
    0x09: ("LT", "frames kept unconverted (undecodable): instance:frame pairs"),
}
_SOURCE, _SHA, _INTENT, _TARGET, _MODE, _BY, _FROM, _PIXELS, _KEPT = range(1, 10)

_SENTENCE = re.compile(
    r"ICC profile applied by (?P<by>svsicc [^:;]+): '(?P<source>.*?)' "
    r"\(sha256 (?P<sha>[0-9a-f]{64})\) -> '(?P<target>.*?)' "
    r"\((?P<intent>[a-z]+), (?P<mode>[a-z]+)\)"
)
DERIVATION_LIMIT = 1024  # DerivationDescription is ST
# DCM 121322 "Source image for image processing operation" (CID 7202)
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")


def scanner_class(profile: IccProfile) -> IccProfile:
    """``profile`` as an input-device ('scnr') profile, as DICOM wants in an optical path: the
    header's device class set and the profile ID (bytes 84-99, the MD5 of the profile with
    flags, intent and ID zeroed) recomputed when it had one (sRGB-v2-magic does), else left
    zero."""
    data = bytearray(profile.data)
    if data[12:16] == b"scnr":
        return profile
    data[12:16] = b"scnr"
    had_id = any(data[84:100])
    data[84:100] = bytes(16)
    if had_id:
        import hashlib

        hashed = bytearray(data)
        hashed[44:48] = bytes(4)  # profile flags
        hashed[64:68] = bytes(4)  # rendering intent
        data[84:100] = hashlib.md5(bytes(hashed)).digest()
    return IccProfile.from_bytes(bytes(data), f"{profile.description} (input class)")


def sentence(
    source: IccProfile, target: IccProfile, intent: Intent, identity: bool, by: str
) -> str:
    return (
        f"ICC profile applied by {by}: '{_clean(source.description)}' (sha256 {source.sha256}) "
        f"-> '{_clean(target.description)}' ({intent.label}, "
        f"{'identity' if identity else 'transformed'})"
    )


def _clean(text: str) -> str:
    return " ".join(text.replace("'", "`").split())


@dataclass(frozen=True)
class Marks:
    """The series-wide facts every instance of a copy records."""

    source: IccProfile
    target: IccProfile
    intent: Intent
    identity: bool
    by: str
    color_space: str | None = "SRGB"  # ColorSpace (0028,2002) of the target; None: unnamed
    kept: tuple[tuple[int, int], ...] = ()

    @property
    def mode(self) -> str:
        return "identity" if self.identity else "transformed"


def mark_instance(ds: Dataset, marks: Marks, source_uid: str, converted: bool) -> None:
    """Write the private block into ``ds`` and, when ``converted``, the profile, ColorSpace,
    derivation and Source Image Sequence."""
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    values = {
        _SOURCE: marks.source.description,
        _SHA: marks.source.sha256,
        _INTENT: marks.intent.label,
        _TARGET: marks.target.description,
        _MODE: marks.mode,
        _BY: marks.by,
        _FROM: source_uid,
        _PIXELS: "CONVERTED" if converted else "KEPT",
    }
    if marks.kept:
        values[_KEPT] = format_kept(marks.kept)
    for offset, value in values.items():
        block.add_new(offset, RECORD_ELEMENTS[offset][0], value)
    if not converted:
        return
    _replace_profiles(ds, marks.target, marks.color_space)
    text = sentence(marks.source, marks.target, marks.intent, marks.identity, marks.by)
    ds.DerivationDescription = derivation(str(ds.get("DerivationDescription", "") or ""), text)
    _add_source_reference(ds, str(ds.SOPClassUID), source_uid)
    if not marks.identity:
        set_type_value1(ds, "DERIVED")


def derivation(old: str, text: str) -> str:
    """Derivation Description with svsicc's sentence ``text`` appended to the ``old`` one (cut
    to fit the 1024 characters of an ST)."""
    room = DERIVATION_LIMIT - len(text) - 2
    return f"{old[:room]}; {text}" if old and room > 0 else text


def find_sentence(description: str) -> re.Match[str] | None:
    """svsicc's sentence in a Derivation Description."""
    return _SENTENCE.search(description)


def set_type_value1(ds: Dataset, value: str) -> None:
    """Image Type's value 1, and Frame Type's wherever a functional group holds one (they must
    agree), set to ``value`` (ORIGINAL or DERIVED)."""
    for holder, keyword in type_holders(ds):
        values = list(holder.get(keyword) or [])
        if values:
            values[0] = value
            setattr(holder, keyword, values)


def type_holders(ds: Dataset) -> list[tuple[Dataset, str]]:
    found = [(ds, "ImageType")] if "ImageType" in ds else []
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(keyword, []):
            for item in group.get("WholeSlideMicroscopyImageFrameTypeSequence", []):
                if "FrameType" in item:
                    found.append((item, "FrameType"))
    return found


def profile_holders(ds: Dataset) -> list[Dataset]:
    """Where a converted instance holds the target profile: every optical path (the dataset
    itself when it has none), and the dataset when it holds an ICC Profile of its own."""
    holders = list(ds.get("OpticalPathSequence", []))
    if "ICCProfile" in ds or not holders:
        holders.append(ds)
    return holders


def color_space(target: IccProfile) -> str | None:
    """ColorSpace (0028,2002) of a copy in ``target``: SRGB for the built-in sRGB (as a 'scnr'
    profile), else None (svsicc names no other space)."""
    return "SRGB" if target.sha256 == scanner_class(default_target()).sha256 else None


def _replace_profiles(ds: Dataset, target: IccProfile, color_space: str | None) -> None:
    """The target becomes the ICC Profile of every optical path (also one that had none: the
    pixels are now in the target's space) and of the dataset where it had one; ColorSpace names
    the target's space (removed when it has no DICOM name: the old one described the scanner's
    profile)."""
    for holder in profile_holders(ds):
        holder.ICCProfile = target.data
        if color_space is not None:
            holder.ColorSpace = color_space
        elif "ColorSpace" in holder:
            del holder.ColorSpace


def _add_source_reference(ds: Dataset, sop_class: str, sop_instance: str) -> None:
    from pydicom.dataset import Dataset as Item
    from pydicom.sequence import Sequence

    purpose = Item()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = SOURCE_PURPOSE
    item = Item()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    item.PurposeOfReferenceCodeSequence = Sequence([purpose])
    existing = list(ds.get("SourceImageSequence", []))
    ds.SourceImageSequence = Sequence([*existing, item])


def append_lossy_step(ds: Dataset, ratio: float, method: str) -> None:
    """Lossy Image Compression Ratio and Method gain one value per lossy compression applied
    (PS3.3 C.7.6.1.1.5): the re-encode is one more."""
    ds.LossyImageCompression = "01"
    ratios = _values(ds.get("LossyImageCompressionRatio"))
    methods = _values(ds.get("LossyImageCompressionMethod"))
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"[:16]]
    if len(methods) == len(ratios):
        ds.LossyImageCompressionMethod = [*methods, method]


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    return [str(v) for v in value]  # type: ignore[attr-defined]


def remap_uids(ds: Dataset, mapping: Mapping[str, str]) -> None:
    """Replace every UI value found in ``mapping``, at any depth (references, concatenation,
    series, pyramid), so the copy's instances refer to each other, never to the original's."""
    _walk(ds, lambda value: mapping.get(value, value))


def _walk(ds: Dataset, change: Callable[[str], str]) -> None:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _walk(item, change)
        elif element.VR == "UI" and element.value:
            if isinstance(element.value, str):
                element.value = change(element.value)
            else:
                element.value = [change(str(v)) for v in element.value]


def applied_record(ds: Dataset) -> AppliedRecord | None:
    """svsicc's record in ``ds``: the private block, else the DerivationDescription sentence."""
    if _private(ds, _SHA) is not None:

        def text(offset: int) -> str:
            return _private(ds, offset) or ""

        return AppliedRecord(
            source_description=text(_SOURCE),
            source_sha256=text(_SHA),
            intent=text(_INTENT),
            target=text(_TARGET),
            mode=text(_MODE),
            by=text(_BY),
            kept_tiles=parse_kept(text(_KEPT)),
        )
    found = find_sentence(str(ds.get("DerivationDescription", "") or ""))
    if found is None:
        return None
    return AppliedRecord(
        source_description=found["source"],
        source_sha256=found["sha"],
        intent=found["intent"],
        target=found["target"],
        mode=found["mode"],
        by=found["by"],
    )


def made_from(ds: Dataset) -> str | None:
    """The SOP Instance UID of the original instance ``ds`` was made from (private block,
    else the Source Image Sequence svsicc added last)."""
    found = _private(ds, _FROM)
    if found is not None:
        return found
    references = ds.get("SourceImageSequence", [])
    return str(references[-1].ReferencedSOPInstanceUID) if references else None


def pixels_converted(ds: Dataset) -> bool | None:
    """What the private block says of this instance's pixels (None: no block)."""
    value = _private(ds, _PIXELS)
    return None if value is None else value == "CONVERTED"


def _private(ds: Dataset, offset: int) -> str | None:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return None
    if offset not in block:
        return None
    value = block[offset].value
    if isinstance(value, bytes):  # implicit VR files: the private VR is unknown on reading
        return value.decode("latin-1").rstrip("\x00 ")
    return str(value)
