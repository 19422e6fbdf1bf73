"""How far a lossy copy may sit from its floor (see :mod:`svsicc.check.verify` for why these
numbers), and PSNR arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Margins:
    """How far a lossy copy may sit from its floor (module docstring: why these numbers).

    A page passes when PSNR >= floor PSNR - ``psnr_db``, mean |error| <= floor * ``ratio`` +
    ``mean_abs``, dE2000 mean <= floor * ``ratio`` + ``delta_e_mean`` and p95 <= floor *
    ``ratio`` + ``delta_e_p95``; a segment when its PSNR >= its floor's - ``segment_psnr_db``
    and its dE2000 mean <= its floor's * ``segment_ratio`` + ``segment_delta_e_mean``.
    """

    psnr_db: float = 0.5
    ratio: float = 1.1
    mean_abs: float = 0.1
    delta_e_mean: float = 0.1
    delta_e_p95: float = 0.2
    segment_psnr_db: float = 3.0
    segment_mse: float = 1.0  # squared levels added to the segment's allowance (see below)
    segment_ratio: float = 1.25
    segment_delta_e_mean: float = 0.2
    # Above this PSNR a page's error is below 0.8 levels RMS: nothing left to judge.
    enough_psnr_db: float = 50.0

    def page_psnr_limit(self, floor: float | None) -> float:
        if floor is None:
            return self.enough_psnr_db
        return min(floor - self.psnr_db, self.enough_psnr_db)

    def segment_psnr_limit(self, floor: float | None) -> float:
        """The floor's MSE times 10**(segment_psnr_db / 10), plus ``segment_mse``: a JPEG 2000
        copy spreads its rate over the page at equal slope, so a nearly flat tile may give up
        half its bytes (several dB on a tile already at 55 dB, under a level RMS)."""
        floor_mse = 0.0 if floor is None else 255.0**2 / 10 ** (floor / 10)
        limit = psnr_from_mse(floor_mse * 10 ** (self.segment_psnr_db / 10) + self.segment_mse)
        assert limit is not None
        return limit

    def to_dict(self) -> dict[str, float | str]:
        return {
            **self.__dict__,
            "lossless": "exact (max_abs 0)",
        }


MARGINS = Margins()


def psnr_from_mse(mse: float) -> float | None:
    return None if mse == 0 else 10 * math.log10(255.0**2 / mse)


def psnr_text(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"
