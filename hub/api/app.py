"""The hub's HTTP API (FastAPI): log-in with TOTP, search, reads and images, holds, exports, shares,
users and training, devices, the access log and audits. OpenAPI schema at ``/api/v1/openapi.json``.

This is the only module that speaks HTTP. Every route is a thin translation to one
:class:`hub.access.service.ComplianceService` call, which gates and logs it; errors become status codes
with a message that never echoes the request's data (validation errors drop the offending input).

Headers: ``Authorization: Bearer <token>`` from ``POST /api/v1/auth/login`` and ``X-Device-Key`` (the
key of the agency-registered device, 429.9) on every request. A purpose is part of every request that
reaches ALPR information (429.4).
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at definition time,
# and ``Who`` below is local to create_app.
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.access.accounts import AccountError
from hub.access.gate import Actor
from hub.access.pages import render_transparency
from hub.access.search import SearchQuery
from hub.access.service import AccessDenied, AuthenticationFailed, ComplianceService, NotFound
from hub.access.sharing import ExportFile, SharingError
from hub.dispatch import Disposition, DispositionConflictError

API_PREFIX = "/api/v1"
WEB_DIR = Path(__file__).with_name("web")
PAGE_HEADERS = {
    # The pages' own scripts and style only, crops as blob: URLs, no framing, no plate in a Referer.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PUBLIC_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=300",
}
Purpose = Annotated[str, Field(max_length=400, description="the case number or 'suspect <last name>' (429.4)")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    totp: str = Field(max_length=10, description="the current 6-digit code from the user's authenticator")


class PasswordBody(_Body):
    old_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


class SearchBody(_Body):
    purpose: Purpose
    query: SearchQuery


class ExportBody(_Body):
    purpose: Purpose
    query: SearchQuery
    format: Literal["csv", "json"] = "csv"
    kind: Literal["export", "download", "print"] = "export"


class HoldBody(_Body):
    purpose: Purpose
    read_id: str = Field(max_length=36)
    case_number: str = Field(max_length=64)
    reason: str = Field(max_length=2000)


class ReleaseBody(_Body):
    purpose: Purpose
    reason: str = Field(max_length=2000)


class CorrectionBody(_Body):
    purpose: Purpose
    plate: str = Field(max_length=16)
    reason: str = Field(max_length=2000)


class DispositionBody(_Body):
    disposition: Disposition
    notes: str | None = Field(default=None, max_length=2000)


class NewUserBody(_Body):
    username: str = Field(max_length=64)
    full_name: str = Field(max_length=128)
    organization: str = Field(max_length=128)
    classification: str = Field(max_length=64)
    roles: list[str] = Field(max_length=6)


class TrainingBody(_Body):
    completed_utc: datetime


class ClassificationBody(_Body):
    classification: str = Field(max_length=64)


class RolesBody(_Body):
    roles: list[str] = Field(max_length=6)


class ReasonBody(_Body):
    reason: str = Field(max_length=2000)


class DeviceBody(_Body):
    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=2000)


class AgencyBody(_Body):
    name: str = Field(max_length=128)
    kind: Literal["ca_public", "federal", "out_of_state", "private"]
    contact: str = Field(default="", max_length=2000)


class ShareBody(_Body):
    agency: str = Field(max_length=128)
    contact: str = Field(max_length=2000)
    purpose: Purpose
    need: str = Field(max_length=2000)
    query: SearchQuery


class DecisionBody(_Body):
    approve: bool
    note: str = Field(max_length=2000)


class TransferBody(_Body):
    format: Literal["csv", "json"] = "csv"


class PeriodBody(_Body):
    from_utc: datetime
    to_utc: datetime


class NoteBody(_Body):
    note: str = Field(default="", max_length=2000)


def _zip(file: ExportFile) -> Response:
    return Response(
        file.data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{file.filename}"', "X-Records": str(file.record_count),
                 "X-SHA256": file.sha256},
    )  # fmt: skip


def create_app(
    service: ComplianceService,
    *,
    bell_max_priority: int = 1,
    board_poll_s: float = 3.0,
    public_figures_s: float = 300.0,
) -> FastAPI:
    """The API, the pages for people (``/board`` for dispatchers, ``/search`` for investigators: they use the
    API and hold no data themselves) and the public ``/transparency`` page.

    ``bell_max_priority``: the board sounds for hits of these list priorities even when muted (as the
    console's bell); ``board_poll_s``: how often an open board asks for the open hits;
    ``public_figures_s``: how long the public figures are reused (counting a month of reads for every
    anonymous request would let anyone load the database).
    """
    app = FastAPI(
        title="ALPR hub API",
        version="1",
        description=__doc__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    _install_error_handlers(app)

    def client_address(request: Request) -> str:
        return request.client.host if request.client else ""

    def token_of(authorization: str | None) -> str | None:
        if authorization and authorization.lower().startswith("bearer "):
            return authorization[7:].strip() or None
        return None

    def actor(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_device_key: Annotated[str | None, Header()] = None,
    ) -> Actor:
        return service.authenticate(token_of(authorization), x_device_key, client_address(request))

    Who = Annotated[Actor, Depends(actor)]
    api = APIRouter(prefix=API_PREFIX)

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    public_figures = _Reused(service.transparency, public_figures_s)

    @api.get("/transparency")
    def transparency() -> dict[str, Any]:
        """Public: counts of cameras, reads, hits and searches, retention, agencies shared with (no ALPR data)."""
        return public_figures()

    # --- log-in ---------------------------------------------------------------------------------

    @api.post("/auth/login")
    def login(
        body: LoginBody, request: Request, x_device_key: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        token = service.login(body.username, body.password, body.totp, x_device_key, client_address(request))
        return {"token": token, "idle_minutes": service.policy.access.session_idle_minutes,
                "max_hours": service.policy.access.session_max_hours}  # fmt: skip

    @api.post("/auth/logout", status_code=204)
    def logout(who: Who, authorization: Annotated[str | None, Header()] = None) -> None:
        service.logout(who, token_of(authorization) or "")

    @api.post("/me/password", status_code=204)
    def change_password(body: PasswordBody, who: Who) -> None:
        service.change_password(who, body.old_password, body.new_password)

    # --- ALPR information -----------------------------------------------------------------------

    @api.post("/search")
    def search(body: SearchBody, who: Who) -> dict[str, Any]:
        return service.search(who, body.query, body.purpose)

    @api.get("/reads/{read_id}")
    def view_read(read_id: str, purpose: Annotated[str, Query(max_length=400)], who: Who) -> dict[str, Any]:
        return service.view_read(who, read_id, purpose)

    @api.get("/images/{sha256}")
    def view_image(sha256: str, purpose: Annotated[str, Query(max_length=400)], who: Who) -> Response:
        return Response(service.view_image(who, sha256, purpose), media_type="image/jpeg")

    @api.post("/exports")
    def export(body: ExportBody, who: Who) -> Response:
        return _zip(service.export(who, body.query, body.purpose, body.format, body.kind))

    @api.post("/downloads/{download_id}/destroyed", status_code=204)
    def destroyed(download_id: int, who: Who) -> None:
        service.confirm_destroyed(who, download_id)

    @api.get("/downloads/overdue")
    def overdue(who: Who) -> list[dict[str, Any]]:
        return service.overdue_downloads(who)

    @api.post("/holds")
    def create_hold(body: HoldBody, who: Who) -> dict[str, int]:
        return {"hold_id": service.hold(who, body.read_id, body.case_number, body.reason, body.purpose)}

    @api.post("/holds/{hold_id}/release", status_code=204)
    def release_hold(hold_id: int, body: ReleaseBody, who: Who) -> None:
        service.release(who, hold_id, body.reason, body.purpose)

    @api.post("/reads/{read_id}/correction", status_code=204)
    def correct(read_id: str, body: CorrectionBody, who: Who) -> None:
        service.correct_read(who, read_id, body.plate, body.reason, body.purpose)

    @api.get("/hits")
    def hits(who: Who, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict[str, Any]]:
        return service.open_hits(who, limit)

    @api.get("/hits/state")
    def hits_state(who: Who) -> dict[str, Any]:
        """The open hits' count and version (no ALPR information, not logged): poll this, fetch /hits on change."""
        return service.open_hits_state(who)

    @api.get("/hits/{hit_id}/crop")
    def hit_crop(hit_id: int, who: Who) -> Response:
        return Response(service.hit_crop(who, hit_id), media_type="image/jpeg")

    @api.post("/hits/{hit_id}/disposition", status_code=204)
    def dispose(hit_id: int, body: DispositionBody, who: Who) -> None:
        service.dispose_hit(who, hit_id, body.disposition, body.notes)

    # --- users, devices, agencies, shares (the ALPR Administrator) -----------------------------

    @api.post("/users", status_code=201)
    def create_user(body: NewUserBody, who: Who) -> dict[str, str]:
        new = service.create_user(who, body.username, body.full_name, body.organization, body.classification,
                                  body.roles)  # fmt: skip
        return {"username": new.username, "initial_password": new.initial_password, "totp_uri": new.totp_uri}

    @api.get("/users")
    def list_users(who: Who, authorized_only: bool = False) -> list[dict[str, Any]]:
        return service.list_users(who, authorized_only)

    @api.post("/users/{username}/training", status_code=204)
    def training(username: str, body: TrainingBody, who: Who) -> None:
        service.record_training(who, username, body.completed_utc)

    @api.post("/users/{username}/approve", status_code=204)
    def approve(username: str, who: Who) -> None:
        service.approve_user(who, username)

    @api.post("/users/{username}/classification")
    def classify(username: str, body: ClassificationBody, who: Who) -> dict[str, bool]:
        return {"access_ended": service.set_classification(who, username, body.classification)}

    @api.post("/users/{username}/roles", status_code=204)
    def roles(username: str, body: RolesBody, who: Who) -> None:
        service.set_roles(who, username, body.roles)

    @api.post("/users/{username}/suspend", status_code=204)
    def suspend(username: str, body: ReasonBody, who: Who) -> None:
        service.suspend_user(who, username, body.reason)

    @api.post("/users/{username}/reactivate", status_code=204)
    def reactivate(username: str, who: Who) -> None:
        service.reactivate_user(who, username)

    @api.delete("/users/{username}", status_code=204)
    def delete_user(username: str, who: Who) -> None:
        service.delete_user(who, username)

    @api.post("/devices", status_code=201)
    def register_device(body: DeviceBody, who: Who) -> dict[str, str]:
        return {"name": body.name, "device_key": service.register_device(who, body.name, body.description)}

    @api.get("/devices")
    def devices(who: Who) -> list[dict[str, Any]]:
        return service.list_devices(who)

    @api.delete("/devices/{name}", status_code=204)
    def revoke_device(name: str, who: Who) -> None:
        service.revoke_device(who, name)

    @api.get("/nodes")
    def nodes(who: Who) -> list[dict[str, Any]]:
        return service.list_nodes(who)

    @api.post("/agencies", status_code=201)
    def add_agency(body: AgencyBody, who: Who) -> dict[str, int]:
        return {"agency_id": service.add_agency(who, body.name, body.kind, body.contact)}

    @api.get("/agencies")
    def agencies(who: Who) -> list[dict[str, Any]]:
        return service.list_agencies(who)

    @api.post("/shares", status_code=201)
    def request_share(body: ShareBody, who: Who) -> dict[str, int]:
        return {"share_id": service.request_share(who, body.agency, body.contact, body.purpose, body.need, body.query)}

    @api.get("/shares")
    def shares(who: Who) -> list[dict[str, Any]]:
        return service.list_shares(who)

    @api.post("/shares/{share_id}/decision", status_code=204)
    def decide_share(share_id: int, body: DecisionBody, who: Who) -> None:
        service.decide_share(who, share_id, body.approve, body.note)

    @api.post("/shares/{share_id}/transfer")
    def transfer_share(share_id: int, body: TransferBody, who: Who) -> Response:
        return _zip(service.transfer_share(who, share_id, body.format))

    # --- access log and audits ------------------------------------------------------------------

    @api.get("/access-log")
    def access_log(
        who: Who,
        from_utc: datetime,
        to_utc: datetime,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        return service.access_log(who, from_utc, to_utc, limit)

    @api.post("/audit/reports", status_code=201)
    def run_audit(body: PeriodBody, who: Who) -> dict[str, Any]:
        return service.run_audit(who, body.from_utc, body.to_utc)

    @api.get("/audit/reports/{report_id}", response_model=None)
    def get_audit(report_id: int, who: Who, format: Literal["json", "html"] = "json") -> dict[str, Any] | HTMLResponse:
        from hub.access.audit import render_html

        stored = service.get_audit(who, report_id)
        return HTMLResponse(render_html(stored["report"], stored)) if format == "html" else stored

    @api.post("/audit/reports/{report_id}/approve")
    def approve_audit(report_id: int, body: NoteBody, who: Who) -> dict[str, Any]:
        return service.approve_audit(who, report_id, body.note)

    app.include_router(api)
    _add_pages(app, bell_max_priority, board_poll_s)

    @app.get("/transparency", include_in_schema=False)
    def transparency_page() -> HTMLResponse:
        """Public: the JSON figures above and the policy the hub enforces, as a page to post (1798.90.51(b))."""
        return HTMLResponse(render_transparency(public_figures(), service.policy), headers=PUBLIC_PAGE_HEADERS)

    return app


class _Reused:
    """``compute()``'s result, computed again once it is ``max_age_s`` old (one caller at a time computes)."""

    def __init__(self, compute: Callable[[], dict[str, Any]], max_age_s: float) -> None:
        self.compute = compute
        self.max_age_s = max_age_s
        self.lock = threading.Lock()
        self.value: dict[str, Any] | None = None
        self.at = 0.0

    def __call__(self) -> dict[str, Any]:
        with self.lock:
            if self.value is None or time.monotonic() - self.at >= self.max_age_s:
                self.value, self.at = self.compute(), time.monotonic()
            return self.value


def _add_pages(app: FastAPI, bell_max_priority: int, poll_s: float) -> None:
    """The web pages for people: ``/board`` (dispatchers' hit board) and ``/search`` (investigators), and
    their assets under ``/web``. Static files: the data comes from the API with the user's session."""
    login_form = (WEB_DIR / "login.html").read_text(encoding="utf-8")
    pages = {
        "board": Template((WEB_DIR / "board.html").read_text(encoding="utf-8")).substitute(
            login_form=login_form, bell_max_priority=int(bell_max_priority), poll_ms=round(poll_s * 1000)
        ),
        "search": Template((WEB_DIR / "search.html").read_text(encoding="utf-8")).substitute(login_form=login_form),
    }
    assets = {
        path.name: (path.read_text(encoding="utf-8"), "text/javascript" if path.suffix == ".js" else "text/css")
        for path in sorted(WEB_DIR.iterdir())
        if path.suffix in (".js", ".css")
    }

    @app.get("/board", include_in_schema=False)
    def board() -> HTMLResponse:
        return HTMLResponse(pages["board"], headers=PAGE_HEADERS)

    @app.get("/search", include_in_schema=False)
    def search_page() -> HTMLResponse:
        return HTMLResponse(pages["search"], headers=PAGE_HEADERS)

    @app.get("/web/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in assets:
            return JSONResponse({"detail": "not found"}, status_code=404)
        body, media = assets[name]
        return Response(body, media_type=media, headers=PAGE_HEADERS)


def _install_error_handlers(app: FastAPI) -> None:
    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(AuthenticationFailed)
    def _unauthenticated(_r: Request, exc: AuthenticationFailed) -> JSONResponse:
        return reply(401, str(exc))

    @app.exception_handler(AccessDenied)
    def _denied(_r: Request, exc: AccessDenied) -> JSONResponse:
        return reply(403, str(exc))

    @app.exception_handler(NotFound)
    def _not_found(_r: Request, exc: NotFound) -> JSONResponse:
        return reply(404, str(exc))

    @app.exception_handler(DispositionConflictError)
    def _conflict(_r: Request, exc: DispositionConflictError) -> JSONResponse:
        return reply(409, str(exc))

    @app.exception_handler(LookupError)
    def _lookup(_r: Request, exc: LookupError) -> JSONResponse:
        return reply(404, str(exc).strip("'\""))

    for error in (ValueError, AccountError, SharingError):

        @app.exception_handler(error)
        def _bad(_r: Request, exc: Exception) -> JSONResponse:
            return reply(400, str(exc))

    @app.exception_handler(RequestValidationError)
    def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default reply quotes the offending input back: a plate, a password. Say where, not what.
        problems = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid"))} for e in exc.errors()]
        return JSONResponse({"detail": problems}, status_code=422)
