"""``verify`` for a DICOM WSI copy: the checks of :mod:`svsicc.check.verify`, per instance.

Structure: every instance of the copy names (private block, else Source Image Sequence) the
original instance it was made from, and every original instance has one; the copy's SOP Instance
UIDs and Series Instance UID are new and its references point inside the copy; each header
equals its original's once UIDs are mapped back and what apply changes is set aside (profile,
ColorSpace, record, derivation, Image/Frame Type value 1, lossy compression history, Extended
Offset Table), and what apply writes into a VOLUME or THUMBNAIL instance is there: the target
profile in every optical path, ColorSpace SRGB for the built-in sRGB target (none for another),
the derivation sentence after the original's description, a Source Image Sequence item naming
the original instance after the original's items, Image Type and Frame Type value 1 DERIVED (an
identity copy keeps the original's); LABEL and OVERVIEW keep all of theirs; transfer syntax,
photometric interpretation, frame size and count are the same; LABEL and OVERVIEW frames (and
every frame of an identity copy) are byte-identical.

Colour, per VOLUME and THUMBNAIL instance, frame by frame exactly as for SVS tiles: the ideal is
LittleCMS (the exact table) applied to the original's decoded frame, the floor that ideal
re-encoded once by Pillow with the source frame's own settings (:mod:`svsicc.check.floor`), and
the same margins (:data:`svsicc.check.margins.MARGINS`). JPEG frames must also keep their
quantisation tables and sampling, JPEG 2000 frames their wavelet, levels and MCT.

Results are svsicc's :class:`~svsicc.check.figures.VerifyResult`: ``pages`` are instances (their
``index`` the instance's number, as in apply's result), ``ifds`` the number of instances.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from svsicc.check.figures import (
    Accumulator,
    Finding,
    PageFigures,
    VerifyResult,
    figures_of,
    page_problems,
    segment_problem,
)
from svsicc.check.floor import FloorError, jpeg2000_round_trip, jpeg_round_trip, jpeg_settings
from svsicc.check.margins import MARGINS, Margins
from svsicc.codecs.codes import Compression, Photometric
from svsicc.codecs.pixels import rgb_from_layout
from svsicc.codecs.registry import PageCoding, make_codec
from svsicc.colour.transform import ColourTable, IccProfile, Intent
from svsicc.convert.engine import CODEC_ERRORS
from svsicc.convert.plan import ProfileChoice, ProfileSource
from svsicc.dicom import marking
from svsicc.dicom.apply import series_plan
from svsicc.dicom.pixeldata import read_frame
from svsicc.dicom.series import Instance, Series, attribute_name, read_series
from svsicc.exceptions import ProfileError, SvsiccError
from svsicc.tiff.record import AppliedRecord

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


# What apply changes in a converted instance's header (besides UIDs and the private block).
CHANGED = (
    "DerivationDescription",
    "SourceImageSequence",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
_UID_KEYWORDS = (
    "SeriesInstanceUID",
    "PyramidUID",
    "ConcatenationUID",
    "SOPInstanceUIDOfConcatenationSource",
)


def verify_dicom(
    original: str | os.PathLike[str],
    calibrated: str | os.PathLike[str],
    *,
    profile: ProfileSource = None,
    fallback_profile: ProfileSource = None,
    sample: int | None = None,
    seed: int = 0,
    margins: Margins = MARGINS,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyResult:
    """Check the DICOM copy ``calibrated`` (a folder or one of its files) against the series
    ``original``; what :func:`svsicc.verify` is for SVS (same arguments, result and errors)."""
    started = time.perf_counter()
    if sample is not None and sample < 1:
        raise SvsiccError(None, f"{{sample}} must be at least 1, not {sample}")
    orig, cal = read_series(original), read_series(calibrated)
    for instance in orig.instances:
        if marking.applied_record(instance.dataset) is not None:
            raise SvsiccError(
                orig.path,
                "{original} is itself a calibrated copy (it carries svsicc's record)",
                hint="give the original first, then the calibrated copy",
            )
    record, source, target, intent, findings = _expectation(orig, cal, profile, fallback_profile)
    identity = record.mode == "identity"
    table = ColourTable.load_or_build(source, target, intent)
    pairs = _pairs(orig, cal, findings)
    findings.extend(_uid_findings(orig, cal, pairs))
    rng = np.random.default_rng(seed)
    pages: list[PageFigures] = []
    unchanged: list[int] = []
    decoded = 0
    plan = {number: _frames_to_check(o, sample, rng) for number, (o, _c) in pairs.items()}
    total = sum(len(frames) for number, frames in plan.items() if pairs[number][0].converted)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    for number, (o, c) in sorted(pairs.items()):
        converted = o.converted and not identity
        # identity copies are marked too: their headers change as converted ones' do
        findings.extend(_header_findings(number, o, c, pairs, o.converted, identity))
        if o.converted:
            findings.extend(_mark_findings(number, o, c, pairs, record, target, identity))
        if not converted:
            unchanged.append(number)
            findings.extend(_identical_frames(number, o, c))
            if o.converted:  # an identity copy: its frames were compared byte for byte
                pages.append(_identity_figures(number, o))
            continue
        figures, count = _check_colour(number, o, c, table, plan[number], margins, findings, tick)
        pages.append(figures)
        decoded += count
    return VerifyResult(
        original=orig.path,
        calibrated=cal.path,
        record=record,
        source_profile=source,
        target_profile=target,
        intent=intent,
        identity=identity,
        sample=sample,
        ifds=len(cal.instances),
        segments_decoded=decoded,
        unchanged_pages=tuple(unchanged),
        converted_associated=(),
        findings=tuple(findings),
        pages=tuple(pages),
        seconds=time.perf_counter() - started,
        margins=margins,
    )


def _expectation(
    orig: Series, cal: Series, profile: ProfileSource, fallback_profile: ProfileSource
) -> tuple[AppliedRecord, IccProfile, IccProfile, Intent, list[Finding]]:
    """The copy's record, the source profile (apply's policy, checked against the record), the
    target the copy holds and the intent; a missing or different record is a usage error."""
    findings: list[Finding] = []
    converted = [i for i in cal.instances if i.converted]
    record = marking.applied_record(converted[0].dataset) if converted else None
    if record is None:
        raise ProfileError(
            cal.path,
            "the copy records no source profile (no svsicc record): svsicc apply did not write it",
            hint="give the original, then the copy svsicc apply wrote from it",
        )
    choice = ProfileChoice.load(profile, fallback_profile)
    recorded = f"{record.source_description!r} (sha256 {record.source_sha256[:16]}...)"
    try:
        plan = series_plan(orig, choice)
    except ProfileError:
        raise ProfileError(
            orig.path,
            f"the original embeds no ICC profile and the copy records {recorded}",
            hint=f"pass {{profile}} with {record.source_description!r}",
        ) from None
    if plan.source.sha256 != record.source_sha256:
        raise ProfileError(
            cal.path,
            f"the copy records source profile {recorded}, not {plan.source.description!r} "
            f"(sha256 {plan.source.sha256[:16]}..., {plan.origin})",
            hint=f"pass {{profile}} with {record.source_description!r}",
        )
    targets = {bytes(p) for i in converted for p in _profiles(i.dataset)}
    if len(targets) != 1:
        findings.append(
            Finding("profile", f"the converted instances hold {len(targets)} ICC profiles, not 1")
        )
    target = (
        IccProfile.from_bytes(min(targets), f"{cal.path}: ICC Profile") if targets else plan.target
    )
    if target.device_class != "scnr":
        findings.append(
            Finding("profile", f"the copy's profile has device class {target.device_class!r}, "
                    "not 'scnr' (DICOM wants an input profile)")
        )  # fmt: skip
    try:
        intent = Intent.parse(record.intent)
    except ValueError:
        findings.append(Finding("profile", f"the record names an unknown intent {record.intent!r}"))
        intent = plan.source.default_intent
    return record, plan.source, target, intent, findings


def _profiles(ds: Dataset) -> list[bytes]:
    holders = [*ds.get("OpticalPathSequence", []), ds]
    return [bytes(h.ICCProfile) for h in holders if "ICCProfile" in h]


def _pairs(
    orig: Series, cal: Series, findings: list[Finding]
) -> dict[int, tuple[Instance, Instance]]:
    """Original and copy instances by the original's number in its series."""
    numbers = {i.sop_instance_uid: n for n, i in enumerate(orig.instances)}
    pairs: dict[int, tuple[Instance, Instance]] = {}
    for c in cal.instances:
        source = marking.made_from(c.dataset)
        if source not in numbers:
            findings.append(
                Finding("structure", f"{c.path.name} names no instance of the original")
            )
            continue
        pairs[numbers[source]] = (orig.instances[numbers[source]], c)
    for n, o in enumerate(orig.instances):
        if n not in pairs:
            findings.append(
                Finding("structure", f"the copy has no instance made from {o.path.name}", ifd=n)
            )
    return pairs


def _uid_findings(
    orig: Series, cal: Series, pairs: dict[int, tuple[Instance, Instance]]
) -> list[Finding]:
    old = {i.sop_instance_uid for i in orig.instances}
    findings = []
    if cal.series_uid == orig.series_uid:
        findings.append(Finding("structure", "the copy keeps the original's Series Instance UID"))
    for n, (_o, c) in sorted(pairs.items()):
        if c.sop_instance_uid in old:
            findings.append(Finding("structure", "SOP Instance UID not new", ifd=n))
        if str(c.dataset.file_meta.get("MediaStorageSOPInstanceUID", "")) != c.sop_instance_uid:
            findings.append(Finding("structure", "file meta names another SOP instance", ifd=n))
    return findings


def _header_findings(
    number: int,
    o: Instance,
    c: Instance,
    pairs: dict[int, tuple[Instance, Instance]],
    converted: bool,
    identity: bool,
) -> list[Finding]:
    """The header equals the original's once what apply changes is set aside (what it writes
    is checked by :func:`_mark_findings`)."""
    findings = []
    if c.transfer_syntax != o.transfer_syntax:
        findings.append(Finding("structure", "transfer syntax differs", ifd=number))
    back = _uids_back(pairs)
    derived = converted and not identity
    left = _comparable(o.dataset, {}, converted, derived)
    right = _comparable(c.dataset, back, converted, derived)
    differing = sorted(
        {e.keyword or str(e.tag) for e in left if e.tag not in right or right[e.tag] != e}
        | {e.keyword or str(e.tag) for e in right if e.tag not in left}
    )
    if differing:
        shown = ", ".join(differing[:8]) + (" ..." if len(differing) > 8 else "")
        findings.append(Finding("structure", f"attributes differ: {shown}", ifd=number))
    if len(c.frames.frames) != len(o.frames.frames):
        findings.append(Finding("structure", "number of frames differs", ifd=number))
    kinds = (
        {o.frames.offset_table, "extended"}
        if o.frames.offset_table == "basic"
        else {o.frames.offset_table}
    )
    if c.frames.offset_table not in kinds:
        findings.append(
            Finding("structure", f"offset table {c.frames.offset_table}, the original's "
                    f"{o.frames.offset_table}", ifd=number)
        )  # fmt: skip
    return findings


def _uids_back(pairs: dict[int, tuple[Instance, Instance]]) -> dict[str, str]:
    """The copy's UIDs -> the original's: instances, series, pyramid, concatenations."""
    back = {c.sop_instance_uid: o.sop_instance_uid for o, c in pairs.values()}
    for po, pc in pairs.values():
        for keyword in _UID_KEYWORDS:
            if keyword in pc.dataset and keyword in po.dataset:
                back[str(pc.dataset.get(keyword))] = str(po.dataset.get(keyword))
    return back


def _comparable(ds: Dataset, back: dict[str, str], converted: bool, derived: bool) -> Dataset:
    out = copy.deepcopy(ds)
    marking.remap_uids(out, back)
    out.remove_private_tags()
    if converted:
        for keyword in CHANGED:
            if keyword in out:
                delattr(out, keyword)
        for holder in [*out.get("OpticalPathSequence", []), out]:
            for keyword in ("ICCProfile", "ColorSpace"):
                if keyword in holder:
                    delattr(holder, keyword)
    if derived:
        marking.set_type_value1(out, "ORIGINAL")
    return out


def _mark_findings(
    number: int,
    o: Instance,
    c: Instance,
    pairs: dict[int, tuple[Instance, Instance]],
    record: AppliedRecord,
    target: IccProfile,
    identity: bool,
) -> list[Finding]:
    """What apply writes into a converted instance (identity copies too), each mark present:
    the target profile and its ColorSpace in every optical path, the derivation sentence after
    the original's description, a Source Image Sequence item naming the original instance
    after the original's items, and (unless identity) Image/Frame Type value 1 DERIVED."""
    ds, problems = c.dataset, []
    space = marking.color_space(target)
    paths = {id(item): n for n, item in enumerate(ds.get("OpticalPathSequence", []))}
    for holder in marking.profile_holders(ds):
        n = paths.get(id(holder))
        where = "" if n is None else f"OpticalPathSequence[{n}] "
        profile, color = attribute_name("ICCProfile"), attribute_name("ColorSpace")
        if "ICCProfile" not in holder:
            problems.append(f"{where}{profile} is missing")
        elif bytes(holder.ICCProfile) != target.data:
            problems.append(f"{where}{profile} is not the copy's target")
        found = holder.get("ColorSpace")
        if space is not None and found is None:
            problems.append(f"{where}{color} is missing, not {space}")
        elif found != space:
            problems.append(f"{where}{color} is {found!r}, not {space or 'absent'}")
    problems.extend(_derivation_problems(o.dataset, ds, record))
    problems.extend(_source_reference_problems(o, c, _uids_back(pairs)))
    for holder, keyword in marking.type_holders(ds) if not identity else []:
        value = holder.get(keyword)
        value1 = str(value if isinstance(value, str) else (list(value or []) or [""])[0])
        if value1 != "DERIVED":
            problems.append(f"{attribute_name(keyword)} value 1 is {value1!r}, not 'DERIVED'")
    return [Finding("structure", f"{c.path.name}: {text}", ifd=number) for text in problems]


def _derivation_problems(original: Dataset, ds: Dataset, record: AppliedRecord) -> list[str]:
    name = attribute_name("DerivationDescription")
    text = str(ds.get("DerivationDescription", "") or "")
    found = marking.find_sentence(text)
    if found is None:
        return [f"{name} lacks svsicc's sentence"]
    problems = []
    if found["sha"] != record.source_sha256:
        problems.append(f"{name} names another source profile than the record")
    old = str(original.get("DerivationDescription", "") or "")
    if text != marking.derivation(old, found.group(0)):
        problems.append(f"{name} is not the original's followed by svsicc's sentence")
    return problems


def _source_reference_problems(o: Instance, c: Instance, back: dict[str, str]) -> list[str]:
    name = attribute_name("SourceImageSequence")
    items = list(c.dataset.get("SourceImageSequence", []))
    mine = [
        n
        for n, item in enumerate(items)
        if str(item.get("ReferencedSOPInstanceUID", "")) == o.sop_instance_uid
    ]
    if not mine:
        return [f"{name} has no item naming the original instance {o.path.name}"]
    others = [copy.deepcopy(item) for n, item in enumerate(items) if n != mine[-1]]
    for item in others:
        marking.remap_uids(item, back)
    if others != list(o.dataset.get("SourceImageSequence", [])):
        return [f"{name} does not keep the original's items"]
    return []


def _frames_to_check(instance: Instance, sample: int | None, rng: np.random.Generator) -> list[int]:
    count = len(instance.frames.frames)
    if sample is None or instance.flavor != "VOLUME" or sample >= count:
        return list(range(count))
    return sorted(int(n) for n in rng.choice(count, size=sample, replace=False))


def _identical_frames(number: int, o: Instance, c: Instance) -> list[Finding]:
    findings = []
    with open(o.path, "rb") as fo, open(c.path, "rb") as fc:
        for n in range(min(len(o.frames.frames), len(c.frames.frames))):
            if read_frame(fo, o.frames, n) != read_frame(fc, c.frames, n):
                findings.append(
                    Finding("structure", "frame differs from the original; this instance must "
                            "keep every byte", ifd=number, tile=n)
                )  # fmt: skip
                if len(findings) >= 10:
                    break
    return findings


def _codec_for(instance: Instance) -> object:
    assert instance.coding is not None
    return make_codec(PageCoding(instance.coding.compression, None, instance.coding.photometric))


def _check_colour(
    number: int,
    o: Instance,
    c: Instance,
    table: ColourTable,
    frames: list[int],
    margins: Margins,
    findings: list[Finding],
    tick: Callable[[], None],
) -> tuple[PageFigures, int]:
    acc, floor_acc = Accumulator(), Accumulator()
    assert o.coding is not None
    lossless = not o.coding.lossy
    orig_codec, cal_codec = _codec_for(o), _codec_for(c)
    bad: list[str] = []
    kept: list[int] = []
    decoded = 0
    with open(o.path, "rb") as fo, open(c.path, "rb") as fc:
        for n in frames:
            tick()
            source, copy_bytes = read_frame(fo, o.frames, n), read_frame(fc, c.frames, n)
            try:
                before = _decode(orig_codec, source, o)
            except CODEC_ERRORS as exc:
                if source == copy_bytes:
                    kept.append(n)  # apply --on-bad-tile keep: kept as it was
                else:
                    findings.append(
                        Finding("decode", f"the original's frame cannot be decoded ({exc}) and "
                                "the copy's differs from it", ifd=number, tile=n)
                    )  # fmt: skip
                continue
            try:
                after = _decode(cal_codec, copy_bytes, c)
            except CODEC_ERRORS as exc:
                findings.append(Finding("decode", f"cannot decode: {exc}", ifd=number, tile=n))
                continue
            decoded += 1
            settings = _settings_problem(o, source, copy_bytes)
            if settings is not None:
                findings.append(Finding("structure", settings, ifd=number, tile=n))
            ideal = table.apply_rgb(before)
            seg_psnr, seg_de = acc.add(n, after, ideal)
            try:
                floor = ideal if lossless else _round_trip(o, ideal, source)
            except (FloorError, OSError, ValueError) as exc:
                findings.append(Finding("decode", f"no floor: {exc}", ifd=number, tile=n))
                continue
            floor_psnr, floor_de = floor_acc.add(n, floor, ideal)
            problem = segment_problem(seg_psnr, seg_de, floor_psnr, floor_de, margins)
            if problem is not None and not lossless:
                bad.append(f"frame {n}: {problem}")
    figures = _figures(number, o, len(frames), decoded, acc, floor_acc, lossless)
    problems = page_problems(figures, margins) if acc.pixels else ["no frame could be compared"]
    problems += bad[:10]
    return replace(figures, problems=tuple(problems), kept=tuple(kept)), decoded


def _decode(codec: object, data: bytes, instance: Instance) -> np.ndarray:
    pixels = codec.decode(data, instance.rows, instance.cols)  # type: ignore[attr-defined]
    rgb: np.ndarray = rgb_from_layout(pixels, codec.decoded_layout)  # type: ignore[attr-defined]
    return rgb


def _round_trip(instance: Instance, ideal: np.ndarray, source: bytes) -> np.ndarray:
    assert instance.coding is not None
    if instance.coding.compression == Compression.JPEG:
        return jpeg_round_trip(ideal, source, None, instance.coding.photometric == Photometric.RGB)
    ycbcr = instance.coding.compression == Compression.JPEG2000_YCBCR
    return jpeg2000_round_trip(ideal, source, ycbcr)


def _settings_problem(instance: Instance, source: bytes, copy_bytes: bytes) -> str | None:
    """A frame whose coding settings changed: JPEG tables or sampling, JPEG 2000 coding."""
    assert instance.coding is not None
    if instance.coding.compression == Compression.JPEG:
        if jpeg_settings(source, None) != jpeg_settings(copy_bytes, None):
            return "quantisation tables or sampling differ from the original's"
    elif instance.coding.compression != Compression.NONE:
        from svsicc.codecs.jpeg2k import parse_header

        a, b = parse_header(source), parse_header(copy_bytes)
        same = (a.coding.reversible, a.coding.levels, a.coding.mct) == (
            b.coding.reversible, b.coding.levels, b.coding.mct,
        )  # fmt: skip
        if not same or (a.width, a.height) != (b.width, b.height):
            return f"JPEG 2000 coding {b.summary()}, the original's {a.summary()}"
    return None


def _figures(
    number: int,
    instance: Instance,
    total: int,
    decoded: int,
    acc: Accumulator,
    floor: Accumulator,
    lossless: bool,
) -> PageFigures:
    from svsicc.dicom.syntax import transfer_syntax_name

    return figures_of(
        number,
        instance.flavor.lower(),
        transfer_syntax_name(instance.transfer_syntax),
        len(instance.frames.frames),
        decoded,
        acc,
        floor,
        lossless,
    )


def _identity_figures(number: int, instance: Instance) -> PageFigures:
    empty = Accumulator()
    figures = _figures(number, instance, 0, len(instance.frames.frames), empty, empty, True)
    return replace(figures, method="bytes", psnr=None)


def _bias(acc: Accumulator) -> tuple[float, float, float]:
    if not acc.pixels:
        return (0.0, 0.0, 0.0)
    r, g, b = (float(v) / acc.pixels for v in acc.signed)
    return (r, g, b)


def in_dicom_words(text: str) -> str:
    """A verification text written for TIFF, in DICOM's words: instances and frames, not IFDs
    and segments or tiles."""
    for tiff_word, dicom_word in (
        (" IFDs", " instances"),
        ("IFD ", "instance "),
        ("segment(s)", "frame(s)"),
        ("segments", "frames"),
        ("segment ", "frame "),
        ("tiles", "frames"),
    ):
        text = text.replace(tiff_word, dicom_word)
    return text
