"""REST API (django-ninja): thin handlers over services and selectors."""

import logging
import time
from decimal import Decimal

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.deprecation import MiddlewareMixin
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import HttpError, ValidationError
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.throttling import AuthRateThrottle

from . import approval, invoices, projects, result_aggregator, selectors, services, streams
from .api_keys import (
    AuthFailuresThrottled,
    Bearer,
    KeyHeader,
    StreamBearer,
    StreamKeyHeader,
    auth_failures_throttled,
)
from .api_schemas import (
    ActionOut,
    ApproveIn,
    AttemptOut,
    ErrorOut,
    EventsOut,
    ExecuteIn,
    ExecuteOut,
    ExecutionListItem,
    ExecutionOut,
    InvoiceOut,
    PoolOut,
    ProjectDetailOut,
    ProjectOut,
)
from .models import Execution
from .states import ExecutionStatus

api = NinjaAPI(
    title="OpenClaw Parallel Execution",
    version="1.0",
    auth=[KeyHeader(), Bearer()],
    throttle=[AuthRateThrottle(settings.OPENCLAW_API_RATE)],
    urls_namespace="api",
)
api.add_exception_handler(AuthFailuresThrottled, auth_failures_throttled)


# Clearer words for the errors clients meet most.
FRIENDLY_ERRORS = {
    ("message", "string_too_short"): "must not be empty",
    ("message", "string_pattern_mismatch"): "must not be empty or only whitespace",
    ("message", "string_too_long"): f"longer than {settings.OPENCLAW_MAX_MESSAGE_CHARS} characters",
    ("sessionKey", "string_pattern_mismatch"): "letters, digits and _ . : @ - only",
}


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    details = []
    for error in exc.errors:
        where = ".".join(str(p) for p in error.get("loc", []) if p not in ("body", "payload"))
        message = FRIENDLY_ERRORS.get((where, error.get("type")), error.get("msg"))
        if error.get("type") == "extra_forbidden":
            message = "not a field of this request (the fields are in /api/docs)"
        details.append(f"{where}: {message}" if where else message)
    return api.create_response(request, {"detail": "; ".join(details) or "invalid request"}, status=422)


logger = logging.getLogger("openclaw.api")


def documented(ok: dict, *errors: int) -> dict:
    """Response schemas: the success ones, the given errors, and the 401/429 any call can get."""
    return {**ok, **dict.fromkeys((401, 429, *errors), ErrorOut)}


def owned_execution(request: HttpRequest, execution_id: str) -> Execution:
    execution = selectors.execution_for_client(request.auth, execution_id)
    if execution is None:
        raise HttpError(404, "execution not found")
    return execution


@api.post("/execute-parallel", response=documented({202: ExecuteOut}, 400, 422), summary="Start an execution")
def execute_parallel(request: HttpRequest, payload: ExecuteIn, wait: float = Query(0, ge=0, le=60)):
    try:
        execution = services.execution_create(
            client=request.auth,
            message=payload.message.strip(),
            session_key=payload.sessionKey,
            project=payload.project,
            mode=payload.mode,
            force_parallel=payload.force_parallel,
            budget_usd=None if payload.budget_usd is None else Decimal(str(round(payload.budget_usd, 2))),
            approval=payload.approval,
            callback_url=payload.callback_url,
        )
    except services.RequestRefused as exc:
        raise HttpError(422, str(exc)) from None
    if wait:
        wait_for_plan(request.auth.pk, execution, min(wait, settings.OPENCLAW_MAX_PLAN_WAIT_SEC))
    return Status(202, selectors.execution_brief(execution.pk))


def wait_for_plan(client_id: int, execution: Execution, seconds: float) -> None:
    """`?wait=`: poll until the plan is in, without holding a database connection between polls
    (20 waiting requests would otherwise take a pooled PostgreSQL connection each for up to a
    minute). A client waits in at most OPENCLAW_MAX_WAITS_PER_CLIENT requests at once; beyond
    that the answer comes at once, as without `wait`."""
    slot = f"plan-waits:{client_id}"
    cache.add(slot, 0, timeout=int(seconds) + 60)
    try:
        if cache.incr(slot) > settings.OPENCLAW_MAX_WAITS_PER_CLIENT:
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            execution.refresh_from_db(fields=["status"])
            if execution.status != ExecutionStatus.PLANNING:
                return
            if not connection.in_atomic_block:
                connection.close()  # back to the pool while sleeping
            time.sleep(0.1)
    finally:
        try:
            cache.decr(slot)
        except ValueError:  # the counter expired meanwhile: nothing left to release
            pass


@api.get(
    "/execution/{execution_id}", response=documented({200: ExecutionOut}, 404), summary="Execution status"
)
def execution_detail(request: HttpRequest, execution_id: str):
    return selectors.execution_detail(owned_execution(request, execution_id))


@api.get(
    "/execution/{execution_id}/invoice",
    response=documented({200: InvoiceOut}, 404),
    summary="Invoice: ledger lines, totals, refund, net",
)
def execution_invoice(request: HttpRequest, execution_id: str):
    return invoices.execution_invoice(owned_execution(request, execution_id))


class Pages(LimitOffsetPagination):
    """Ninja's limit/offset pages with both numbers bounded: one past the database's integers is a
    422 naming the parameter, not a failed query."""

    class Input(Schema):
        limit: int = Field(100, ge=1, le=1000)
        offset: int = Field(0, ge=0, le=2**31 - 1)


@api.get(
    "/executions",
    response=documented({200: list[ExecutionListItem]}, 422),
    summary="Your executions, newest first",
)
@paginate(Pages)
def execution_list(request: HttpRequest, status: ExecutionStatus | None = None, project: str | None = None):
    return selectors.execution_list(request.auth, status=status, project=project)


@api.post(
    "/execution/{execution_id}/cancel", response=documented({200: ActionOut}, 404, 409), summary="Cancel"
)
def execution_cancel(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    if not services.execution_cancel(execution, by="client"):
        raise HttpError(409, f"execution is {execution.status}; only running executions can be cancelled")
    execution.refresh_from_db()
    return {"execution_id": execution.pk, "status": execution.status, "detail": "cancelled"}


@api.post(
    "/execution/{execution_id}/retry",
    response=documented({200: ActionOut}, 404, 409),
    summary="Retry dead and blocked tasks",
)
def execution_retry(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    reopened = services.execution_retry(execution)
    if not reopened:
        raise HttpError(409, f"execution is {execution.status}; nothing to retry")
    execution.refresh_from_db()
    return {"execution_id": execution.pk, "status": execution.status, "detail": f"{reopened} tasks reopened"}


@api.post(
    "/execution/{execution_id}/approve",
    response=documented({200: ActionOut}, 400, 404, 409, 422),
    summary="Approve the plan (optionally edited): the fee is charged and the work starts",
)
def execution_approve(request: HttpRequest, execution_id: str, payload: ApproveIn | None = None):
    execution = owned_execution(request, execution_id)
    tasks = payload.tasks if payload is not None else None
    try:
        execution = approval.execution_approve(execution, by="client", tasks=tasks)
    except approval.ApprovalRefused as exc:
        raise HttpError(409 if exc.conflict else 422, exc.reason) from None
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "detail": f"approved: {execution.tasks.count()} tasks, fee ${execution.fee_usd:.2f}",
    }


@api.post(
    "/execution/{execution_id}/reject",
    response=documented({200: ActionOut}, 404, 409),
    summary="Reject the plan: the execution is cancelled with no fee",
)
def execution_reject(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    try:
        execution = approval.execution_reject(execution, by="client")
    except approval.ApprovalRefused as exc:
        raise HttpError(409, exc.reason) from None
    return {"execution_id": execution.pk, "status": execution.status, "detail": "rejected: no fee charged"}


@api.get(
    "/execution/{execution_id}/events",
    response=documented({200: EventsOut}, 404, 422),
    summary="The resumable event log",
)
def execution_events(
    request: HttpRequest,
    execution_id: str,
    after: int = Query(0, ge=0),
    limit: int = Query(500, ge=1, le=1000),
):
    execution = owned_execution(request, execution_id)
    events = selectors.events_after(execution, after, limit)
    return {
        "execution_id": execution.pk,
        "status": execution.status,
        "events": events,
        "last_seq": events[-1]["seq"] if events else after,
    }


@api.get(
    "/execution/{execution_id}/stream",
    auth=[StreamKeyHeader(), StreamBearer()],
    response=documented({200: None}, 404, 422),
    summary="The event log as Server-Sent Events, live until the execution ends",
    description='One event per SSE (`id: <seq>`, `event: <type>`, `data: <event JSON, with "status" '
    "when it changed the execution's status>`), from the first or after `Last-Event-ID` / `?after=`; "
    "`: heartbeat` comments while idle; closed right after the event that ends the execution.",
)
async def execution_stream(request: HttpRequest, execution_id: str, after: int = Query(0, ge=0)):
    resume = request.headers.get("Last-Event-ID", "").strip()
    if resume:
        if not resume.isdigit():
            raise HttpError(422, "Last-Event-ID: the seq of the last event received")
        after = int(resume)
    if not await sync_to_async(_owned_and_closed, thread_sensitive=False)(request.auth, execution_id):
        raise HttpError(404, "execution not found")
    response = StreamingHttpResponse(
        streams.execution_stream(execution_id, after, heartbeat_sec=settings.OPENCLAW_SSE_HEARTBEAT_SEC),
        content_type="text/event-stream; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def _owned_and_closed(client, execution_id: str) -> bool:
    """Whether the client owns the execution; the connection is closed before the stream waits."""
    try:
        return selectors.execution_for_client(client, execution_id) is not None
    finally:
        if not connection.in_atomic_block:
            connection.close()


@api.get(
    "/execution/{execution_id}/tasks/{task_key}/attempts/{number}",
    response=documented({200: AttemptOut}, 404, 422),
    summary="One attempt of a task, with its transcript",
)
def attempt_detail(request: HttpRequest, execution_id: str, task_key: str, number: int):
    transcript = selectors.attempt_transcript(owned_execution(request, execution_id), task_key, number)
    if transcript is None:
        raise HttpError(404, "attempt not found")
    return transcript


@api.get(
    "/execution/{execution_id}/artifacts.zip",
    response=documented({200: None}, 404),
    summary="The merged project tree (zip)",
)
def execution_artifacts(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    response = HttpResponse(result_aggregator.artifacts_zip(execution), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{execution.pk}.zip"'
    return response


@api.get(
    "/execution/{execution_id}/diff",
    response=documented({200: None}, 404, 409),
    summary="The unified diff base_commit..result_commit (text/x-diff)",
)
def execution_diff(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    if not execution.result_commit:
        raise HttpError(409, f"execution is {execution.status}; it has not landed on its project's main yet")
    try:
        patch, _ = projects.execution_diff(execution)
    except projects.ProjectError as exc:
        logger.error("diff of %s failed: %s", execution.pk, exc)
        raise HttpError(409, "the project's repository cannot be read") from None
    response = HttpResponse(patch, content_type="text/x-diff; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="{execution.pk}.diff"'
    return response


@api.get("/projects", response=documented({200: list[ProjectOut]}), summary="Your projects")
def project_list(request: HttpRequest):
    return selectors.project_list(request.auth)


@api.get(
    "/projects/{name}",
    response=documented({200: ProjectDetailOut}, 404),
    summary="A project: head, history (the execution and task of each commit), files, clone URL",
)
def project_detail(request: HttpRequest, name: str):
    project = selectors.project_for_client(request.auth, name)
    if project is None:
        raise HttpError(404, "project not found")
    return selectors.project_detail(project)


@api.get("/pools", response=documented({200: list[PoolOut]}), summary="Worker pools and their load")
def pool_list(request: HttpRequest):
    return selectors.pool_overview()


UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, OperationalError, InterfaceError)


@api.exception_handler(Exception)
def api_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """An API client gets JSON and nothing of the server's internals, whatever DEBUG says (ninja's
    own handler answers with the traceback when DEBUG is on); the traceback goes to the log."""
    if isinstance(exc, PermissionDenied):
        return api.create_response(request, {"detail": "forbidden"}, status=403)
    if isinstance(exc, (BadRequest, SuspiciousOperation)):
        return api.create_response(request, {"detail": "bad request"}, status=400)
    if isinstance(exc, UNAVAILABLE):
        # Redis restarting, the database away or locked: nothing was done, and a retry may pass.
        logger.error("API %s %s: a backing service is unavailable: %s", request.method, request.path, exc)
        response = api.create_response(
            request,
            {"detail": "temporarily unavailable: the database or Redis cannot be reached; retry shortly"},
            status=503,
        )
        response["Retry-After"] = "5"
        return response
    logger.exception("API error on %s %s", request.method, request.path)
    return api.create_response(request, {"detail": "internal server error"}, status=500)


class ApiErrorsInJson(MiddlewareMixin):
    """A path under /api/ that no operation serves, or a method its operation does not take,
    answers in the API's own shape (`{"detail"}`), not with Django's HTML page or ninja's plain text."""

    DETAILS = {404: "not found", 405: "method not allowed"}

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            response.status_code not in self.DETAILS
            or not request.path.startswith("/api/")
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        replaced = JsonResponse({"detail": self.DETAILS[response.status_code]}, status=response.status_code)
        if response.has_header("Allow"):
            replaced["Allow"] = response["Allow"]
        return replaced
