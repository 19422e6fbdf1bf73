"""The record svsicc leaves in a converted slide, as ``header|Key = Value|Key = Value`` text.

Aperio descriptions already have that form: OpenSlide exposes each key as an ``aperio.<Key>``
property, so for Aperio the record goes into IFD 0's ImageDescription, and ``ICC Profile`` names
what tag 34675 now holds. Generic TIFF and Ventana BIF descriptions belong to their writers
(tifffile's JSON shape, Ventana's ``level=0 mag=40``), so there the same text goes into a private
ASCII tag, :data:`TAG_APPLIED_RECORD`, on the level-0 IFD, leaving every existing tag's value as
it was. Either way the ``ICC Profile Applied*`` keys record what was baked in, so neither a person
nor a program applies the scanner profile twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from svsicc.colour.transform import IccProfile, Intent
from svsicc.exceptions import AlreadyAppliedError

# A private tag (ASCII) holding the record outside Aperio descriptions. Registered private tags
# are assigned from 32768 up; 65000-65535 are free for private use, and 65420-65480 are
# Hamamatsu's (svsicc's format sniffing reads tags there as NDPI), so this stays below them.
TAG_APPLIED_RECORD = 65300
RECORD_HEADER = "svsicc"
MAX_RECORD_BYTES = 1 << 20

KEY_PROFILE = "ICC Profile"
KEY_APPLIED = "ICC Profile Applied"
KEY_APPLIED_SHA256 = "ICC Profile Applied SHA256"
KEY_APPLIED_INTENT = "ICC Profile Applied Intent"
KEY_APPLIED_TARGET = "ICC Profile Applied Target"
KEY_APPLIED_MODE = "ICC Profile Applied Mode"
KEY_APPLIED_BY = "ICC Profile Applied By"
# Written only when some were kept: "IFD:tile" pairs, comma-separated, e.g. "0:5,0:17".
KEY_APPLIED_KEPT = "ICC Profile Applied Kept Tiles"


@dataclass(frozen=True)
class AppliedRecord:
    source_description: str
    source_sha256: str
    intent: str
    target: str
    mode: str
    by: str
    # (IFD, tile) of the tiles kept with their original bytes (apply --on-bad-tile keep): their
    # pixels were not converted.
    kept_tiles: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "source_description": self.source_description,
            "source_sha256": self.source_sha256,
            "intent": self.intent,
            "target": self.target,
            "mode": self.mode,
            "by": self.by,
            "kept_tiles": [{"ifd": ifd, "tile": tile} for ifd, tile in self.kept_tiles],
        }

    def text_lines(self, pieces: str, place: Callable[[int, int], str]) -> list[str]:
        """``svsicc info``'s lines for this record; ``pieces`` names the kept pieces ("tile(s)",
        "frame(s)") and ``place`` spells where one is ("IFD 0 tile 5")."""
        lines = [
            f"applied: yes, {self.source_description!r} -> {self.target!r}, {self.intent} "
            f"intent, {self.mode}, by {self.by}",
            f"  source sha256 {self.source_sha256}",
        ]
        if self.kept_tiles:
            lines.append(
                f"  {len(self.kept_tiles)} {pieces} kept unconverted (undecodable in the "
                "original): " + ", ".join(place(a, b) for a, b in self.kept_tiles)
            )
        return lines


def refuse_reapplying(path: Path, record: AppliedRecord | None) -> None:
    """Raise :class:`AlreadyAppliedError` for a slide that carries svsicc's record: applying
    the scanner profile again would double the correction."""
    if record is not None:
        raise AlreadyAppliedError(
            path,
            f"the profile {record.source_description!r} was already applied "
            f"({record.by}); applying it again would double the correction",
        )


def format_kept(kept: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{ifd}:{tile}" for ifd, tile in kept)


def parse_kept(value: str) -> tuple[tuple[int, int], ...]:
    """The pairs of a Kept Tiles value; what does not parse is left out."""
    kept = []
    for item in value.split(","):
        ifd, sep, tile = item.strip().partition(":")
        if sep and ifd.isdigit() and tile.isdigit():
            kept.append((int(ifd), int(tile)))
    return tuple(kept)


def split_description(description: str) -> tuple[str, list[tuple[str, str]]]:
    """The header and the ordered (key, value) pairs of an Aperio description."""
    parts = description.split("|")
    pairs = []
    for part in parts[1:]:
        key, sep, value = part.partition(" = ")
        pairs.append((key.strip(), value.strip()) if sep else (part, ""))
    return parts[0], pairs


def properties(description: str | None) -> dict[str, str]:
    if not description:
        return {}
    return {k: v for k, v in split_description(description)[1] if k}


def applied_record(description: str | None) -> AppliedRecord | None:
    props = properties(description)
    if KEY_APPLIED not in props:
        return None
    return AppliedRecord(
        source_description=props.get(KEY_APPLIED, ""),
        source_sha256=props.get(KEY_APPLIED_SHA256, ""),
        intent=props.get(KEY_APPLIED_INTENT, ""),
        target=props.get(KEY_APPLIED_TARGET, ""),
        mode=props.get(KEY_APPLIED_MODE, ""),
        by=props.get(KEY_APPLIED_BY, ""),
        kept_tiles=parse_kept(props.get(KEY_APPLIED_KEPT, "")),
    )


def _clean(value: str) -> str:
    # A '|' or line break inside a value would split it into a bogus key for every reader.
    return " ".join(value.replace("|", "/").split())


def rename_profile(description: str, target: IccProfile, add_if_missing: bool) -> str:
    """Make ``ICC Profile = ...`` name the target, keeping every other byte of the text."""
    header, pairs = split_description(description)
    parts = description.split("|")
    found = False
    for i, (key, _value) in enumerate(pairs, start=1):
        if key == KEY_PROFILE:
            parts[i] = f"{KEY_PROFILE} = {_clean(target.description)}"
            found = True
    if not found and add_if_missing:
        parts.append(f"{KEY_PROFILE} = {_clean(target.description)}")
    del header
    return "|".join(parts)


def mark_applied(
    description: str,
    source: IccProfile,
    target: IccProfile,
    intent: Intent,
    identity: bool,
    version: str,
    library: str | None = None,
    kept: tuple[tuple[int, int], ...] = (),
) -> str:
    """The description with the profile renamed and the ``ICC Profile Applied*`` record added.
    ``library`` names a codec library that encoded tiles apart from imagecodecs (svsicc's
    OpenJPEG binding: "OpenJPEG 2.5.4"); the By key then reads "svsicc 0.1.0 with OpenJPEG
    2.5.4". ``kept``: (IFD, tile) of the tiles kept unconverted (Kept Tiles key)."""
    by = f"svsicc {version}" + (f" with {library}" if library else "")
    text = rename_profile(description, target, add_if_missing=True)
    record = [
        (KEY_APPLIED, _clean(source.description)),
        (KEY_APPLIED_SHA256, source.sha256),
        (KEY_APPLIED_INTENT, intent.label),
        (KEY_APPLIED_TARGET, _clean(target.description)),
        (KEY_APPLIED_MODE, "identity (pixels unchanged)" if identity else "transformed"),
        (KEY_APPLIED_BY, _clean(by)),
    ]
    if kept:
        record.append((KEY_APPLIED_KEPT, format_kept(kept)))
    return text + "".join(f"|{k} = {v}" for k, v in record)
