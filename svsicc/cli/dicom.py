"""The command line's DICOM words and handlers: apply and verify take a series through
:func:`svsicc.apply` and :func:`svsicc.verify` (which hand it to :mod:`svsicc.dicom`) and only
reword what they print; bench reads a series with svsicc.dicom.bench; info hands a folder (or
a .dcm file) to the handler here."""

from __future__ import annotations

import argparse
import json

EXIT_OK = 0


def in_dicom_words(text: str) -> str:
    from svsicc.dicom.verify import in_dicom_words as reword

    return reword(text)


def is_dicom(path: str | None) -> bool:
    from svsicc.dicom.detect import is_dicom_input

    return path is not None and is_dicom_input(path)


def run_info(args: argparse.Namespace) -> int:
    from svsicc.dicom.info import dicom_info

    info = dicom_info(args.input)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.format_text())
    return EXIT_OK
