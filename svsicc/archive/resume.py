"""Whether a slide migrate finished earlier was made with the choice this run would make.

A rerun of ``svsicc migrate`` must leave DST_DIR as a fresh run of the same command would. A
finished slide whose source is unchanged is therefore kept only when the source profile, target
and intent this run's options choose for it (:mod:`svsicc.convert.plan`) are the ones the journal
recorded; otherwise it is redone, and the reason is said. Working that out reads the slide's IFDs
and embedded profile (no pixels), once per finished slide per run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from svsicc.archive.discover import FoundSlide
from svsicc.archive.journal import (
    DONE,
    SKIP_IDENTITY,
    SKIPPED,
    SlideRecord,
)
from svsicc.archive.options import Colours
from svsicc.archive.slide_job import needs_work
from svsicc.convert.plan import ConversionPlan, ProfileChoice
from svsicc.drivers import read_slide
from svsicc.exceptions import SvsiccError
from svsicc.tiff import file as tiff


def planned(source: Path, choice: ProfileChoice) -> ConversionPlan | None:
    """The plan this run makes for ``source`` (None: no profile would be chosen)."""
    try:
        if source.is_dir():
            from svsicc.dicom.apply import series_plan
            from svsicc.dicom.series import read_series

            return series_plan(read_series(source), choice)
        with tiff.TiffReader(source) as reader:
            slide = read_slide(reader)
        return choice.plan(slide)
    except SvsiccError as exc:
        if choice.override is None and choice.fallback is None and "no embedded" in exc.problem:
            return None
        raise


def _output_target_sha256(output: Path) -> str:
    """Tag 34675 of the copy's IFD 0, hashed: the target of a row journal schema 1 wrote."""
    if output.is_dir():
        return ""  # DICOM series came after schema 1: their rows name the target
    with tiff.TiffReader(output) as reader:
        data = read_slide(reader).level0.icc_profile
    return hashlib.sha256(data).hexdigest() if data else ""


def choice_change(
    previous: SlideRecord, source: Path, output: Path, choice: ProfileChoice
) -> str | None:
    """Why a finished, converted (or identity-marked) slide must be redone, or None."""
    if not (
        previous.status == DONE or (previous.status, previous.detail) == (SKIPPED, SKIP_IDENTITY)
    ):
        return None
    try:
        plan = planned(source, choice)
    except SvsiccError as exc:
        return f"its profile cannot be chosen now ({exc.problem})"
    if plan is None:
        return "no source profile is chosen for it now"
    changes = []
    if plan.source.sha256 != previous.profile_sha256:
        changes.append(
            f"profile {previous.profile_description!r} -> {plan.source.description!r} "
            f"({plan.origin})"
        )
    target_sha = previous.target_sha256
    if not target_sha:
        try:
            target_sha = _output_target_sha256(output)
        except SvsiccError:
            target_sha = ""
    if plan.target.sha256 != target_sha:
        was = previous.target_description or "the earlier target"
        changes.append(f"target {was!r} -> {plan.target.description!r}")
    if plan.intent.label != previous.intent:
        changes.append(f"intent {previous.intent} -> {plan.intent.label}")
    return "; ".join(changes) or None


def slides_to_do(
    found: list[FoundSlide], previous: dict[str, SlideRecord], dst: Path, colours: Colours
) -> tuple[list[FoundSlide], dict[str, str]]:
    """The slides this run must (re)do, and why each finished one is redone (its profile,
    target or intent chosen now differs from the journal's: svsicc.archive.resume)."""
    todo: list[FoundSlide] = []
    redo: dict[str, str] = {}
    for slide in found:
        record, output = previous.get(slide.rel_path), dst / slide.rel_path
        if needs_work(record, slide, output, colours.chooses_for_unprofiled):
            todo.append(slide)
            continue
        assert record is not None
        reason = choice_change(record, slide.path, output, colours.choice)
        if reason is not None:
            redo[slide.rel_path] = reason
            todo.append(slide)
    return todo, redo
