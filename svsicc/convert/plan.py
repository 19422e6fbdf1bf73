"""The conversion plan: which source profile, target and intent a slide is converted with.

One policy, used by apply, verify, migrate and bench alike:

- ``--profile FILE`` (``profile=``) is the source profile, whatever the slide embeds. When it
  differs from an embedded profile, the plan names the embedded profile it replaces
  (:attr:`ConversionPlan.replaced`) so that the command line can say so.
- Otherwise the embedded profile: tag 34675 of level 0 (IFD 0, but for Ventana BIF), else of the
  first pyramid level or thumbnail that carries one (GT450).
- Otherwise ``--fallback-profile FILE`` (``fallback_profile=``): used only for slides that embed
  none, so an archive with a mix of profiled and unprofiled slides needs one command.
- Otherwise a :class:`~svsicc.exceptions.ProfileError`.

The target is ``--target`` or the compact sRGB; the intent ``--intent`` or the source profile's
own. Identity (the source maps to the target within one 8-bit level) is decided by the caller that
builds the colour table (:meth:`ConversionPlan.with_identity`), as only it has the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from svsicc.colour.transform import ColourTable, IccProfile, Intent, default_target
from svsicc.exceptions import ProfileError, SvsiccError
from svsicc.tiff.formats import APERIO
from svsicc.tiff.slide import Page, Role, Slide

ProfileSource = str | os.PathLike[str] | bytes | IccProfile | None

# LittleCMS maps Aperio's HP sRGB profile to the compact sRGB with at most one level of rounding
# difference on 0.3 % of samples: below what one JPEG re-encode would cost. Treat that as identity.
IDENTITY_TOLERANCE = 1

ORIGIN_OVERRIDE = "--profile"
ORIGIN_FALLBACK = "--fallback-profile"
ORIGIN_EMBEDDED = "embedded"


@dataclass(frozen=True)
class ProfileChoice:
    """What the user asked for, loaded once: ``--profile``, ``--fallback-profile``, ``--target``
    and ``--intent`` (None: not given)."""

    override: IccProfile | None = None
    fallback: IccProfile | None = None
    target: IccProfile | None = None
    intent: Intent | None = None

    @classmethod
    def load(
        cls,
        profile: ProfileSource = None,
        fallback_profile: ProfileSource = None,
        target: ProfileSource = None,
        intent: Intent | str | None = None,
    ) -> ProfileChoice:
        return cls(
            override=load_profile(profile),
            fallback=load_profile(fallback_profile, "fallback profile"),
            target=load_profile(target, "target profile"),
            intent=parse_intent(intent),
        )

    @property
    def target_profile(self) -> IccProfile:
        return self.target if self.target is not None else default_target()

    def plan(self, slide: Slide) -> ConversionPlan:
        """The plan for ``slide`` under this choice; raises :class:`ProfileError` when the slide
        embeds no profile and neither ``--profile`` nor ``--fallback-profile`` was given."""
        return self.plan_for(slide.path, lambda: embedded_profile(slide))

    def plan_for(
        self,
        path: Path,
        find_embedded: Callable[[], tuple[IccProfile, str] | None],
        target: IccProfile | None = None,
    ) -> ConversionPlan:
        """The plan for a slide of any format at ``path``: ``find_embedded`` returns its
        embedded profile, parsed, and where it was found (None: it embeds none; it may raise
        :class:`ProfileError` for a garbage one). ``target`` replaces :attr:`target_profile`
        where the format needs its own variant (DICOM: the same sRGB as an input profile)."""
        if self.override is not None:
            # A garbage embedded profile does not stop an override; it is only not named.
            try:
                embedded = find_embedded()
            except ProfileError:
                embedded = None
        else:
            embedded = find_embedded()
        if self.override is not None:
            source, origin = self.override, ORIGIN_OVERRIDE
        elif embedded is not None:
            source, origin = embedded
        elif self.fallback is not None:
            source, origin = self.fallback, ORIGIN_FALLBACK
        else:
            raise ProfileError(
                path,
                "the slide has no embedded ICC profile",
                hint="pass {profile} (or {fallback_profile}) with the scanner's profile",
            )
        replaced = None
        if (
            origin == ORIGIN_OVERRIDE
            and embedded is not None
            and embedded[0].sha256 != source.sha256
        ):
            replaced = embedded[0]
        if target is None:
            target = self.target_profile
        return ConversionPlan(
            source=source,
            origin=origin,
            target=target,
            intent=self.intent if self.intent is not None else source.default_intent,
            replaced=replaced,
        )


@dataclass(frozen=True)
class ConversionPlan:
    """The source profile chosen for one slide and where it came from, target, intent."""

    source: IccProfile
    origin: str  # "--profile", "embedded (IFD n)" or "--fallback-profile"
    target: IccProfile
    intent: Intent
    replaced: IccProfile | None = None  # the embedded profile --profile overrides, if different
    identity: bool = False

    def with_identity(self, identity: bool) -> ConversionPlan:
        return replace(self, identity=identity)

    @property
    def key(self) -> tuple[str, str, str]:
        """(source sha256, target sha256, intent): what makes two conversions the same."""
        return self.source.sha256, self.target.sha256, self.intent.label

    def override_notice(self, path: Path | str) -> str | None:
        """The stderr line saying that --profile replaces an embedded profile (None: it does
        not, or they are the same profile)."""
        if self.replaced is None:
            return None
        return (
            f"svsicc: {path}: --profile {self.source.description!r} replaces the embedded "
            f"profile {self.replaced.description!r} (sha256 {self.replaced.sha256[:12]})"
        )


def maps_as_identity(source: IccProfile, target: IccProfile, table: ColourTable) -> bool:
    """Whether converting ``source`` to ``target`` (through ``table``) moves no colour by more
    than :data:`IDENTITY_TOLERANCE`: then no tile is re-encoded, the copy is only marked. The one
    definition apply, bench, verify and migrate's dry run share."""
    return source.sha256 == target.sha256 or table.is_identity(IDENTITY_TOLERANCE)


def load_profile(value: ProfileSource, what: str = "profile") -> IccProfile | None:
    if value is None or isinstance(value, IccProfile):
        return value
    if isinstance(value, bytes):
        return IccProfile.from_bytes(value, f"{what} bytes")
    if isinstance(value, str | os.PathLike):
        return IccProfile.from_file(Path(os.fspath(value)))
    raise TypeError(f"{what} must be a path, bytes or IccProfile, not {type(value).__name__}")


def parse_intent(value: Intent | str | None) -> Intent | None:
    if value is None or isinstance(value, Intent):
        return value
    try:
        return Intent.parse(value)
    except ValueError as exc:
        raise SvsiccError(
            None, str(exc), hint="use perceptual, relative, saturation or absolute"
        ) from None


def find_embedded_profile(slide: Slide) -> tuple[bytes, Page] | None:
    """Tag 34675 from level 0 (IFD 0 but for Ventana, whose macro and thumbnail come first),
    else, for Aperio only, from the first level or thumbnail that has one (GT450)."""
    level0 = slide.level0
    if slide.format_name != APERIO:
        # OpenSlide reads generic TIFF's and Ventana's profile from level 0 alone: a profile on
        # another page only says something of that page, and using it would be a guess.
        candidates = [level0]
    else:
        candidates = [level0, *(p for p in slide.pages if p is not level0)]
    for page in candidates:
        if page.role in (Role.LEVEL, Role.THUMBNAIL) and page.icc_profile:
            return page.icc_profile, page
    return None


def embedded_profile(slide: Slide) -> tuple[IccProfile, str] | None:
    """The embedded profile, parsed, and its origin ("embedded (IFD n)")."""
    found = find_embedded_profile(slide)
    if found is None:
        return None
    data, page = found
    profile = IccProfile.from_bytes(data, f"{slide.path}: IFD {page.index} tag 34675")
    return profile, f"{ORIGIN_EMBEDDED} (IFD {page.index})"
