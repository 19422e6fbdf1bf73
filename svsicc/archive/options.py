"""A migration's options, the colours they choose, and the checks of SRC_DIR and DST_DIR."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svsicc.colour.transform import IccProfile, Intent
from svsicc.convert.plan import ProfileChoice
from svsicc.exceptions import OutputError, SvsiccError

# Exit codes besides 0 (all converted, or nothing needed converting) and 2 (a bad request):
# 1 when any slide failed in this run; else 4 when any slide found is still unconverted for
# lack of a profile (a pipeline must not take "skipped: no profile" for "converted").
EXIT_FAILED = 1

EXIT_LEFT_WITHOUT_PROFILE = 4


@dataclass(frozen=True)
class MigrateOptions:
    source_dir: Path
    destination_dir: Path
    profile: str | None = None
    target: str | None = None
    intent: str | None = None
    workers: int | None = None
    fallback_profile: str | None = None
    verify: int | None = None  # sampled tiles per level checked before a copy lands
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    scheduler: str | None = None
    quiet: bool = False

    def settings(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "fallback_profile": self.fallback_profile,
            "target": self.target,
            "intent": self.intent,
            "workers": self.workers,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "scheduler": self.scheduler,
            "verify": self.verify,
        }


@dataclass(frozen=True)
class Colours:
    """The run's profile options, loaded once (the policy is :mod:`svsicc.convert.plan`'s)."""

    choice: ProfileChoice

    @property
    def profile(self) -> IccProfile | None:
        return self.choice.override

    @property
    def fallback(self) -> IccProfile | None:
        return self.choice.fallback

    @property
    def target(self) -> IccProfile:
        return self.choice.target_profile

    @property
    def intent(self) -> Intent | None:
        return self.choice.intent

    @property
    def chooses_for_unprofiled(self) -> bool:
        """Slides without an embedded profile get one (--profile or --fallback-profile)."""
        return self.choice.override is not None or self.choice.fallback is not None


def load_colours(options: MigrateOptions) -> Colours:
    return Colours(
        ProfileChoice.load(
            options.profile, options.fallback_profile, options.target, options.intent
        )
    )


def check_dirs(options: MigrateOptions) -> tuple[Path, Path]:
    src, dst = options.source_dir, options.destination_dir
    if not src.is_dir():
        raise SvsiccError(src, "{source_dir} is not a folder" if src.exists() else "no such folder")
    if dst.exists() and not dst.is_dir():
        raise OutputError(dst, "{destination_dir} exists and is not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if real_src == real_dst:
        raise OutputError(
            dst,
            "{destination_dir} is {source_dir}",
            hint="migrate writes copies: choose another {destination_dir}",
        )
    if real_src.is_relative_to(real_dst):
        raise OutputError(
            dst,
            "{source_dir} lies inside {destination_dir}; copies could land on originals",
            hint="choose a {destination_dir} outside {source_dir}",
        )
    return real_src, real_dst
