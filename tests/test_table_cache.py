"""The colour table's cache file: mapped in huge pages or copied, never trusted blindly."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from svsicc.colour import transform as colour
from svsicc.colour.transform import TABLE_SIZE, ColourTable, IccProfile, Intent, default_target

from .conftest import SCANSCOPE

_built: list[ColourTable] = []


def scanscope_table() -> ColourTable:
    """The real ScanScope v1 table, built by LittleCMS once for this module."""
    if not _built:
        _built.append(
            ColourTable.build(IccProfile.from_file(SCANSCOPE), default_target(), Intent.PERCEPTUAL)
        )
    return _built[0]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """The ScanScope table saved as apply's cache saves it."""
    path = tmp_path / "table.npy"
    assert scanscope_table().save(path)
    return path


def test_a_cached_table_loads_equal_and_read_only(saved: Path) -> None:
    loaded = ColourTable.from_file(saved)
    assert np.array_equal(loaded.table, scanscope_table().table)
    # Shared with every process that maps the file: nothing may write into it.
    assert not loaded.table.flags.writeable
    # Either the file mapped in huge pages, or a private copy: never a mapping in 4 KiB pages,
    # which makes the gather miss the TLB on top of the cache.
    assert loaded.table.flags.owndata or colour._in_huge_pages(loaded.table)


def test_a_mapping_in_small_pages_is_replaced_by_a_copy(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped: list[int] = []
    monkeypatch.setattr(colour, "_in_huge_pages", lambda table: False)
    monkeypatch.setattr(colour, "_drop_cached_pages", dropped.append)
    for _ in range(2):
        loaded = ColourTable.from_file(saved)
        assert loaded.table.flags.owndata
        assert not loaded.table.flags.writeable
        assert np.array_equal(loaded.table, scanscope_table().table)
    # Dropped and re-read once; after that a filesystem that cannot do better is not made to
    # re-read 64 MiB from disk at every load.
    assert len(dropped) == 1


def test_a_file_that_cannot_be_mapped_is_read(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot_map(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError(19, "No such device")

    monkeypatch.setattr(colour.mmap, "mmap", cannot_map)
    loaded = ColourTable.from_file(saved)
    assert not loaded.table.flags.writeable
    assert np.array_equal(loaded.table, scanscope_table().table)


SMAPS = b"""\
55d0c8a00000-55d0c8a21000 r--p 00000000 fe:00 131 /usr/bin/python3.11
Size:                132 kB
FilePmdMapped:         0 kB
7f794c200000-7f7950201000 r--s 00000000 fe:00 16039950 /cache/t\xe9ble.npy
Size:              65540 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:     63488 kB
VmFlags: rd sh mr mw me ms hg
7f7950201000-7f7950400000 rw-p 00000000 00:00 0
AnonHugePages:      2048 kB
"""


def test_smaps_is_read_for_the_mapping_that_holds_the_table() -> None:
    lines = SMAPS.splitlines(keepends=True)
    assert colour.huge_kib_of_mapping(lines, 0x7F794C200080) == 63488
    # The mappings before and after it, and an address in none, count nothing of it.
    assert colour.huge_kib_of_mapping(lines, 0x55D0C8A00000) == 0
    assert colour.huge_kib_of_mapping(lines, 0x7F7950201000) == 2048
    assert colour.huge_kib_of_mapping(lines, 0x10) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_small_page_mappings_are_told_apart(saved: Path) -> None:
    with open(saved, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    mapping.madvise(mmap.MADV_NOHUGEPAGE)
    table = np.frombuffer(mapping, "<u4", TABLE_SIZE, 128)
    int(np.frombuffer(mapping, np.uint8)[:: mmap.PAGESIZE].sum())
    assert not colour._in_huge_pages(table)


def write_not_a_table(path: Path, kind: str) -> None:
    # Written to files of their own: truncating a cache file that a process has mapped would
    # kill that process (SIGBUS); svsicc only ever replaces cache files whole.
    if kind == "truncated":
        scanscope_table().save(path)
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size - 4)
    elif kind == "wrong dtype":
        np.save(path, np.zeros(TABLE_SIZE, np.uint16))
    elif kind == "wrong shape":
        np.save(path, np.zeros((TABLE_SIZE // 2, 2), "<u4"))
    elif kind == "big-endian":
        np.save(path, np.zeros(TABLE_SIZE, ">u4"))
    elif kind == "not npy":
        path.write_bytes(b"GIF89a" + bytes(1000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "fortran order":
        with open(path, "wb") as fh:
            header = {"descr": "<u4", "fortran_order": True, "shape": (TABLE_SIZE,)}
            np.lib.format.write_array_header_1_0(fh, header)
            fh.write(bytes(4 * TABLE_SIZE))


KINDS = [
    "truncated",
    "wrong dtype",
    "wrong shape",
    "big-endian",
    "not npy",
    "empty",
    "fortran order",
]


@pytest.mark.parametrize("kind", KINDS)
def test_files_that_are_not_tables_are_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "table.npy"
    write_not_a_table(path, kind)
    with pytest.raises(ValueError, match="is not a colour table"):
        ColourTable.from_file(path)


def test_a_broken_cache_file_is_rebuilt_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SVSICC_CACHE_DIR", str(tmp_path))
    source = IccProfile.from_file(SCANSCOPE)
    key = colour.TransformKey(source.sha256, default_target().sha256, Intent.PERCEPTUAL)
    path = tmp_path / key.name
    write_not_a_table(path, "truncated")
    table = ColourTable.load_or_build(source, default_target(), Intent.PERCEPTUAL)
    assert np.array_equal(table.table, scanscope_table().table)
    assert table.file == path
    assert np.array_equal(ColourTable.from_file(path).table, scanscope_table().table)
