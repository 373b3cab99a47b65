"""Members' HTTP routes: parse, apply the rules, write with the outbox, map errors to 4xx."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.members import domain
from services.members.store import CodeTaken, EmailTaken, MemberStore
from shared.events import Consent, MemberJoined, ReferralMade, Role, new_event, utcnow
from shared.http import ApiError, not_found
from shared.logs import correlation_id_var
from shared.service import Runtime

router = APIRouter(prefix="/v1", tags=["members"])


class ConsentIn(BaseModel):
    terms: bool = Field(description="consent to the community's terms; must be true to join")
    marketing: bool = False


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    display_name: str = Field(min_length=1, max_length=100)
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=32)
    telegram: str | None = Field(None, max_length=64)
    region: str = Field(min_length=1, max_length=100)
    roles: list[Role] = Field(default_factory=lambda: ["volunteer"], min_length=1)
    interests: list[str] = Field(default_factory=list, max_length=50)
    skills: list[str] = Field(default_factory=list, max_length=50)
    locale: Literal["ru", "en"] = "ru"
    timezone: str = "Europe/Moscow"
    consent: ConsentIn
    referral_code: str | None = Field(None, max_length=32)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("consent")
    @classmethod
    def _terms_given(cls, value: ConsentIn) -> ConsentIn:
        if not value.terms:
            raise ValueError("joining needs consent to the terms (consent.terms must be true)")
        return value

    @model_validator(mode="after")
    def _one_contact(self) -> JoinRequest:
        if not (self.email or self.phone or self.telegram):
            raise ValueError("give at least one contact: email, phone or telegram")
        return self


class ContactsOut(BaseModel):
    email: str | None = None
    phone: str | None = None
    telegram: str | None = None


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
    consent: Consent
    referral_code: str
    referred_by: str | None = None
    status: str = "active"
    joined_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> MemberOut:
        return cls(
            member_id=doc["_id"],
            contacts=ContactsOut(email=doc.get("email"), phone=doc.get("phone"),
                                 telegram=doc.get("telegram")),
            **{k: doc[k] for k in ("display_name", "region", "roles", "interests", "skills",
                                   "locale", "timezone", "consent", "referral_code", "joined_at")},
            referred_by=doc.get("referred_by"),
            status=doc.get("status", "active"),
        )


class ReferralOut(BaseModel):
    member_id: str
    display_name: str
    joined_at: datetime


class ReferralList(BaseModel):
    items: list[ReferralOut]
    next_cursor: str | None = None


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _store(request: Request) -> MemberStore:
    return request.app.state.store


def _rule(exc: domain.RuleViolation) -> ApiError:
    return ApiError(422, exc.code, exc.message)


@router.post("/members", status_code=201, response_model=MemberOut)
async def join(body: JoinRequest, request: Request) -> MemberOut:
    """Join the community (explicit consent, at least one contact, optional referral code)."""
    store, runtime = _store(request), _runtime(request)
    try:
        contacts = domain.Contacts(
            email=domain.normalise_email(body.email) if body.email else None,
            phone=domain.normalise_phone(body.phone) if body.phone else None,
            telegram=domain.normalise_telegram(body.telegram) if body.telegram else None,
        )
    except domain.RuleViolation as exc:
        raise _rule(exc) from exc
    referrer = None
    code = None
    if body.referral_code:
        code = domain.normalise_code(body.referral_code)
        referrer = await store.by_code(code)
        if referrer is None:
            raise ApiError(422, "unknown_referral_code", f"referral code {body.referral_code!r} is unknown")
        try:
            domain.check_referral(
                contacts,
                domain.Contacts(referrer.get("email"), referrer.get("phone"), referrer.get("telegram")),
                referrer_active=referrer.get("status", "active") == "active",
            )
        except domain.RuleViolation as exc:
            raise _rule(exc) from exc
    now = utcnow()
    member_id = str(uuid.uuid4())
    correlation = correlation_id_var.get()
    consent = {"terms": True, "marketing": body.consent.marketing,
               "terms_at": now, "marketing_at": now if body.consent.marketing else None}
    joined = MemberJoined(
        member_id=member_id, display_name=body.display_name, region=body.region,
        roles=body.roles, interests=body.interests, skills=body.skills, locale=body.locale,
        timezone=body.timezone,
        contacts={"email": contacts.email, "phone": contacts.phone, "telegram": contacts.telegram},
        consent={"terms": True, "marketing": body.consent.marketing},
        referred_by=referrer["_id"] if referrer else None, joined_at=now,
    )
    first = new_event(joined, correlation_id=correlation, time=now)
    events = [first]
    if referrer is not None:
        events.append(new_event(
            ReferralMade(referral_id=str(uuid.uuid4()), referrer_id=referrer["_id"],
                         referred_id=member_id, code=code or "", at=now),
            correlation_id=first.correlationid,
        ))
    member = {
        "_id": member_id, "display_name": body.display_name, "region": body.region,
        "roles": list(body.roles), "interests": body.interests, "skills": body.skills,
        "locale": body.locale, "timezone": body.timezone, "consent": consent,
        "referred_by": referrer["_id"] if referrer else None, "joined_at": now,
        "status": "active", "version": 1,
        **{k: v for k, v in (("email", contacts.email), ("phone", contacts.phone),
                              ("telegram", contacts.telegram)) if v},
    }
    for _attempt in range(5):
        member["referral_code"] = domain.new_referral_code()
        try:
            await store.insert(member, events)
            break
        except CodeTaken:
            continue
        except EmailTaken as exc:
            raise ApiError(409, "email_taken", f"a member with email {contacts.email} already exists") from exc
    else:
        raise ApiError(503, "unavailable", "could not allocate a referral code; retry")
    runtime.relay.kick(store.members, member_id)
    return MemberOut.from_doc(member)


@router.get("/members/{member_id}", response_model=MemberOut)
async def get_member(member_id: Annotated[str, Path()], request: Request) -> MemberOut:
    doc = await _store(request).get(member_id)
    if doc is None:
        raise not_found("member", member_id)
    return MemberOut.from_doc(doc)


@router.get("/members/{member_id}/referrals", response_model=ReferralList)
async def referrals(member_id: str, request: Request) -> ReferralList:
    store = _store(request)
    if await store.get(member_id) is None:
        raise not_found("member", member_id)
    docs = await store.referred_by(member_id)
    return ReferralList(items=[ReferralOut(member_id=d["_id"], display_name=d["display_name"],
                                           joined_at=d["joined_at"]) for d in docs])
