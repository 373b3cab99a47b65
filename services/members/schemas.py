"""The members API's request and response bodies (pydantic v2, validated at the boundary).

Every string and list of a request has a bound (shared.limits): a name goes into email
headers and other members' screens, a profile rides in an event NATS must be able to carry,
and an import row is stored as it is given. Bad input is a 422 before anything is stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, StrictBool, field_validator, model_validator

from services.members.contacts import require_contact
from services.members.domain import require_terms
from shared.clock import utcnow
from shared.events import Role
from shared.limits import EARLIEST, Name, Region, Request, Tag, line

#: The longest IANA zone name has 32 characters ("America/Argentina/ComodRivadavia"); the
#: bound is checked before the zone database is asked, so a huge value costs nothing.
TIMEZONE_MAX = 64
Timezone = line(TIMEZONE_MAX)
#: Interests and skills a member lists (each a `Tag`, 50 characters at most).
MAX_TAGS = 50
#: Four roles exist; a repeat collapses, so a few more than four is all a client can mean.
MAX_ROLES = 8
#: Where an import's consent was recorded ("paper form 2024"): one line.
ConsentSource = line(200)


def _known_zone(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


class ConsentIn(Request):
    # Strict: "true" or 1 is not a person's explicit consent.
    terms: StrictBool = Field(description="consent to the community's terms; must be true to join")
    marketing: StrictBool = False


class JoinRequest(Request):
    display_name: Name
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=32)
    telegram: str | None = Field(None, max_length=64)
    region: Region
    roles: list[Role] = Field(
        default_factory=lambda: ["volunteer"],
        min_length=1,
        max_length=MAX_ROLES,
        description="coordinator and staff are granted: they need an API key with admin",
    )
    interests: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    skills: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    locale: Literal["ru", "en"] = "ru"
    timezone: Timezone = "Europe/Moscow"
    consent: ConsentIn
    referral_code: str | None = Field(None, max_length=32)

    _zone = field_validator("timezone")(_known_zone)

    # The join's rules (domain.py, contacts.py) checked here too, so that a request breaking
    # them gets one 422 listing every field error at once, as any other invalid field.
    @field_validator("consent")
    @classmethod
    def _terms_given(cls, value: ConsentIn | ImportConsentIn) -> ConsentIn | ImportConsentIn:
        require_terms(value.terms)
        return value

    @model_validator(mode="after")
    def _one_contact(self) -> JoinRequest:
        require_contact(self.email, self.phone, self.telegram)
        return self


def _recorded_time(value: datetime | None) -> datetime | None:
    """A time recorded elsewhere: UTC when no offset is given, to the millisecond (what
    MongoDB keeps), not in the future and not before the platform's window (2000)."""
    if value is None:
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Compared before any conversion: year 1 at +14:00 has no UTC equivalent, and
    # astimezone() would raise OverflowError (a 500) instead of this 422.
    if value > utcnow():
        raise ValueError("must not be in the future")
    if value < EARLIEST:
        raise ValueError(f"must be in {EARLIEST.year} or later")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class ImportConsentIn(Request):
    """An import's consent columns: a spreadsheet cell is text, so the documented words
    (`true`/`false`, `yes`/`no`, `1`/`0`) are read as booleans here, unlike in a join."""

    terms: bool = Field(description="consent to the community's terms; must be true")
    marketing: bool = False


class ImportRow(JoinRequest):
    """One row of an import: what a join takes (same rules, same messages), plus the original
    join date and how the consent was recorded. No referral codes: nobody is referred by an
    import."""

    consent: ImportConsentIn
    joined_at: datetime = Field(description="the original join date (ISO 8601)")
    consent_at: datetime | None = Field(None, description="when consent was recorded")
    consent_source: ConsentSource | None = Field(
        None, description="where consent was recorded: 'paper form 2024'"
    )

    _times = field_validator("joined_at", "consent_at")(_recorded_time)


class ConsentPatch(Request):
    terms: StrictBool | None = Field(None, description="only true is accepted: to withdraw, leave")
    marketing: StrictBool | None = None


class PatchRequest(Request):
    """Only the fields sent change; a contact sent as null is removed (one must remain)."""

    display_name: Name | None = None
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=32)
    telegram: str | None = Field(None, max_length=64)
    region: Region | None = None
    roles: list[Role] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ROLES,
        description="giving coordinator or staff needs an API key with admin",
    )
    interests: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    skills: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    locale: Literal["ru", "en"] | None = None
    timezone: Timezone | None = None
    consent: ConsentPatch | None = None

    _zone = field_validator("timezone")(_known_zone)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> PatchRequest:
        nullable = {"email", "phone", "telegram"}
        nulls = [f for f in self.model_fields_set - nullable if getattr(self, f) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null (only contacts can)")
        return self


class ContactsOut(BaseModel):
    email: str | None = None
    phone: str | None = None
    telegram: str | None = None


class ConsentOut(BaseModel):
    terms: bool
    marketing: bool
    terms_at: datetime | None = Field(None, description="when consent to the terms was given")
    marketing_at: datetime | None = Field(
        None, description="when marketing consent was last given or withdrawn (null: never given)"
    )
    source: str | None = Field(
        None, description="where an imported member's consent was recorded (null: at join)"
    )


class MemberOut(BaseModel):
    member_id: str
    display_name: str
    contacts: ContactsOut
    region: str
    roles: list[str]
    interests: list[str]
    skills: list[str]
    locale: str
    timezone: str
    consent: ConsentOut
    referral_code: str
    referred_by: str | None = None
    status: Literal["active", "left"] = "active"
    joined_at: datetime
    left_at: datetime | None = None
    version: int = Field(1, description="bumped by every change; send it back in If-Match")

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> MemberOut:
        return cls(
            member_id=doc["_id"],
            contacts=ContactsOut(
                email=doc.get("email"), phone=doc.get("phone"), telegram=doc.get("telegram")
            ),
            **{
                k: doc[k]
                for k in (
                    "display_name",
                    "region",
                    "roles",
                    "interests",
                    "skills",
                    "locale",
                    "timezone",
                    "consent",
                    "referral_code",
                    "joined_at",
                )
            },
            referred_by=doc.get("referred_by"),
            status=doc.get("status", "active"),
            left_at=(doc.get("departure") or {}).get("left_at"),
            version=doc.get("version", 1),
        )


class MemberList(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class ReferralOut(BaseModel):
    member_id: str
    display_name: str | None = Field(None, description="null once the member erased their data")
    status: Literal["active", "left", "erased"] = "active"
    joined_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ReferralOut:
        return cls(
            member_id=doc["_id"],
            display_name=doc.get("display_name"),
            status=doc.get("status", "active"),
            joined_at=doc["joined_at"],
        )


class ReferralList(BaseModel):
    items: list[ReferralOut]
    next_cursor: str | None = None
    total: int = Field(description="how many members joined with this member's code")


class RejectedRow(BaseModel):
    row: int = Field(description="the row's number in the file (1: the first data row)")
    code: str = Field(description="the error code a join would give, or duplicate_row")
    message: str


class ChunkReport(BaseModel):
    first_row: int
    last_row: int
    created: int
    existing: int
    rejected: int


class ImportReport(BaseModel):
    """What an import did: rows counted, rejected rows listed with why (accepted ones are not
    echoed, so the answer stays small)."""

    file: str = Field(description="the file's identity: rows of the same file are not doubled")
    rows: int
    created: int
    existing: int = Field(description="rows whose person is already a member (by any contact)")
    rejected: int
    welcome: bool = Field(description="whether the members created are to be welcomed")
    chunks: list[ChunkReport]
    rejected_rows: list[RejectedRow]
