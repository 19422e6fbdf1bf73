"""DICOM WSI: apply on real wsidicomizer series, read back by OpenSlide, wsidicom and pydicom.

The colour check is independent of svsicc's writer and table: the ideal is Pillow's LittleCMS
applied to OpenSlide's reading of the input, the floor that ideal re-encoded frame by frame by
Pillow with each source frame's own tables (svsicc.check.floor), the limits svsicc's verify
uses (svsicc.check.margins).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.encaps import generate_frames, get_frame  # noqa: E402

from svsicc.check.floor import jpeg_round_trip  # noqa: E402
from svsicc.check.margins import MARGINS, psnr_from_mse  # noqa: E402
from svsicc.colour.transform import default_target  # noqa: E402
from svsicc.dicom.apply import apply_dicom  # noqa: E402
from svsicc.dicom.info import dicom_info  # noqa: E402
from svsicc.dicom.marking import scanner_class  # noqa: E402
from svsicc.dicom.pixeldata import index_frames  # noqa: E402
from svsicc.dicom.verify import verify_dicom  # noqa: E402
from tests.conftest import DATA, SCANSCOPE  # noqa: E402

DICOM = DATA / "dicom"
CMU = DICOM / "cmu1-scanscope"
FRAME = 240  # the CMU series' frame size


def instances(folder: Path) -> dict[str, list[tuple[Path, pydicom.Dataset]]]:
    """Every instance of ``folder`` by flavor (VOLUME...), read whole by pydicom."""
    found: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        found.setdefault(str(ds.ImageType[2]), []).append((path, ds))
    return found


def frames_of(ds: pydicom.Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


@pytest.fixture(scope="module")
def cmu_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dicom") / "cmu-srgb"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SVSICC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "svsicc-cache"))
        result = apply_dicom(CMU, out, workers=1)
    assert [p.role for p in result.pages] == ["volume", "thumbnail", "label", "overview"]
    assert [p.rewritten for p in result.pages] == [130, 1, 0, 0]
    yield out


def test_openslide_opens_the_copy_with_the_scnr_srgb_profile(cmu_copy: Path) -> None:
    import openslide
    from openslide import lowlevel
    from PIL import ImageCms

    expected = scanner_class(default_target()).data
    assert expected[12:16] == b"scnr"
    for path in cmu_copy.glob("*.dcm"):  # OpenSlide's DICOM driver takes any file of the series
        with openslide.OpenSlide(path) as slide:
            assert slide.properties["openslide.vendor"] == "dicom"
            assert lowlevel.read_icc_profile(slide._osr) == expected
            assert slide.color_profile is not None
            assert set(slide.associated_images) == {"label", "macro", "thumbnail"}
    ImageCms.getOpenProfile(io.BytesIO(expected))  # LittleCMS reads it


def test_openslide_pixels_match_littlecms_within_the_floor(cmu_copy: Path) -> None:
    import openslide
    from PIL import ImageCms

    # Whole frames only: OpenSlide does not show the padding of edge frames.
    width, height = 2220 // FRAME * FRAME, 2967 // FRAME * FRAME
    with openslide.OpenSlide(next(CMU.glob("*.dcm"))) as slide:
        before = slide.read_region((0, 0), 0, (width, height)).convert("RGB")
    with openslide.OpenSlide(next(cmu_copy.glob("*.dcm"))) as slide:
        after = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    transform = ImageCms.buildTransform(
        ImageCms.getOpenProfile(str(SCANSCOPE)),
        ImageCms.getOpenProfile(io.BytesIO(scanner_class(default_target()).data)),
        "RGB",
        "RGB",
        renderingIntent=ImageCms.Intent.PERCEPTUAL,
    )
    ideal = np.asarray(ImageCms.applyTransform(before, transform))
    (_path, volume), *_ = instances(CMU)["VOLUME"]
    sources = frames_of(volume)
    columns = -(-int(volume.TotalPixelMatrixColumns) // FRAME)
    floor = np.empty_like(ideal)
    for y in range(0, height, FRAME):
        for x in range(0, width, FRAME):
            tile = ideal[y : y + FRAME, x : x + FRAME]
            source = sources[(y // FRAME) * columns + x // FRAME]
            floor[y : y + FRAME, x : x + FRAME] = jpeg_round_trip(tile, source, None, True)
    copy_psnr, floor_psnr = _psnr(after, ideal), _psnr(floor, ideal)
    copy_mean, floor_mean = _mean_abs(after, ideal), _mean_abs(floor, ideal)
    print(
        f"copy {copy_psnr:.2f} dB mean {copy_mean:.3f}; floor {floor_psnr:.2f} dB {floor_mean:.3f}"
    )
    assert copy_psnr >= floor_psnr - MARGINS.psnr_db
    assert copy_mean <= floor_mean * MARGINS.ratio + MARGINS.mean_abs
    # and the profile did something: the untouched input is far from the ideal
    assert _psnr(np.asarray(before), ideal) < floor_psnr - 5


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    value = psnr_from_mse(float(np.mean((a.astype(np.float64) - b) ** 2)))
    assert value is not None
    return value


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int32) - b)))


def test_wsidicom_opens_the_copy(cmu_copy: Path) -> None:
    """wsidicom decodes the copy to OpenSlide's pixels (so within the floor, as above)."""
    import openslide
    from wsidicom import WsiDicom

    with WsiDicom.open(CMU) as before, WsiDicom.open(cmu_copy) as after:
        assert after.size == before.size and len(after.levels) == len(before.levels)
        region = np.asarray(after.read_region((0, 0), 0, (960, 960)).convert("RGB"))
        with openslide.OpenSlide(next(cmu_copy.glob("*.dcm"))) as slide:
            seen = np.asarray(slide.read_region((0, 0), 0, (960, 960)).convert("RGB"))
        assert np.array_equal(region, seen)
        assert after.read_label().tobytes() == before.read_label().tobytes()
        assert after.read_overview().tobytes() == before.read_overview().tobytes()


def test_label_and_overview_keep_their_pixel_data_and_profile(cmu_copy: Path) -> None:
    before, after = instances(CMU), instances(cmu_copy)
    for flavor in ("LABEL", "OVERVIEW"):
        (_p, old), (_q, new) = before[flavor][0], after[flavor][0]
        assert new.PixelData == old.PixelData
        assert new.OpticalPathSequence[0].ICCProfile == old.OpticalPathSequence[0].ICCProfile
        assert "DerivationDescription" not in new and list(new.ImageType) == list(old.ImageType)


def test_uids_are_new_and_references_stay_inside_the_copy(cmu_copy: Path) -> None:
    before, after = instances(CMU), instances(cmu_copy)
    old = [ds for found in before.values() for _p, ds in found]
    new = [ds for found in after.values() for _p, ds in found]
    old_uids = {str(ds.SOPInstanceUID) for ds in old} | {str(old[0].SeriesInstanceUID)}
    assert len({str(ds.SeriesInstanceUID) for ds in new}) == 1
    pyramids = {str(ds.PyramidUID) for ds in new if "PyramidUID" in ds}
    assert len(pyramids) == 1
    assert pyramids.isdisjoint(str(ds.PyramidUID) for ds in old if "PyramidUID" in ds)
    for ds in new:
        assert str(ds.SOPInstanceUID) not in old_uids
        assert str(ds.SeriesInstanceUID) not in old_uids
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == old[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == old[0].FrameOfReferenceUID
    for (path, ds), (_p, source) in zip(after["VOLUME"], before["VOLUME"], strict=True):
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        (reference,) = ds.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        # no other UI value names an instance or the series of the original
        stripped = ds.copy()
        del stripped.SourceImageSequence
        stripped.remove_private_tags()
        for element in stripped.iterall():
            if element.VR == "UI":
                assert str(element.value) not in old_uids, element


def _segments(stream: bytes, markers: set[int]) -> list[bytes]:
    """The header segments of a JPEG stream with one of ``markers`` (DQT, SOF0...)."""
    found, i = [], 2
    while i + 4 <= len(stream) and stream[i] == 0xFF and stream[i + 1] != 0xDA:
        length = int.from_bytes(stream[i + 2 : i + 4], "big")
        if stream[i + 1] in markers:
            found.append(stream[i : i + 2 + length])
        i += 2 + length
    return found


def test_coding_is_kept(cmu_copy: Path) -> None:
    before, after = instances(CMU), instances(cmu_copy)
    for flavor in ("VOLUME", "THUMBNAIL"):
        (_p, old), (_q, new) = before[flavor][0], after[flavor][0]
        assert new.file_meta.TransferSyntaxUID == old.file_meta.TransferSyntaxUID
        for keyword in ("PhotometricInterpretation", "Rows", "Columns", "NumberOfFrames"):
            assert new[keyword].value == old[keyword].value
        old_frames, new_frames = frames_of(old), frames_of(new)
        assert len(new_frames) == len(old_frames)
        for a, b in zip(old_frames, new_frames, strict=True):
            # DQT and SOF0 (the source puts its SOF first, the encoder its DQT: both valid)
            assert sorted(_segments(a, {0xDB, 0xC0})) == sorted(_segments(b, {0xDB, 0xC0}))
            assert a != b
        assert new.ImageType[0] == "DERIVED"
        assert new.LossyImageCompressionMethod == ["ISO_10918_1", "ISO_10918_1"]


def test_basic_offset_tables_point_at_every_frame(cmu_copy: Path) -> None:
    for path, ds in instances(cmu_copy)["VOLUME"]:
        n = int(ds.NumberOfFrames)
        frames = frames_of(ds)
        assert [get_frame(ds.PixelData, i, number_of_frames=n) for i in range(n)] == frames
        with open(path, "rb") as fh:
            pydicom.dcmread(fh, stop_before_pixels=True)
            index = index_frames(fh, path, fh.tell(), n, 0, True, None)
        assert index.offset_table == "basic" and len(index.frames) == n


def test_profile_record_and_verify(cmu_copy: Path) -> None:
    (_p, volume), *_ = instances(cmu_copy)["VOLUME"]
    path = volume.OpticalPathSequence[0]
    assert path.ICCProfile == scanner_class(default_target()).data and path.ColorSpace == "SRGB"
    assert "ICC profile applied by svsicc" in volume.DerivationDescription
    info = dicom_info(cmu_copy)
    assert info.applied is not None and info.applied.source_description == "ScanScope v1"
    assert info.profile is not None and info.profile.device_class == "scnr"
    result = verify_dicom(CMU, cmu_copy, sample=16)
    assert result.ok, result.problems
    assert result.unchanged_pages == (2, 3)
    level = result.pages[0]
    assert level.floor_psnr is not None and level.psnr is not None
    assert level.psnr >= level.floor_psnr - MARGINS.psnr_db


def test_verify_fails_a_copy_whose_frames_were_not_converted(
    cmu_copy: Path, tmp_path: Path
) -> None:
    forged = tmp_path / "forged"
    shutil.copytree(cmu_copy, forged)
    (copy_path, copy_ds), *_ = instances(forged)["VOLUME"]
    (_p, original), *_ = instances(CMU)["VOLUME"]
    copy_ds.PixelData = original.PixelData  # the record says converted; the pixels are not
    copy_ds.save_as(copy_path)
    result = verify_dicom(CMU, forged, sample=8)
    assert not result.ok
    assert any("frame" in line and "floor" in line for line in result.problems), result.problems


def _no_color_space(ds: pydicom.Dataset) -> None:
    del ds.OpticalPathSequence[0].ColorSpace


def _no_profile(ds: pydicom.Dataset) -> None:
    del ds.OpticalPathSequence[0].ICCProfile


def _no_derivation(ds: pydicom.Dataset) -> None:
    del ds.DerivationDescription


def _no_source_image(ds: pydicom.Dataset) -> None:
    del ds.SourceImageSequence


def _derivation_edited(ds: pydicom.Dataset) -> None:
    ds.DerivationDescription = "edited; " + ds.DerivationDescription


def _source_image_added(ds: pydicom.Dataset) -> None:
    ds.SourceImageSequence = [*ds.SourceImageSequence, pydicom.Dataset()]


def _image_type_original(ds: pydicom.Dataset) -> None:
    ds.ImageType = ["ORIGINAL", *ds.ImageType[1:]]


def _frame_type_original(ds: pydicom.Dataset) -> None:
    item = ds.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence[0]
    item.FrameType = ["ORIGINAL", *item.FrameType[1:]]


def _label_derived(ds: pydicom.Dataset) -> None:
    ds.ImageType = ["DERIVED", *ds.ImageType[1:]]


@pytest.mark.parametrize(
    ("flavor", "tamper", "expected"),
    [
        ("VOLUME", _no_color_space, "OpticalPathSequence[0] ColorSpace (0028,2002) is missing"),
        ("VOLUME", _no_profile, "OpticalPathSequence[0] ICCProfile (0028,2000) is missing"),
        ("THUMBNAIL", _no_derivation, "DerivationDescription (0008,2111) lacks svsicc's"),
        ("VOLUME", _derivation_edited, "is not the original's followed by svsicc's sentence"),
        ("VOLUME", _no_source_image, "SourceImageSequence (0008,2112) has no item naming"),
        ("VOLUME", _source_image_added, "does not keep the original's items"),
        ("VOLUME", _image_type_original, "ImageType (0008,0008) value 1 is 'ORIGINAL'"),
        ("THUMBNAIL", _frame_type_original, "FrameType (0008,9007) value 1 is 'ORIGINAL'"),
        ("LABEL", _label_derived, "attributes differ: ImageType"),  # kept: keeps its own
    ],
)
def test_verify_fails_a_copy_missing_a_mark(
    cmu_copy: Path, tmp_path: Path, flavor: str, tamper: Callable[[pydicom.Dataset], None],
    expected: str,
) -> None:  # fmt: skip
    forged = tmp_path / "forged"
    shutil.copytree(cmu_copy, forged)
    (path, ds), *_ = instances(forged)[flavor]
    tamper(ds)
    ds.save_as(path)
    result = verify_dicom(CMU, forged, sample=2)
    assert not result.ok
    found = [line for line in result.problems if expected in line]
    assert found, result.problems
    assert flavor == "LABEL" or path.name in found[0]


@pytest.mark.parametrize(
    ("series", "lossless", "identity"),
    [
        ("small-j2k-ict", False, False),
        ("small-j2k-rct", True, False),
        ("small-native", True, False),
        ("small-default", True, True),
    ],
)
def test_other_codings(series: str, lossless: bool, identity: bool, tmp_path: Path) -> None:
    import openslide

    out = tmp_path / "out"
    result = apply_dicom(DICOM / series, out, workers=1)
    assert result.identity is identity
    with openslide.OpenSlide(next(out.glob("*.dcm"))) as slide:
        assert slide.color_profile is not None
        slide.read_region((0, 0), 0, (16, 16))
    check = verify_dicom(DICOM / series, out)
    assert check.ok, check.problems
    if identity:
        assert [p.method for p in check.pages] == ["bytes", "bytes"]
    elif lossless:
        assert all(p.lossless and p.max_abs == 0 for p in check.pages)
    before, after = instances(DICOM / series), instances(out)
    for flavor, found in after.items():
        (_p, new), (_q, old) = found[0], before[flavor][0]
        assert new.file_meta.TransferSyntaxUID == old.file_meta.TransferSyntaxUID
        assert new.PhotometricInterpretation == old.PhotometricInterpretation
        if "ExtendedOffsetTable" in old:
            n = int(new.NumberOfFrames)
            tables = (new.ExtendedOffsetTable, new.ExtendedOffsetTableLengths)
            frame = get_frame(new.PixelData, 0, number_of_frames=n, extended_offsets=tables)
            assert frame[:2] == b"\xff\x4f"  # a JPEG 2000 codestream starts there


def test_two_workers_write_the_same_frames(cmu_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "two"
    result = apply_dicom(CMU, out, workers=2)
    assert result.workers == 2
    one, two = instances(cmu_copy)["VOLUME"][0][1], instances(out)["VOLUME"][0][1]
    assert frames_of(one) == frames_of(two)


def test_every_optical_path_gets_the_target_also_where_the_original_had_none(
    tmp_path: Path,
) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(DICOM / "small-j2k-ict", bare)
    for path, ds in (item for found in instances(bare).values() for item in found):
        for optical_path in ds.OpticalPathSequence:
            for keyword in ("ICCProfile", "ColorSpace"):
                if keyword in optical_path:
                    delattr(optical_path, keyword)
        ds.save_as(path)
    srgb = scanner_class(default_target()).data
    for target, space in ((None, "SRGB"), (DATA / "sRGB-v2-magic.icc", "SRGB"),
                          (DATA / "sRGB-v4.icc", None)):  # fmt: skip
        out = tmp_path / f"out-{space}-{target is None}"
        apply_dicom(bare, out, fallback_profile=SCANSCOPE, target=target, workers=1)
        for _path, ds in (item for found in instances(out).values() for item in found):
            for optical_path in ds.OpticalPathSequence:
                assert optical_path.get("ColorSpace") == space
                assert (optical_path.ICCProfile == srgb) is (space is not None)
        result = verify_dicom(bare, out, fallback_profile=SCANSCOPE)
        assert result.ok, result.problems
