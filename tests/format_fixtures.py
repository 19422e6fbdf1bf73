"""Small generic tiled TIFFs and Ventana/Roche BIFs built from real pixels, for the format drivers.

Every file is written by tifffile (an independent TIFF writer, not svsicc's), from a crop of level
0 of the real ``CMU-1-Small-Region.svs`` (20x, 0.499 um/px), with the real ScanScope v1 profile
(``ScanScope_v1_from_CMU-Embed.icc``, a 16-bit LUT profile) in tag 34675 of level 0.

API
---
``real_crop(width, height, origin=DEFAULT_ORIGIN)``  a crop of the CMU-1 level-0 pixels.
``write_generic_tiff(path, *, compression, ...)``  a pyramid OpenSlide's generic-tiff driver opens:
    every level its own top-level tiled IFD (no SubIFDs), descending sizes, NewSubfileType 1
    (reduced image) on all but the first, which OpenSlide requires of every IFD after the first.
``write_ventana_bif(path, ...)``  a BigTIFF laid out like a Roche scanner's BIF, which OpenSlide's
    ventana driver opens (see the function for the IFD list and the XML).
``bif_level0_size(...)``  the level-0 size OpenSlide reports for a BIF written with those settings.

Generic TIFF variants (``compression``, ``photometric``), as tifffile writes them:
- ``"jpeg"`` / ``"ycbcr"``: Compression 7, Photometric 6, YCbCrSubSampling (2, 2),
  ReferenceBlackWhite; each tile a complete JFIF stream (tifffile writes no JPEGTables).
- ``"jpeg"`` / ``"rgb"``: Compression 7, Photometric 2, YCbCrSubSampling (1, 1); each tile a
  complete stream in RGB colourspace (Adobe APP14, transform 0).
- ``"lzw"`` / ``"none"``: Compression 5 / 1, Photometric 2 (``predictor=True`` adds Predictor 2).
- ``"jp2k-33005"``: Compression 33005, Photometric 2, raw J2K codestreams of RGB with MCT.
- ``"jp2k-33003"``: Compression 33003, Photometric 2 (as Aperio writes it), raw J2K codestreams
  of YCbCr samples (``tests.synthetic.rgb_to_ycbcr``) without MCT.
  JPEG 2000 is lossless unless ``j2k_psnr`` is given. OpenSlide's generic-tiff driver refuses
  both codes ("Unsupported TIFF compression"): only its Aperio driver decodes them.

ImageDescription: by default (``description="tifffile"``) whatever tifffile writes on its own,
i.e. its JSON shape description (``{"shape": [h, w, 3]}``) on every level, because real generic
TIFFs written with tifffile carry exactly that, and svsicc must take it for no vendor's mark.
``description=None`` writes no ImageDescription; a string writes that text on level 0 only.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

from tests.synthetic import DATA_DIR, load_real_pixels, rgb_to_ycbcr

RGB = npt.NDArray[np.uint8]

SCANSCOPE_PROFILE = (DATA_DIR / "ScanScope_v1_from_CMU-Embed.icc").read_bytes()
#: top-left corner (x, y) of the default crop: the tissue in the lower half of CMU-1-Small-Region
DEFAULT_ORIGIN = (600, 1500)
CMU_MPP = 0.499  # CMU-1's MPP, as its Aperio ImageDescription records it
CMU_MAGNIFICATION = 20

GenericCompression = Literal["jpeg", "lzw", "none", "jp2k-33005", "jp2k-33003"]
Photometric = Literal["ycbcr", "rgb"]
BifModel = Literal["dp200", "iscan"]


# --------------------------------------------------------------------------- pixels


@functools.cache
def _cmu_level0() -> RGB:
    return load_real_pixels("CMU-1-Small-Region.svs")


def real_crop(width: int, height: int, origin: tuple[int, int] = DEFAULT_ORIGIN) -> RGB:
    """A ``height`` x ``width`` x 3 copy of CMU-1-Small-Region's level 0 from ``origin`` (x, y)."""
    src = _cmu_level0()
    x, y = origin
    if x < 0 or y < 0 or x + width > src.shape[1] or y + height > src.shape[0]:
        raise ValueError(
            f"a {width}x{height} crop at {origin} leaves the {src.shape[1]}x{src.shape[0]} source"
        )
    return src[y : y + height, x : x + width].copy()


def halve(img: RGB) -> RGB:
    """2x2 area mean, rounded (an odd last row/column is dropped)."""
    h, w = img.shape[0] // 2, img.shape[1] // 2
    if h < 1 or w < 1:
        raise ValueError(f"cannot halve a {img.shape[1]}x{img.shape[0]} image")
    x = img[: 2 * h, : 2 * w].astype(np.uint16)
    total = x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]
    out: RGB = ((total + 2) // 4).astype(np.uint8)
    return out


def pyramid(img: RGB, levels: int) -> list[RGB]:
    """``img`` and ``levels - 1`` successive halvings of it."""
    out = [img]
    for _ in range(levels - 1):
        out.append(halve(out[-1]))
    return out


def ycbcr_to_rgb(ycc: RGB) -> RGB:
    """JPEG/JFIF full-range BT.601 YCbCr to RGB (what OpenSlide does to 33003 samples)."""
    y, cb, cr = (ycc[..., i].astype(np.float32) for i in range(3))
    cb, cr = cb - 128, cr - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    out: RGB = np.rint(rgb).clip(0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- generic TIFF


def write_generic_tiff(
    path: str | Path,
    *,
    compression: GenericCompression,
    photometric: Photometric | None = None,
    tile: int = 256,
    levels: int = 3,
    profile: bytes | None = SCANSCOPE_PROFILE,
    profile_on_all_levels: bool = False,
    bigtiff: bool = False,
    pixels: RGB | None = None,
    size: tuple[int, int] = (720, 500),
    quality: int = 90,
    j2k_psnr: float | None = None,
    predictor: bool = False,
    stripped_thumbnail: bool = False,
    description: str | Literal["tifffile"] | None = "tifffile",
    mpp: float | None = CMU_MPP,
) -> Path:
    """Write a pyramidal tiled TIFF of ``pixels`` (default: ``real_crop(*size)``) with tifffile.

    ``photometric`` applies to ``"jpeg"`` only (default ``"ycbcr"``); the other codecs are RGB.
    Level ``k`` is level 0 halved ``k`` times; every level is a top-level tiled IFD with tiles of
    ``tile`` x ``tile`` (edge tiles zero-padded by tifffile). ``profile`` goes into tag 34675 of
    level 0 only (tifffile's ``iccprofile=`` tags just the page it writes), or of every level with
    ``profile_on_all_levels``. ``stripped_thumbnail`` inserts a stripped (untiled) JPEG thumbnail
    as IFD 1, NewSubfileType 1, which the generic-tiff driver skips. ``mpp`` sets XResolution /
    YResolution in pixels per centimetre (OpenSlide reports it as ``openslide.mpp-x``).
    """
    if photometric is None:
        photometric = "ycbcr" if compression == "jpeg" else "rgb"
    if photometric == "ycbcr" and compression != "jpeg":
        raise ValueError(f"photometric YCbCr needs JPEG, not {compression}")
    img = real_crop(*size) if pixels is None else np.ascontiguousarray(pixels[..., :3])
    options = _generic_codec(compression, photometric, quality, j2k_psnr, predictor)
    if mpp is not None:
        options.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for k, level in enumerate(pyramid(img, levels)):
            data = rgb_to_ycbcr(level) if compression == "jp2k-33003" else level
            text: dict[str, Any] = {}
            if description is None or (description != "tifffile" and k > 0):
                text = {"metadata": None}
            elif description != "tifffile":
                text = {"metadata": None, "description": description}
            tif.write(
                data,
                tile=(tile, tile),
                subfiletype=0 if k == 0 else 1,
                iccprofile=profile if k == 0 or profile_on_all_levels else None,
                **text,
                **options,
            )
            if k == 0 and stripped_thumbnail:
                step = max(1, max(img.shape[:2]) // 256)
                tif.write(
                    np.ascontiguousarray(img[::step, ::step]),
                    rowsperstrip=16,
                    subfiletype=1,
                    compression="jpeg",
                    photometric="rgb",
                    compressionargs={"level": quality},
                    metadata=None,
                )
    return path


def _generic_codec(
    compression: GenericCompression,
    photometric: Photometric,
    quality: int,
    j2k_psnr: float | None,
    predictor: bool,
) -> dict[str, Any]:
    """tifffile.write arguments for one variant."""
    if compression == "jpeg":
        if photometric == "ycbcr":
            # RGB input; tifffile converts to YCbCr and tags Photometric 6 (its JPEG default)
            return {
                "compression": "jpeg",
                "photometric": "rgb",
                "subsampling": (2, 2),
                "compressionargs": {"level": quality},
            }
        return {
            "compression": "jpeg",
            "photometric": "rgb",
            "subsampling": (1, 1),
            "compressionargs": {"level": quality, "outcolorspace": "rgb"},
        }
    if compression == "lzw":
        return {"compression": "lzw", "photometric": "rgb", "predictor": predictor}
    if compression == "none":
        return {"compression": None, "photometric": "rgb"}
    # tifffile passes compressionargs to imagecodecs.jpeg2k_encode, as J2K codestreams
    args: dict[str, Any] = {"mct": compression == "jp2k-33005"}
    if j2k_psnr is not None:
        args.update(level=j2k_psnr, reversible=False)
    code = 33005 if compression == "jp2k-33005" else 33003
    return {"compression": code, "photometric": "rgb", "compressionargs": args}


# --------------------------------------------------------------------------- Ventana BIF

SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def _jpeg_segments(data: bytes) -> tuple[list[bytes], bytes]:
    """The marker segments of a JPEG stream up to and including SOS, and the rest."""
    segments = []
    i = 2
    while True:
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        segments.append(data[i:end])
        if data[i + 1] == 0xDA:
            return segments, data[end:]
        i = end


def split_jpeg(data: bytes) -> tuple[bytes, bytes]:
    """(abbreviated stream, tables-only stream) of a complete baseline JPEG, as in TIFF JPEG
    with JPEGTables (TIFF Technical Note 2): DQT and DHT move to the tables; APPn are dropped."""
    segments, scan = _jpeg_segments(data)
    tables = [s for s in segments if s[1] in (0xDB, 0xC4)]
    frame = [s for s in segments if s[1] in (0xC0, 0xDD, 0xDA)]
    return SOI + b"".join(frame) + scan, SOI + b"".join(tables) + EOI


def _pillow_jpeg(rgb: RGB, quality: int, subsampling: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def _tiles(img: RGB, tw: int, th: int) -> Iterator[RGB]:
    """Row-major tiles of ``img``, edge tiles padded by repeating the last row/column."""
    for y in range(0, img.shape[0], th):
        for x in range(0, img.shape[1], tw):
            block = img[y : y + th, x : x + tw]
            if block.shape[:2] != (th, tw):
                pad = ((0, th - block.shape[0]), (0, tw - block.shape[1]), (0, 0))
                block = np.pad(block, pad, mode="edge")
            yield np.ascontiguousarray(block)


def _encoded_tiles(
    img: RGB, tw: int, th: int, quality: int, subsampling: int, tables: bool
) -> tuple[list[bytes], bytes | None]:
    """JPEG tiles of ``img``; with ``tables`` abbreviated, plus the JPEGTables they share."""
    streams = [_pillow_jpeg(t, quality, subsampling) for t in _tiles(img, tw, th)]
    if not tables:
        return streams, None
    split = [split_jpeg(s) for s in streams]
    shared = split[0][1]
    # libjpeg without optimize_coding: the standard Huffman tables and the quality's quant
    # tables, the same for every tile, or sharing them would be wrong
    if any(t != shared for _, t in split):
        raise AssertionError("JPEG tiles do not share their tables")
    return [s for s, _ in split], shared


def serpentine_number(col: int, row: int, cols: int, rows: int) -> int:
    """1-based number of tile (col, row) (image coordinates, row 0 at the top) in the scanner's
    numbering that TileJointInfo uses: from the bottom-left tile, left to right along the bottom
    row, right to left along the next row up, and so on (as OpenSlide's get_tile_coordinates
    inverts it)."""
    snake_row = rows - 1 - row
    snake_col = cols - 1 - col if snake_row % 2 else col
    return snake_row * cols + snake_col + 1


def bif_level0_size(
    cols: int, rows: int, tile_width: int, tile_height: int, overlap: tuple[int, int]
) -> tuple[int, int]:
    """(width, height) of the stitched level 0: tiles advance by tile size minus overlap."""
    return (
        (cols - 1) * (tile_width - overlap[0]) + tile_width,
        (rows - 1) * (tile_height - overlap[1]) + tile_height,
    )


def raw_tile_grid(
    stitched: RGB, cols: int, rows: int, tw: int, th: int, adv: tuple[int, int]
) -> RGB:
    """The camera frames of ``stitched`` side by side, as a BIF's level-0 IFD holds them: frame
    (c, r) is ``stitched[r*adv_y : r*adv_y+th, c*adv_x : c*adv_x+tw]``."""
    raw = np.empty((rows * th, cols * tw, 3), np.uint8)
    for r in range(rows):
        for c in range(cols):
            y, x = r * adv[1], c * adv[0]
            raw[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = stitched[y : y + th, x : x + tw]
    return raw


def _attrs(**values: object) -> str:
    return " ".join(f'{k.replace("_", "-")}="{v}"' for k, v in values.items())


def iscan_xml(model: BifModel, width: int, height: int, magnification: int, mpp: float) -> str:
    """IFD 0's XMP: the iScan element (in a Metadata root, as DP 200 writes it, or as the root,
    as the older iScan scanners do) with one AOI in physical coordinates (Top above Bottom)."""
    scanner = "VENTANA DP 200" if model == "dp200" else "VENTANA iScan HT"
    iscan = (
        f'<iScan Mode="brightfield" Magnification="{magnification}" ScanRes="{mpp}" '
        f'UnitNumber="2000001" ScannerModel="{scanner}" Z-layers="1" Z-spacing="1" '
        'UserName="svsicc-tests" BuildVersion="1.0.0.0" BuildDate="1/1/2020 0:0:0 AM" '
        'SlideAnnotation="" Barcode1D="" Barcode2D="" FocusMode="0" FocusQuality="1" '
        'ScanMode="1" ScanWhitePoint="255" Anonymization="0">'
        f'<AOI0 Left="0" Top="{height}" Right="{width}" Bottom="0" AOIScanned="1"/>'
        "</iScan>"
    )
    body = f"<Metadata>{iscan}</Metadata>" if model == "dp200" else iscan
    return f'<?xml version="1.0" encoding="utf-8"?>\n{body}'


def encode_info_xml(
    cols: int, rows: int, tw: int, th: int, overlap: tuple[int, int], confidence: int = 100
) -> str:
    """Level 0's XMP: EncodeInfo with one scanned AOI at the origin and a TileJointInfo for every
    pair of neighbouring frames, numbered in the serpentine order. Horizontal joints are written
    RIGHT (Tile2 right of Tile1) and vertical ones UP (Tile2 above Tile1): OpenSlide accepts only
    those two directions."""
    joints = []
    for row in range(rows - 1, -1, -1):  # bottom row first, like the scanner
        for col in range(cols):
            here = serpentine_number(col, row, cols, rows)
            if col + 1 < cols:
                right = serpentine_number(col + 1, row, cols, rows)
                joints.append(("RIGHT", here, right, overlap[0], 0))
            if row > 0:
                up = serpentine_number(col, row - 1, cols, rows)
                joints.append(("UP", here, up, 0, overlap[1]))
    joint_xml = "".join(
        f'<TileJointInfo FlagJoined="1" Confidence="{confidence}" Direction="{d}" '
        f'Tile1="{t1}" Tile2="{t2}" OverlapX="{ox}" OverlapY="{oy}"/>'
        for d, t1, t2, ox, oy in joints
    )
    grid = _attrs(NumRows=rows, NumCols=cols)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<EncodeInfo Ver="2">'
        '<SlideInfo Rack="0" Slot="0" BaseName="svsicc-fixture">'
        f'<AoiInfo XIMAGESIZE="{tw}" YIMAGESIZE="{th}" {grid} Pos-X="0" Pos-Y="0" DirPath=""/>'
        "</SlideInfo>"
        '<SlideStitchInfo Left="-1" Top="-1" Right="-1" Bottom="-1">'
        f'<ImageInfo AOIScanned="1" AOIIndex="0" {grid} Width="{tw}" Height="{th}" '
        f'Pos-X="0" Pos-Y="0">{joint_xml}</ImageInfo>'
        "</SlideStitchInfo>"
        '<AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin>'
        "</EncodeInfo>"
    )


def write_ventana_bif(
    path: str | Path,
    *,
    cols: int = 4,
    rows: int = 3,
    tile_width: int = 256,
    tile_height: int = 320,
    overlap: tuple[int, int] = (0, 0),
    levels: int = 3,
    quality: int = 90,
    subsampling: tuple[int, int] = (2, 2),
    jpeg_tables: bool = True,
    profile: bytes | None = SCANSCOPE_PROFILE,
    model: BifModel = "dp200",
    encode_info: bool = True,
    pixels: RGB | None = None,
    magnification: int = CMU_MAGNIFICATION,
    mpp: float = CMU_MPP,
    bigtiff: bool = True,
) -> Path:
    """Write a Ventana/Roche BIF of a ``cols`` x ``rows`` grid of camera frames with tifffile.

    IFDs, in file order (all NewSubfileType 0, Software "ScanOutputManager 1.0.0.0"):
      0 ``Label_Image``: overview of the whole CMU-1 region (stripped JPEG YCbCr 4:2:0); XMP
        (tag 700, BYTE) = ``iscan_xml`` -- OpenSlide's detection looks only here.
      1 ``model="dp200"``: ``Probability_Image`` (8-bit grey tissue mask, stripped LZW), which
        OpenSlide ignores; ``model="iscan"``: ``Thumbnail`` (stripped JPEG), OpenSlide's
        ``thumbnail`` associated image.
      2 ``level=0 mag=20 quality=90``: tiled JPEG, Photometric YCbCr, YCbCrSubSampling
        ``subsampling``, abbreviated tiles sharing JPEGTables (``jpeg_tables``), ICC profile
        (tag 34675: OpenSlide reads it from level 0), XMP = ``encode_info_xml``.
      3.. ``level=k mag=20/2^k quality=90``: the same codec, no XMP, no ICC.

    Level 0 is ``cols * tile_width`` x ``rows * tile_height``: the frames side by side, each
    overlapping its right and lower neighbours by ``overlap`` (x, y) pixels of the stitched image
    (``bif_level0_size``), which OpenSlide removes using the TileJointInfo overlaps. Level k is
    that raw frame grid halved k times (so every level-k tile packs 2^k x 2^k downsampled frames,
    as OpenSlide's BIF reader expects). With ``encode_info=False`` the file is the "Ventana TIFF"
    kind OpenSlide also reads (no XMP on level 0, so no AOIs or overlaps): level 0 is the plain
    image and each level a plain halving of it.
    """
    d = 1 << (levels - 1)
    if cols < 2 or rows < 2:
        raise ValueError("OpenSlide needs both RIGHT and UP joints: at least 2x2 frames")
    if tile_width % 16 or tile_height % 16 or tile_width % d or tile_height % d:
        raise ValueError(f"tile sides must be multiples of 16 (TIFF) and of {d} (packing)")
    if not encode_info and overlap != (0, 0):
        raise ValueError("a Ventana TIFF without EncodeInfo has no overlaps")
    if not (0 <= overlap[0] < tile_width and 0 <= overlap[1] < tile_height):
        raise ValueError(f"overlap {overlap} out of range")
    width, height = bif_level0_size(cols, rows, tile_width, tile_height, overlap)
    if pixels is None:
        stitched = real_crop(width, height)
    else:
        stitched = np.ascontiguousarray(pixels[:height, :width, :3])
        if stitched.shape[:2] != (height, width):
            raise ValueError(f"pixels smaller than the {width}x{height} stitched level 0")
    if encode_info:
        adv = (tile_width - overlap[0], tile_height - overlap[1])
        level0 = raw_tile_grid(stitched, cols, rows, tile_width, tile_height, adv)
    else:
        level0 = stitched
    mode = {(1, 1): 0, (2, 1): 1, (2, 2): 2}[subsampling]
    common: dict[str, Any] = {"software": "ScanOutputManager 1.0.0.0", "metadata": None}
    overview = halve(halve(_cmu_level0()))  # the whole 2220x2967 region at 1/4
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        xmp0 = iscan_xml(model, width, height, magnification, mpp).encode()
        tif.write(
            overview,
            description="Label_Image",
            rowsperstrip=16,
            compression="jpeg",
            photometric="rgb",
            subsampling=(2, 2),
            compressionargs={"level": quality},
            extratags=[(700, 1, len(xmp0), xmp0, True)],
            **common,
        )
        if model == "dp200":
            grey = overview.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            mask = np.where(grey < 220, 255, 0).astype(np.uint8)
            tif.write(
                mask,
                description="Probability_Image",
                rowsperstrip=64,
                compression="lzw",
                photometric="minisblack",
                **common,
            )
        else:
            thumb = halve(halve(stitched))
            tif.write(
                thumb,
                description="Thumbnail",
                rowsperstrip=16,
                compression="jpeg",
                photometric="rgb",
                subsampling=(2, 2),
                compressionargs={"level": quality},
                **common,
            )
        for k, level in enumerate(pyramid(level0, levels)):
            tiles, tables = _encoded_tiles(
                level, tile_width, tile_height, quality, mode, jpeg_tables
            )
            extratags = []
            if k == 0 and encode_info:
                xmp = encode_info_xml(cols, rows, tile_width, tile_height, overlap).encode()
                extratags.append((700, 1, len(xmp), xmp, True))
            # tifffile writes the tiles as given (already JPEG-compressed, row-major) and
            # tags them as it would its own JPEG: Photometric 6, subsampling, ReferenceBlackWhite
            tif.write(
                iter(tiles),
                shape=level.shape,
                dtype=np.uint8,
                tile=(tile_height, tile_width),
                description=f"level={k} mag={magnification / (1 << k):g} quality={quality}",
                compression="jpeg",
                photometric="rgb",
                subsampling=subsampling,
                jpegtables=tables,
                iccprofile=profile if k == 0 else None,
                extratags=extratags,
                resolution=(1e4 / (mpp * (1 << k)),) * 2,
                resolutionunit="CENTIMETER",
                **common,
            )
    return path
