"""The DICOM WSI driver: VL Whole Slide Microscopy Image Storage series, one slide per series.

``svsicc apply INPUT OUTPUT`` with INPUT a folder of instances (or one .dcm file, whose series
is read from its folder) writes OUTPUT, a new folder holding a new series:

- VOLUME and THUMBNAIL instances: every frame decoded, converted from the optical path's ICC
  profile (``OpticalPathSequence[i].ICCProfile``; apply's policy of :mod:`svsicc.convert.plan`
  for --profile and --fallback-profile) to the target with LittleCMS (the exact table), and
  re-encoded with the same transfer syntax, photometric interpretation, subsampling and
  quantisation tables (:mod:`.syntax` maps each to svsicc's codecs); the ICC Profile of every
  optical path (also one that had none) becomes the target as an input-class ('scnr') profile
  (:func:`.marking.scanner_class`) and ColorSpace (0028,2002) says SRGB (removed for a --target
  that is not the built-in sRGB); Image Type and Frame Type value 1 become DERIVED; Lossy Image
  Compression Ratio/Method gain the re-encode.
- LABEL and OVERVIEW instances (another camera): Pixel Data byte for byte, profile kept.
- Every instance: a new SOP Instance UID (also in the file meta and the file name where the
  name held the old one), one new Series Instance UID and Pyramid UID for the copy, and every
  reference (any UI value naming an instance, the series, the pyramid or a concatenation of
  the series) pointing inside the copy. Study, frame of reference and dimension organisation
  stay. Every other attribute is kept; whatever follows the Pixel Data is copied as it is.
- Offset tables: a basic table is rebuilt (promoted to an extended one past 4 GiB), an extended
  one rebuilt, an empty one stays empty; each frame is one fragment.

The record (:mod:`.marking`) is kept twice so that it survives tools that strip private
attributes: a private block (group 0x0009, creator ``svsicc``) in every instance:

    (0009,xx01) LT source profile description     (0009,xx06) LO by: "svsicc VERSION"
    (0009,xx02) LO source profile sha256          (0009,xx07) UI original SOP Instance UID
    (0009,xx03) LO intent ("perceptual")          (0009,xx08) CS CONVERTED or KEPT
    (0009,xx04) LT target profile description     (0009,xx09) LT frames kept unconverted
    (0009,xx05) LO mode (transformed, identity)

and, in every converted instance, Derivation Description (appended to any already there) holding
``ICC profile applied by svsicc VERSION: 'SOURCE' (sha256 HEX) -> 'TARGET' (INTENT, MODE)``,
with a Source Image Sequence item naming the original instance (purpose DCM 121322, "Source
image for image processing operation"). ``info`` reads either back; ``apply`` refuses a series
that carries either (:class:`~svsicc.exceptions.AlreadyAppliedError`).

OUTPUT is built in ``.OUTPUT.PID.svsicc-tmp`` beside it and renamed into place when complete
(:mod:`.output`); the input is only read. OUTPUT must be a folder apart from the input's (not
it, inside it or holding it); ``overwrite`` replaces only an empty folder or an svsicc copy.

The public functions return svsicc's result types:
:func:`~.apply.apply_dicom` an :class:`~svsicc.convert.apply.ApplyResult` (pages are
instances), :func:`~.verify.verify_dicom` a :class:`~svsicc.check.figures.VerifyResult`,
:func:`~.info.dicom_info` a :class:`~.info.DicomSeriesInfo`. ``svsicc.apply``, ``verify``,
``info`` and ``report`` (:mod:`svsicc.api`) hand a folder or a DICOM file to them, and so do the
command line and migrate, which call those.

Layers: :mod:`.detect`, :mod:`.syntax`, :mod:`.pixeldata`, :mod:`.series`, :mod:`.marking` and
:mod:`.output` are the driver (beside :mod:`svsicc.aperio`); :mod:`.apply` sits on
:mod:`svsicc.convert`, :mod:`.verify` on :mod:`svsicc.check`, :mod:`.info` on both;
:mod:`.bench` and :mod:`.report` (with :mod:`.pixels`, frames laid out for its pictures) run
the timing loop and the report of :mod:`svsicc.check` on a series. pydicom (the
``dicom`` extra) is imported only when a DICOM input is read.
"""
