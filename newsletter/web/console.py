"""The editor's console: dashboard, issues, subscribers, bounces and charts under /admin/.

Every page reads through :mod:`newsletter.app.console` and every button calls the same
application functions as the CLI (:mod:`newsletter.app.issues`, :mod:`.delivery`), so the
console can do nothing the lifecycle refuses; a refusal is shown as the CLI's one line.
Signing in, sessions and CSRF belong to :mod:`newsletter.web.admin`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import TextIO, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from newsletter.app import console, console_list, review
from newsletter.app import issues as issue_ops
from newsletter.app.subscribers import AddressError, normalize_address
from newsletter.app.subscribers import unsubscribe as unsubscribe_one
from newsletter.app.subscription import approve_and_start
from newsletter.config import LANGS, Config
from newsletter.errors import NewsletterError
from newsletter.lifecycle import (
    IssueState,
    IssueStateError,
    Op,
    PausedBy,
    allowed,
    refusal,
)
from newsletter.mail.tokens import secret_key
from newsletter.publish import charts
from newsletter.publish.render import LOCALES, translations_for
from newsletter.store import SUBSCRIBER_STATUSES, AdminSession, Issue, Store, utcnow
from newsletter.web.admin import HEADERS, PREFIX, Console

log = logging.getLogger(__name__)

PAGE_SIZE = 50
_CSV_CHUNK = 64 * 1024
# The buttons of an issue's page, in order, with the lifecycle operation each needs.
BUTTONS = (
    ("approve", Op.APPROVE),
    ("pause", Op.PAUSE),
    ("resume", Op.RESUME),
    ("cancel", Op.CANCEL),
)


def row_id(text: str) -> int | None:
    """A row's id from a URL: None when empty, ValueError unless 1 <= id < 2**63 (what
    either database can hold; a larger number would fail in the driver)."""
    if not text:
        return None
    value = int(text)
    if not 1 <= value < 2**63:
        raise ValueError(text)
    return value


def buttons(row: Issue) -> list[str]:
    """The operations the lifecycle allows on ``row`` now."""
    shown = []
    for name, op in BUTTONS:
        ok = allowed(op, row.status, row.paused_by)
        if op == Op.PAUSE and (row.status, row.paused_by) == (IssueState.PAUSED, PausedBy.OPERATOR):
            ok = False  # pausing it again changes nothing (newsletter.app.issues.pause)
        if ok:
            shown.append(name)
    return shown


class Pages:
    """The console's pages, over :class:`Console`'s sessions and rendering."""

    def __init__(self, base: Console) -> None:
        self.base = base
        self.cfg = base.cfg

    # -- dashboard ------------------------------------------------------------------------

    async def dashboard(self, request: Request, session: AdminSession) -> Response:
        board = await self.base.db(console.dashboard, utcnow())
        return self.base.render(
            request, "dashboard.html", session=session, board=board, buttons=buttons
        )

    async def live(self, request: Request, session: AdminSession) -> Response:
        try:
            issue_id = row_id(request.query_params.get("issue", ""))
            if issue_id is None:
                raise ValueError
        except ValueError:
            return JSONResponse({"error": "issue: a number"}, status_code=400, headers=HEADERS)
        try:
            counts = await self.base.db(console.live, issue_id, utcnow())
        except NewsletterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404, headers=HEADERS)
        return JSONResponse(counts.as_json(), headers=HEADERS)

    # -- issues ---------------------------------------------------------------------------

    async def issue_list(self, request: Request, session: AdminSession) -> Response:
        rows = await self.base.db(console.issue_rows)
        return self.base.render(request, "issues.html", session=session, rows=rows)

    async def _issue(self, request: Request) -> Issue | None:
        week = request.path_params["week"]
        return await self.base.db(Store.get_issue, week)

    async def issue_page(
        self,
        request: Request,
        session: AdminSession,
        *,
        status: int = 200,
        error: str = "",
    ) -> Response:
        row = await self._issue(request)
        if row is None:
            return self.base.render(request, "missing.html", status=404, session=session)
        lang = request.query_params.get("edition", "")
        lang = lang if lang in LANGS else self.cfg.default_lang
        shown = await self.base.db(lambda store: review.issue_view(self.cfg, store, row, lang))
        live = await self.base.db(console.live, row.id, utcnow())
        return self.base.render(
            request,
            "issue.html",
            status=status,
            session=session,
            view=shown,
            row=row,
            live=live,
            edition=lang,
            editions=LANGS,
            actions=buttons(row),
            error=error,
            done=request.query_params.get("done", "") if not error else "",
        )

    async def issue_action(
        self, request: Request, session: AdminSession, form: dict[str, str]
    ) -> Response:
        row = await self._issue(request)
        if row is None:
            return self.base.render(request, "missing.html", status=404, session=session)
        action = request.path_params["action"]
        try:
            done = await run_in_threadpool(self._act, row, action, form)
        except (NewsletterError, AddressError) as exc:
            log.warning("console: %s %s by %s refused: %s", action, row.week, session.username, exc)
            return await self.issue_page(request, session, status=409, error=str(exc))
        log.info("console: %s %s by %s", action, row.week, session.username)
        if self.base.wake_sender is not None and action in ("approve", "resume", "test"):
            self.base.wake_sender()
        return self.base.redirect(f"{PREFIX}/issues/{row.week}?done={done}")

    def _act(self, row: Issue, action: str, form: dict[str, str]) -> str:
        store = self.base.store()
        if action == "approve":
            if not allowed(Op.APPROVE, row.status, row.paused_by):
                raise IssueStateError(refusal(Op.APPROVE, row.week, row.status, row.paused_by))
            approve_and_start(self.cfg, store, row)
        elif action == "pause":
            issue_ops.pause(store, row.week, "paused from the console")
        elif action == "resume":
            issue_ops.resume(store, row.week)
        elif action == "cancel":
            issue_ops.cancel(store, row.week)
        elif action == "test":
            address = normalize_address(form.get("address", ""))
            lang = form.get("lang", "") if form.get("lang", "") in LANGS else self.cfg.default_lang
            review.test_copy(self.cfg, store, row, secret_key(self.cfg), address, lang)
        else:
            raise NewsletterError(f"unknown action {action!r}")
        return action

    # -- subscribers ------------------------------------------------------------------------

    def _filters(self, request: Request) -> dict[str, str | None]:
        params = request.query_params
        state = params.get("state", "")
        lang = params.get("language", "")
        return {
            # NUL is no character of an address or a name, and PostgreSQL refuses it in text.
            "query": params.get("q", "").replace("\x00", "").strip()[:320],
            "state": state if state in SUBSCRIBER_STATUSES else None,
            "lang": lang if lang in LANGS else None,
        }

    async def subscriber_list(self, request: Request, session: AdminSession) -> Response:
        filters = self._filters(request)
        try:
            after = row_id(request.query_params.get("after", ""))
        except ValueError:
            after = None
        found = await self.base.db(
            console_list.find_subscribers,
            query=filters["query"] or "",
            state=filters["state"],
            lang=filters["lang"],
            after=after,
            limit=PAGE_SIZE,
        )
        return self.base.render(
            request,
            "subscribers.html",
            session=session,
            found=found,
            filters=filters,
            after=after,
            done=request.query_params.get("done", ""),
        )

    async def subscriber_csv(self, request: Request, session: AdminSession) -> Response:
        filters = self._filters(request)
        # Closed by the response's generator once streamed; on disk past 1 MB, so a long
        # list never sits in memory.
        spool = cast(
            TextIO,
            tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", newline=""),  # noqa: SIM115
        )

        try:
            written = await self.base.db(
                console_list.export_filtered,
                spool,
                query=filters["query"] or "",
                state=filters["state"],
                lang=filters["lang"],
            )
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        log.info("console: %s exported %d subscribers", session.username, written)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while text := await run_in_threadpool(spool.read, _CSV_CHUNK):
                    yield text.encode("utf-8")
            finally:
                spool.close()

        name = f"subscribers-{dt.date.today().isoformat()}.csv"
        headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
        return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers=headers)

    async def unsubscribe(
        self, request: Request, session: AdminSession, form: dict[str, str]
    ) -> Response:
        try:
            subscriber_id = row_id(request.path_params["id"])
        except ValueError:
            return self.base.render(request, "missing.html", status=404, session=session)
        done = await self.base.db(unsubscribe_one, subscriber_id)
        if done is None:
            return self.base.render(request, "missing.html", status=404, session=session)
        log.info("console: subscriber %d unsubscribed by %s", subscriber_id, session.username)
        back = form.get("back", "")
        back = back if back.startswith(f"{PREFIX}/subscribers") else f"{PREFIX}/subscribers"
        return self.base.redirect(back + ("&" if "?" in back else "?") + "done=unsubscribed")

    # -- bounces and charts --------------------------------------------------------------

    async def bounces(self, request: Request, session: AdminSession) -> Response:
        reports = await self.base.db(console.recent_reports)
        return self.base.render(request, "bounces.html", session=session, reports=reports)

    async def chart_page(self, request: Request, session: AdminSession) -> Response:
        lang = self.base.lang(request)
        gettext = translations_for(lang).gettext
        # Days as the site counts them (Seoul's, by default), not UTC's.
        now = utcnow().astimezone(self.base.tz)
        over_time = await self.base.db(console_list.subscribers_over_time, now)
        per_issue = await self.base.db(console.issue_deliveries)
        drawn = {
            "growth": charts.line_chart(
                over_time,
                title=gettext("Active subscribers over time"),
                description=gettext("Active subscribers at the end of each day."),
                y_label=gettext("Active subscribers"),
                locale=LOCALES[lang],
                empty=gettext("No subscribers yet."),
                id="growth-chart",
            ),
            "deliveries": charts.bar_chart(
                [row.week for row in per_issue],
                [
                    (gettext("Sent"), [row.sent - row.bounced for row in per_issue]),
                    (gettext("Bounced"), [row.bounced for row in per_issue]),
                    (gettext("Failed"), [row.failed for row in per_issue]),
                ],
                title=gettext("Deliveries per issue"),
                description=gettext(
                    "For each issue: messages delivered, bounced after delivery, and failed."
                ),
                y_label=gettext("Messages"),
                locale=LOCALES[lang],
                empty=gettext("No issue sent yet."),
                id="deliveries-chart",
            ),
        }
        return self.base.render(
            request,
            "charts.html",
            session=session,
            over_time=over_time,
            per_issue=per_issue,
            drawn=drawn,
        )

    async def home(self, request: Request) -> Response:
        if not await self.base.exists():
            return self.base.not_found()
        return self.base.redirect(f"{PREFIX}/")

    @functools.cached_property
    def _script(self) -> bytes:
        from newsletter.publish.render import templates_dir

        return (templates_dir() / "admin" / "console.js").read_bytes()

    async def script(self, request: Request) -> Response:
        if not await self.base.exists():
            return self.base.not_found()
        # Sent with the console's no-store like the rest of /admin/, but read once.
        return Response(self._script, media_type="text/javascript; charset=utf-8", headers=HEADERS)


def routes(
    cfg: Config,
    wake_sender: Callable[[], None] | None = None,
    closers: list[Callable[[], None]] | None = None,
) -> list[BaseRoute]:
    """The console's routes; ``closers`` is given what closes its store."""
    base = Console(cfg, wake_sender)
    if closers is not None:
        closers.append(base.close)
    pages = Pages(base)
    page, action = base.page, base.action
    return [
        Route(PREFIX, pages.home, methods=["GET"]),
        Route(f"{PREFIX}/login", base.login_form, methods=["GET"]),
        Route(f"{PREFIX}/login", base.login, methods=["POST"]),
        Route(f"{PREFIX}/logout", action(base.logout), methods=["POST"]),
        Route(f"{PREFIX}/console.js", pages.script, methods=["GET"]),
        Route(f"{PREFIX}/", page(pages.dashboard), methods=["GET"]),
        Route(f"{PREFIX}/live.json", page(pages.live), methods=["GET"]),
        Route(f"{PREFIX}/issues", page(pages.issue_list), methods=["GET"]),
        Route(f"{PREFIX}/issues/{{week}}", page(pages.issue_page), methods=["GET"]),
        Route(f"{PREFIX}/issues/{{week}}/{{action}}", action(pages.issue_action), methods=["POST"]),
        Route(f"{PREFIX}/subscribers", page(pages.subscriber_list), methods=["GET"]),
        Route(f"{PREFIX}/subscribers.csv", page(pages.subscriber_csv), methods=["GET"]),
        Route(
            f"{PREFIX}/subscribers/{{id}}/unsubscribe",
            action(pages.unsubscribe),
            methods=["POST"],
        ),
        Route(f"{PREFIX}/bounces", page(pages.bounces), methods=["GET"]),
        Route(f"{PREFIX}/charts", page(pages.chart_page), methods=["GET"]),
        Route(f"{PREFIX}/{{path:path}}", lambda request: base.not_found(), methods=["GET", "POST"]),
    ]
