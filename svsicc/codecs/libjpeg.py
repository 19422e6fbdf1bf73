"""libjpeg's warnings about a tile, which imagecodecs does not report.

libjpeg decodes a damaged stream as far as it can and only *warns*: data cut short ("Premature
end of JPEG file"), entropy-coded data that runs into a marker too early or too late ("Corrupt
JPEG data: premature end of data segment", "... extraneous bytes before marker"), bad Huffman
codes. The missing blocks come out grey. imagecodecs' ``jpeg8_decode`` installs an
``output_message`` that does nothing and never reads ``num_warnings`` (imagecodecs/_jpeg8.pyx),
and Pillow's decoder drops warnings the same way, so neither can tell a damaged tile from a
sound one. OpenSlide turns every libjpeg warning into an error; svsicc does the same here.

:func:`warning` runs libjpeg itself through ctypes (the very library imagecodecs loaded) as far
as the entropy decoder: ``jpeg_read_coefficients`` reads every marker and every Huffman-coded
block, which is where all these warnings arise, without the inverse DCT and colour conversion.
Only streams imagecodecs has just decoded are checked, so libjpeg raises no error here: an
``error_exit`` must not return, and a Python callback cannot jump back out of C.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import threading
from functools import cache
from pathlib import Path

# jpeg_decompress_struct is larger than this for no known libjpeg (656 bytes for libjpeg-turbo
# 3 with the version 8 API); its real size is asked from the library (see _probe).
_STRUCT_ROOM = 4096
_MESSAGE_LENGTH = 200  # JMSG_LENGTH_MAX


class _ErrorManager(ctypes.Structure):  # struct jpeg_error_mgr
    _fields_ = [
        ("error_exit", ctypes.c_void_p),
        ("emit_message", ctypes.c_void_p),
        ("output_message", ctypes.c_void_p),
        ("format_message", ctypes.c_void_p),
        ("reset_error_mgr", ctypes.c_void_p),
        ("msg_code", ctypes.c_int),
        ("msg_parm", ctypes.c_int * 20),  # union { int i[8]; char s[80]; }
        ("trace_level", ctypes.c_int),
        ("num_warnings", ctypes.c_long),
        ("jpeg_message_table", ctypes.c_void_p),
        ("last_jpeg_message", ctypes.c_int),
        ("addon_message_table", ctypes.c_void_p),
        ("first_addon_message", ctypes.c_int),
        ("last_addon_message", ctypes.c_int),
    ]


_MessageFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_FormatFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_local = threading.local()  # what the callbacks of the current check found


def _manager(cinfo: int) -> _ErrorManager:
    # The first field of every libjpeg object is its error manager pointer.
    pointer = ctypes.cast(cinfo, ctypes.POINTER(ctypes.c_void_p))[0]
    manager: _ErrorManager = ctypes.cast(pointer, ctypes.POINTER(_ErrorManager)).contents
    return manager


def _on_error(cinfo: int) -> None:
    manager = _manager(cinfo)
    _local.errors.append((manager.msg_code, manager.msg_parm[0]))


def _on_message(cinfo: int) -> None:
    # libjpeg calls this for the first warning only (trace level 0): keep its words.
    manager = _manager(cinfo)
    text = ctypes.create_string_buffer(_MESSAGE_LENGTH)
    _FormatFn(manager.format_message)(cinfo, text)
    _local.messages.append(text.value.decode("latin-1"))


_ON_ERROR = _MessageFn(_on_error)
_ON_MESSAGE = _MessageFn(_on_message)


class _LibJpeg:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.jpeg_std_error.restype = ctypes.c_void_p
        lib.jpeg_std_error.argtypes = [ctypes.c_void_p]
        lib.jpeg_CreateDecompress.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
        lib.jpeg_mem_src.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong]
        lib.jpeg_read_header.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.jpeg_read_coefficients.argtypes = [ctypes.c_void_p]
        lib.jpeg_read_coefficients.restype = ctypes.c_void_p
        lib.jpeg_finish_decompress.argtypes = [ctypes.c_void_p]
        lib.jpeg_destroy_decompress.argtypes = [ctypes.c_void_p]
        self.version, self.struct_size = self._probe()

    def _start(self) -> tuple[_ErrorManager, ctypes.Array[ctypes.c_char]]:
        _local.errors, _local.messages = [], []
        manager = _ErrorManager()
        self.lib.jpeg_std_error(ctypes.byref(manager))
        manager.error_exit = ctypes.cast(_ON_ERROR, ctypes.c_void_p)
        manager.output_message = ctypes.cast(_ON_MESSAGE, ctypes.c_void_p)
        cinfo = ctypes.create_string_buffer(_STRUCT_ROOM)
        ctypes.cast(cinfo, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(manager)
        return manager, cinfo

    def _probe(self) -> tuple[int, int]:
        """The library's JPEG_LIB_VERSION and sizeof(jpeg_decompress_struct), from the two
        errors jpeg_CreateDecompress raises for version 0 and size 0 (each names the right
        value first); it then goes on to initialise the object, which is destroyed."""
        _manager_keepalive, cinfo = self._start()
        self.lib.jpeg_CreateDecompress(cinfo, 0, 0)
        self.lib.jpeg_destroy_decompress(cinfo)
        errors = list(_local.errors)
        if len(errors) != 2 or not 300 <= errors[1][1] <= _STRUCT_ROOM:
            raise OSError(f"unexpected answers from jpeg_CreateDecompress: {errors}")
        return errors[0][1], errors[1][1]

    def warning(self, tile: bytes, tables: bytes | None) -> str | None:
        manager, cinfo = self._start()
        lib = self.lib
        lib.jpeg_CreateDecompress(cinfo, self.version, self.struct_size)
        try:
            if tables:
                lib.jpeg_mem_src(cinfo, tables, len(tables))
                lib.jpeg_read_header(cinfo, 0)
            lib.jpeg_mem_src(cinfo, tile, len(tile))
            lib.jpeg_read_header(cinfo, 1)
            lib.jpeg_read_coefficients(cinfo)
            lib.jpeg_finish_decompress(cinfo)
        finally:
            lib.jpeg_destroy_decompress(cinfo)
        if _local.errors:
            return "libjpeg reported an error it had not reported before"
        if manager.num_warnings:
            return _local.messages[0] if _local.messages else "libjpeg warned"
        return None


def _candidates() -> list[str]:
    """The libjpeg imagecodecs loaded first (the same behaviour), then the system's."""
    import imagecodecs._jpeg8  # noqa: F401 - loads its libjpeg

    found: list[str] = []
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split(maxsplit=5)[-1]
            if os.path.basename(path).startswith("libjpeg") and path not in found:
                found.append(path)
    package = Path(imagecodecs.__file__).parent
    for pattern in ("../imagecodecs.libs/libjpeg*", ".dylibs/libjpeg*", "jpeg*.dll"):
        found += sorted(glob.glob(str(package / pattern)))
    system = ctypes.util.find_library("jpeg")
    if system:
        found.append(system)
    return found


@cache
def _library() -> _LibJpeg | None:
    for candidate in _candidates():
        try:
            return _LibJpeg(ctypes.CDLL(candidate))
        except (OSError, AttributeError):
            continue
    return None


def available() -> bool:
    """Whether damaged JPEG tiles can be told from sound ones here."""
    return _library() is not None


def warning(tile: bytes, tables: bytes | None = None) -> str | None:
    """libjpeg's first warning about ``tile`` (with the IFD's JPEGTables), None if it has none
    or no libjpeg could be loaded. Only for a stream that has just decoded without error."""
    lib = _library()
    return None if lib is None else lib.warning(tile, tables)


__all__ = ["available", "warning"]
