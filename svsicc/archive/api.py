"""Python entry points for the commands whose own module takes an options object: ``migrate``.

(``apply``, ``verify``, ``info`` and ``report`` are their modules' functions; all five are
reachable as ``svsicc.<name>``.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from svsicc.exceptions import SvsiccError

if TYPE_CHECKING:
    from svsicc.archive.summary import MigrationReport


def migrate(
    source_dir: str | os.PathLike[str],
    destination_dir: str | os.PathLike[str],
    *,
    profile: str | os.PathLike[str] | None = None,
    fallback_profile: str | os.PathLike[str] | None = None,
    target: str | os.PathLike[str] | None = None,
    intent: str | None = None,
    workers: int | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    scheduler: str | None = None,
    verify: int | None = None,
    quiet: bool = True,
) -> MigrationReport:
    """Apply every slide under ``source_dir`` into the mirrored tree ``destination_dir``.

    What ``svsicc migrate`` does, resuming from the journal in ``destination_dir``: finds the
    slides (``.svs``; ``.tif``/``.tiff`` whose description starts with ``Aperio``) matching
    ``include`` and not ``exclude`` (glob patterns on paths relative to ``source_dir``), applies
    each in its own process (``workers`` at a time, default all cores; or on the
    dask.distributed cluster at ``scheduler``), and writes ``summary.csv`` / ``summary.json``.
    ``profile``, ``fallback_profile``, ``target`` and ``intent`` are as for :func:`svsicc.apply`;
    ``verify=N`` verifies each copy (N sampled tiles per level) before it lands. ``quiet=False``
    prints the run's first line to stdout and a progress line on a terminal.

    Returns:
        A :class:`~svsicc.archive.migrate.MigrationReport`: this run's records (``this_run``), the
        journal's every row (``records``), ``failed`` and ``exit_code``. A slide that fails is
        a record with status ``failed`` and its reason, not an exception.

    Raises:
        SvsiccError: a bad request (``workers`` below 1, ``destination_dir`` equal to or
            inside ``source_dir``, a missing folder, Dask not installed, another migrate
            holding the destination's lock).
        ProfileError: ``profile`` or ``target`` cannot be read as an RGB ICC profile.
        OutputError: ``destination_dir`` cannot be created or written.
    """
    from svsicc.archive.migrate import run_migration
    from svsicc.archive.options import MigrateOptions

    if workers is not None and workers < 1:
        raise SvsiccError(None, f"{{workers}} must be at least 1, not {workers}")
    options = MigrateOptions(
        source_dir=Path(source_dir),
        destination_dir=Path(destination_dir),
        profile=None if profile is None else os.fspath(profile),
        fallback_profile=None if fallback_profile is None else os.fspath(fallback_profile),
        target=None if target is None else os.fspath(target),
        intent=intent,
        workers=workers,
        include=tuple(include),
        exclude=tuple(exclude),
        scheduler=scheduler,
        verify=verify,
        quiet=quiet,
    )
    return run_migration(options)
