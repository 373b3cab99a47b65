"""Members' HTTP routes: parse, apply the rules, write with the outbox, map errors to 4xx."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, Security
from pydantic import ValidationError

from services.members import domain, importer
from services.members.erasure import Eraser
from services.members.schemas import (
    ImportReport,
    JoinRequest,
    MemberList,
    MemberOut,
    PatchRequest,
    ReferralList,
    ReferralOut,
    granted_roles,
)
from services.members.store import CodeTaken, ContactTaken, MemberStore
from shared.events import (
    CloudEvent,
    MemberLeft,
    MemberUpdated,
    ReferralMade,
    Role,
    new_event,
    utcnow,
)
from shared.http import API_KEY, ApiError, not_found, principal_of, require
from shared.keys import ADMIN
from shared.service import Runtime

log = logging.getLogger("sarafan.members.api")

router = APIRouter(prefix="/v1", tags=["members"])

#: Ids this service hands out are uuids; the bound keeps an absurd path out of the queries.
MemberId = Annotated[str, Path(max_length=100, description="the member_id returned at join")]
#: Bounds of the list filters (a region and a tag are bounded the same way in a profile).
REGION_MAX = 100
INTEREST_MAX = 100
#: A row number of an imported file (far beyond any file the import takes).
ROW_MAX = 1_000_000_000
T = TypeVar("T")
#: How often a write retries when another write changed the member in between.
WRITE_ATTEMPTS = 5
#: The scopes of this service's routes (shared/keys.py says what each allows).
JOIN, READ, WRITE, ERASE = "members:join", "members:read", "members:write", "members:erase"


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _store(request: Request) -> MemberStore:
    return request.app.state.store


def _rule(exc: domain.RuleViolation) -> ApiError:
    return ApiError(422, exc.code, exc.message)


def _taken(exc: ContactTaken) -> ApiError:
    return ApiError(409, f"{exc.kind}_taken", f"another member already has this {exc.kind}")


def _lacks(scope: str, message: str, **details: Any) -> ApiError:
    """403 naming the scope the caller's key lacks (the kernel's answer for a route's scope)."""
    return ApiError(403, "forbidden", message, details={"missing_scope": scope, **details})


def _may_grant(request: Request, roles: Iterable[str], already: Iterable[str] = ()) -> None:
    """Roles are granted, not claimed: coordinator or staff (new to the member) need `admin`."""
    granted = granted_roles(roles, already)
    if granted and not principal_of(request).allows(ADMIN):
        raise _lacks(
            ADMIN,
            f"giving the {' and '.join(granted)} role needs the scope {ADMIN}, "
            "which this API key lacks",
            roles=granted,
        )


def _now() -> datetime:
    # MongoDB keeps milliseconds: the response shows the time exactly as it will be stored.
    now = utcnow()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@router.post("/members", status_code=201, response_model=MemberOut, dependencies=[require(JOIN)])
async def join(body: JoinRequest, request: Request) -> MemberOut:
    """Join the community (explicit consent, at least one contact, optional referral code).

    Joining as coordinator or staff also needs the scope `admin` (403 naming it otherwise):
    a sign-up page's key lets people join, not give themselves authority."""
    _may_grant(request, body.roles)
    store, runtime = _store(request), _runtime(request)
    try:
        contacts = domain.normalise_contacts(
            body.email, body.phone, body.telegram, request.app.state.phone_region
        )
    except domain.RuleViolation as exc:
        raise _rule(exc) from exc
    referrer = None
    code = None
    if body.referral_code:
        code = domain.normalise_code(body.referral_code)
        referrer = await store.by_code(code) if domain.is_well_formed_code(code) else None
        if referrer is None:
            raise ApiError(
                422, "unknown_referral_code", f"referral code {body.referral_code!r} is unknown"
            )
        try:
            domain.check_referral(
                contacts,
                domain.Contacts.of(referrer),
                referrer_active=referrer.get("status", "active") == "active",
            )
        except domain.RuleViolation as exc:
            raise _rule(exc) from exc
    now = _now()
    member_id = str(uuid.uuid4())
    member = domain.new_member(
        member_id,
        body.model_dump(include=set(domain.PROFILE_FIELDS)),
        contacts,
        domain.consent_at_join(body.consent.marketing, now),
        now,
        referred_by=referrer["_id"] if referrer else None,
    )
    first = new_event(domain.member_joined(member), time=now)
    events = [first]
    if referrer is not None:
        events.append(
            new_event(
                ReferralMade(
                    referral_id=str(uuid.uuid4()),
                    referrer_id=referrer["_id"],
                    referred_id=member_id,
                    code=code or "",
                    at=now,
                ),
                correlation_id=first.correlationid,
                time=now,
            )
        )
    key = request.headers.get("Idempotency-Key")
    if key:
        # The kernel's record of this request (shared/http.py) keeps the response: erasure
        # deletes it, so a replay cannot return the personal data afterwards.
        member["idempotency_record"] = f"{request.url.path}:{key}"
    for _attempt in range(WRITE_ATTEMPTS):
        member["referral_code"] = domain.new_referral_code()
        try:
            await store.insert(member, events)
            break
        except CodeTaken:
            continue
        except ContactTaken as exc:
            # The same request again (its Idempotency-Key taken over after the first attempt
            # died before answering): the member it created is the answer, not a 409.
            if key and (done := await store.by_idempotency_record(member["idempotency_record"])):
                return MemberOut.from_doc(done)
            raise _taken(exc) from exc
    else:
        raise ApiError(503, "unavailable", "could not allocate a referral code; retry")
    runtime.relay.kick(store.members, member_id, events)
    return MemberOut.from_doc(member)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (before reading it all)."""
    declared = request.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"at most {limit // (1024 * 1024)} MB per request (the CLI splits a bigger file)",
    )


IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/members/import",
    response_model=ImportReport,
    openapi_extra=IMPORT_BODY,
    dependencies=[require(WRITE)],
)
async def import_members(
    request: Request,
    welcome: Annotated[
        bool, Query(description="welcome the members created (default: no welcome)")
    ] = False,
    file: Annotated[
        str | None,
        Query(
            pattern=importer.FILE_ID_RE.pattern,
            description="the file's identity when it is sent in several requests (the CLI "
            "sends its SHA-256); default: this body's",
        ),
    ] = None,
    first_row: Annotated[
        int,
        Query(ge=1, le=ROW_MAX, description="the number of this body's first row in the file"),
    ] = 1,
) -> ImportReport:
    """Bring an existing volunteer base: CSV (header row) or JSON lines, one member per row.

    Every row is validated as a join is; rejected rows are listed with why, the others are
    created with their original join date and recorded consent, or counted as existing when
    a member already has one of their contacts (importing a file again doubles nobody).
    A row giving the coordinator or staff role is rejected (code `forbidden`) unless the key
    also has the scope `admin`.
    """
    store, runtime = _store(request), _runtime(request)
    try:
        kind = importer.media_kind(request.headers.get("Content-Type"))
        body = await _body(request, importer.MAX_BYTES)
        work = importer.Importer(
            store,
            runtime.relay,
            request.app.state.phone_region,
            may_grant=principal_of(request).allows(ADMIN),
        )
        return await work.run(
            importer.decode(body),
            kind,
            file_id=file or importer.file_identity(body),
            welcome=welcome,
            first_row=first_row,
        )
    except importer.ImportRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc


@router.get("/members", response_model=MemberList, dependencies=[require(READ)])
async def list_members(
    request: Request,
    region: Annotated[str | None, Query(max_length=REGION_MAX, description="exact region")] = None,
    role: Annotated[Role | None, Query()] = None,
    interest: Annotated[
        str | None, Query(max_length=INTEREST_MAX, description="one interest tag")
    ] = None,
    status: Annotated[
        str, Query(pattern="^(active|left)$", description="active (default) or left")
    ] = "active",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> MemberList:
    """Members in join order; the cursor stays right while others join (keyset pagination)."""
    if interest:
        # Listed interests are normalised tags; input that normalises to nothing matches none.
        interest = next(iter(domain.tags([interest])), interest)
    try:
        after = domain.decode_cursor(cursor) if cursor else None
    except domain.RuleViolation as exc:
        raise _rule(exc) from exc
    docs = await _store(request).page(
        status,
        after,
        limit + 1,
        region=region or None,
        role=role,
        interest=interest or None,
    )
    page = docs[:limit]
    return MemberList(
        items=_readable(request, page, MemberOut.from_doc),
        next_cursor=_next_cursor(page) if len(docs) > limit else None,
    )


def _readable(
    request: Request, docs: Iterable[dict[str, Any]], convert: Callable[[dict[str, Any]], T]
) -> list[T]:
    """The documents of a page a client can be shown. One that cannot be read (written by
    hand, by an old version, half-migrated) is skipped, logged by id and counted, so it
    never takes the whole list down with it."""
    items: list[T] = []
    for doc in docs:
        try:
            items.append(convert(doc))
        except Exception as exc:
            request.app.state.skipped_documents.labels("members", "members").inc()
            # The id and what is wrong, never the values: they may be personal data.
            log.warning(
                "list skipped unreadable member document %s (%s)",
                str(doc.get("_id"))[:100],
                _what_is_wrong(exc),
            )
    return items


def _what_is_wrong(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors()[:10]
        )
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return type(exc).__name__


def _next_cursor(page: list[dict[str, Any]]) -> str | None:
    """The cursor after a page: the list key of its last document (every listed document
    has one, the query ranges over it; an odd one is passed over, not a 500)."""
    for doc in reversed(page):
        key = doc.get("list_key")
        if isinstance(key, str) and domain.LIST_KEY_RE.fullmatch(key):
            return domain.encode_cursor(key)
    return None


@router.get("/members/{member_id}", response_model=MemberOut, dependencies=[require(READ)])
async def get_member(member_id: MemberId, request: Request, response: Response) -> MemberOut:
    doc = await _store(request).get(member_id)
    if doc is None:
        raise not_found("member", member_id)
    response.headers["ETag"] = f'"{doc.get("version", 1)}"'
    return MemberOut.from_doc(doc)


def _requested(body: PatchRequest, phone_region: str | None) -> dict[str, Any]:
    """The PATCH fields sent, normalised like at join."""
    sent = body.model_fields_set
    requested: dict[str, Any] = {f: getattr(body, f) for f in sent if f != "consent"}
    if body.consent is not None:
        requested["consent"] = body.consent.model_dump(exclude_unset=True)
    contacts = domain.normalise_contacts(
        requested.get("email"), requested.get("phone"), requested.get("telegram"), phone_region
    )
    for kind in domain.CONTACT_KINDS:
        if kind in requested:
            requested[kind] = getattr(contacts, kind)
    for name in ("interests", "skills"):
        if name in requested:
            requested[name] = domain.tags(requested[name])
    if "roles" in requested:
        requested["roles"] = domain.unique(requested["roles"])
    return requested


def _if_match(header: str | None) -> int | None:
    if header is None:
        return None
    try:
        return int(header.strip().removeprefix("W/").strip('"'))
    except ValueError as exc:
        raise ApiError(422, "invalid_if_match", "If-Match must be a member version") from exc


@router.patch("/members/{member_id}", response_model=MemberOut, dependencies=[require(WRITE)])
async def update_member(
    member_id: MemberId,
    body: PatchRequest,
    request: Request,
    response: Response,
    if_match: Annotated[str | None, Header(description="a version: 412 if it changed")] = None,
) -> MemberOut:
    """Change profile, contacts or consent; emits member-updated with exactly what changed.

    Giving the member the coordinator or staff role also needs the scope `admin`."""
    store, runtime = _store(request), _runtime(request)
    expected = _if_match(if_match)
    try:
        requested = _requested(body, request.app.state.phone_region)
    except domain.RuleViolation as exc:
        raise _rule(exc) from exc
    for _attempt in range(WRITE_ATTEMPTS):
        doc = await store.get(member_id)
        if doc is None:
            raise not_found("member", member_id)
        version = int(doc.get("version", 1))
        if expected is not None and expected != version:
            raise ApiError(
                412,
                "version_changed",
                f"member {member_id} is at version {version}, not {expected}",
            )
        if doc.get("status") != "active":
            raise ApiError(
                409, "member_left", f"member {member_id} has left; the profile is closed"
            )
        if "roles" in requested:
            _may_grant(request, requested["roles"], doc.get("roles") or ())
        try:
            change = domain.profile_change(doc, requested, _now())
        except domain.RuleViolation as exc:
            raise _rule(exc) from exc
        if not change:
            break  # nothing changes: no event, no new version
        update: dict[str, Any] = {"$set": change.set_fields}
        if change.unset_fields:
            update["$unset"] = {f: "" for f in change.unset_fields}
        event = new_event(
            MemberUpdated(member_id=member_id, changes=change.changes),
        )
        try:
            written = await store.update(
                member_id, version, update, [event], guard={"status": "active"}, current=doc
            )
        except ContactTaken as exc:
            raise _taken(exc) from exc
        if written:
            runtime.relay.kick(store.members, member_id)
            doc = await store.get(member_id) or doc
            break
    else:
        raise ApiError(409, "conflict", "the member kept changing; retry")
    response.headers["ETag"] = f'"{doc.get("version", 1)}"'
    return MemberOut.from_doc(doc)


async def _leave_scope(
    request: Request,
    erase: Annotated[
        bool,
        Query(description="also erase personal data everywhere (needs the scope members:erase)"),
    ] = False,
    _key: Any = Security(API_KEY, scopes=[WRITE]),
) -> bool:
    """The scope of a leave depends on its query: members:write to leave, members:erase to
    erase (OpenAPI names members:write, the route's; its description says the rest)."""
    needed = ERASE if erase else WRITE
    if not principal_of(request).allows(needed):
        raise _lacks(needed, f"this API key lacks the scope {needed}")
    return erase


@router.delete("/members/{member_id}", status_code=204)
async def leave(
    member_id: MemberId,
    request: Request,
    erase: Annotated[bool, Depends(_leave_scope)],
) -> Response:
    """Leave (member-left); with erase=true the profile goes and the stream is purged.

    Leaving needs the scope `members:write`; `erase=true` needs `members:erase` instead (a key
    with only members:write asking erasure gets 403 naming members:erase).

    Repeats are harmless: leaving twice, or erasing an erased member, is 204 and emits
    nothing. An id that never existed is 404.
    """
    store, runtime = _store(request), _runtime(request)
    eraser: Eraser = request.app.state.eraser
    for _attempt in range(WRITE_ATTEMPTS):
        doc = await store.get_with_outbox(member_id)
        if doc is None:
            raise not_found("member", member_id)
        status = doc.get("status", "active")
        if status == "erased" or (status == "left" and not erase):
            return Response(status_code=204)
        now = _now()
        left_at = domain.left_at(doc) or now
        event = new_event(
            MemberLeft(member_id=member_id, erase=erase, left_at=left_at),
            time=now,
        )
        if erase:
            written = await store.replace_with_tombstone(
                doc, domain.tombstone(doc, now, _stored(event))
            )
        else:
            written = await store.update(
                member_id,
                int(doc.get("version", 1)),
                {"$set": {"status": "left", "departure": domain.departure(now)}},
                [event],
                guard={"status": "active"},
                current=doc,
            )
        if written:
            runtime.relay.kick(store.members, member_id)
            if erase:
                eraser.kick(member_id)
            return Response(status_code=204)
    raise ApiError(409, "conflict", "the member kept changing; retry")


def _stored(event: CloudEvent) -> dict[str, Any]:
    """An outbox entry exactly as shared.outbox stores one."""
    return event.model_dump(mode="json")


@router.get(
    "/members/{member_id}/referrals", response_model=ReferralList, dependencies=[require(READ)]
)
async def referrals(
    member_id: MemberId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query()] = None,
) -> ReferralList:
    """Who joined with this member's code (erased ones stay, anonymous, so counts hold)."""
    store = _store(request)
    if await store.get(member_id) is None:
        raise not_found("member", member_id)
    try:
        after = domain.decode_cursor(cursor) if cursor else None
    except domain.RuleViolation as exc:
        raise _rule(exc) from exc
    docs = await store.referrals_page(member_id, after, limit + 1)
    page = docs[:limit]
    return ReferralList(
        items=_readable(request, page, ReferralOut.from_doc),
        next_cursor=_next_cursor(page) if len(docs) > limit else None,
        total=await store.count_referrals(member_id),
    )
