"""The import route: a volunteer base in one request (the CLI sends a big file in parts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.members import importer, usecases
from services.members.api import WRITE, may_grant
from services.members.context import MembersDep
from services.members.schemas import ImportReport
from shared.http import ApiError, error_responses, require, unbound_only

router = APIRouter(prefix="/v1", tags=["members"])

#: A row number of an imported file (far beyond any file the import takes).
ROW_MAX = 1_000_000_000


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
    responses=error_responses(
        {415: {"unsupported_media_type": "send text/csv or application/x-ndjson"}}
    ),
)
async def import_members(
    request: Request,
    members: MembersDep,
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
    also has the scope `admin`. A key bound to a member imports nobody (403).
    """
    unbound_only(request, "make members")
    try:
        kind = importer.media_kind(request.headers.get("Content-Type"))
        body = await _body(request, importer.MAX_BYTES)
        text = importer.decode(body)
        cmd = usecases.ImportCommand(
            text,
            kind,
            file_id=file or importer.file_identity(body),
            welcome=welcome,
            first_row=first_row,
        )
        return await members.use_cases.import_members(cmd, may_grant=may_grant(request))
    except importer.ImportRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
