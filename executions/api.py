"""REST API (django-ninja): thin handlers over services and selectors."""

import time
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import HttpError, ValidationError
from ninja.pagination import LimitOffsetPagination, paginate
from ninja.security import APIKeyHeader, HttpBearer
from ninja.throttling import AuthRateThrottle

from pools.models import WorkerPool

from . import selectors, services
from .models import ApiKey, Client, Execution, ExecutionStatus


def client_for_key(raw: str | None) -> Client | None:
    if not raw:
        return None
    key = ApiKey.objects.select_related("client").filter(key_hash=ApiKey.hash_key(raw), revoked_at__isnull=True).first()
    if key is None or not key.client.is_active:
        return None
    return key.client


class KeyHeader(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> Client | None:
        return client_for_key(key)


class Bearer(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Client | None:
        return client_for_key(token)


api = NinjaAPI(
    title="OpenClaw Parallel Execution",
    version="1.0",
    auth=[KeyHeader(), Bearer()],
    throttle=[AuthRateThrottle(settings.OPENCLAW_API_RATE)],
    urls_namespace="api",
)


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    details = []
    for error in exc.errors:
        where = ".".join(str(p) for p in error.get("loc", []) if p not in ("body", "payload"))
        details.append(f"{where}: {error.get('msg')}" if where else error.get("msg"))
    return api.create_response(request, {"detail": "; ".join(details) or "invalid request"}, status=422)


class ExecuteIn(Schema):
    message: str = Field(..., description="What to build")
    sessionKey: str = Field("api", max_length=64, pattern=r"^[A-Za-z0-9_.:@-]+$")
    project: str = Field("", max_length=100)
    force_parallel: bool = False
    mode: Literal["auto", "parallel", "serial"] = "auto"
    budget_usd: Decimal | None = Field(None, ge=0, le=100000, max_digits=12, decimal_places=2)


class TaskBrief(Schema):
    id: str
    pool: str
    description: str
    status: str
    progress: int
    blocked_by: list[str]


class ExecuteOut(Schema):
    execution_id: str
    status: str
    parallel_tasks: int
    estimated_duration_sec: float | None
    tasks: list[TaskBrief]


class TaskOut(Schema):
    id: str
    pool: str
    kind: str
    description: str
    status: str
    attempts: int
    blocked_by: list[str]
    soft_deps: list[str]
    started_at: str | None
    finished_at: str | None
    progress: int
    tokens_in: int
    tokens_out: int
    cost_usd: str
    error: str


class ConflictOut(Schema):
    kind: str
    status: str
    between: list[str]
    description: str
    resolution: str


class ExecutionOut(Schema):
    execution_id: str
    status: str
    mode: str
    requested_mode: str
    routing_reason: str
    project: str
    message: str
    created_at: str
    duration_sec: float | None
    estimated_duration_sec: float | None
    serial_estimate_sec: float | None
    tasks_completed: int
    tasks_failed: int
    cost: str
    cost_usd: str
    fee_usd: str
    refund_usd: str
    budget_usd: str | None
    tokens_in: int
    tokens_out: int
    final_response: str
    quality_score: float | None
    plan_source: str
    plan_notes: list[str]
    provider: str
    tasks: list[TaskOut]
    conflicts: list[ConflictOut]


class ExecutionListItem(Schema):
    execution_id: str
    status: str
    mode: str
    project: str
    message: str
    created_at: str
    duration_sec: float | None
    cost_usd: str
    tasks_total: int
    tasks_completed: int


class EventOut(Schema):
    execution_id: str
    seq: int
    type: str
    task: str | None
    payload: dict
    at: str


class EventsOut(Schema):
    execution_id: str
    status: str
    events: list[EventOut]
    last_seq: int


class PoolOut(Schema):
    name: str
    enabled: bool
    max_concurrent: int
    timeout_sec: int
    max_retries: int
    model: str | None
    provider: str
    provider_note: str
    queued: int
    running: int
    ready: int


class ActionOut(Schema):
    execution_id: str
    status: str
    detail: str


class ErrorOut(Schema):
    detail: str


def owned_execution(request: HttpRequest, execution_id: str) -> Execution:
    execution = selectors.execution_for_client(request.auth, execution_id)
    if execution is None:
        raise HttpError(404, "execution not found")
    return execution


@api.post("/execute-parallel", response={202: ExecuteOut, 400: ErrorOut, 422: ErrorOut}, summary="Start an execution")
def execute_parallel(request: HttpRequest, payload: ExecuteIn, wait: float = Query(0, ge=0, le=60)):
    message = payload.message.strip()
    if not message:
        raise HttpError(422, "message: must not be empty")
    if len(message) > settings.OPENCLAW_MAX_MESSAGE_CHARS:
        raise HttpError(422, f"message: longer than {settings.OPENCLAW_MAX_MESSAGE_CHARS} characters")
    execution = services.execution_create(
        client=request.auth, message=message, session_key=payload.sessionKey, project=payload.project,
        mode=payload.mode, force_parallel=payload.force_parallel, budget_usd=payload.budget_usd,
    )
    if wait:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            execution.refresh_from_db(fields=["status"])
            if execution.status != ExecutionStatus.PLANNING:
                break
            time.sleep(0.05)
    return Status(202, selectors.execution_brief(execution.pk))


@api.get("/execution/{execution_id}", response=ExecutionOut, summary="Execution status")
def execution_detail(request: HttpRequest, execution_id: str):
    return selectors.execution_detail(owned_execution(request, execution_id))


@api.get("/executions", response=list[ExecutionListItem], summary="Your executions, newest first")
@paginate(LimitOffsetPagination)
def execution_list(request: HttpRequest, status: str | None = None, project: str | None = None):
    if status and status not in ExecutionStatus.values:
        raise HttpError(422, f"status: must be one of {', '.join(ExecutionStatus.values)}")
    return selectors.execution_list(request.auth, status=status, project=project)


@api.post("/execution/{execution_id}/cancel", response={200: ActionOut, 409: ErrorOut}, summary="Cancel")
def execution_cancel(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    if not services.execution_cancel(execution, by="client"):
        raise HttpError(409, f"execution is {execution.status}; only running executions can be cancelled")
    execution.refresh_from_db()
    return {"execution_id": execution.pk, "status": execution.status, "detail": "cancelled"}


@api.post("/execution/{execution_id}/retry", response={200: ActionOut, 409: ErrorOut}, summary="Retry dead and blocked tasks")
def execution_retry(request: HttpRequest, execution_id: str):
    execution = owned_execution(request, execution_id)
    reopened = services.execution_retry(execution)
    if not reopened:
        raise HttpError(409, f"execution is {execution.status}; nothing to retry")
    execution.refresh_from_db()
    return {"execution_id": execution.pk, "status": execution.status, "detail": f"{reopened} tasks reopened"}


@api.get("/execution/{execution_id}/events", response=EventsOut, summary="The resumable event log")
def execution_events(request: HttpRequest, execution_id: str, after: int = Query(0, ge=0), limit: int = Query(500, ge=1, le=1000)):
    execution = owned_execution(request, execution_id)
    events = selectors.events_after(execution, after, limit)
    return {"execution_id": execution.pk, "status": execution.status, "events": events,
            "last_seq": events[-1]["seq"] if events else after}


@api.get("/pools", response=list[PoolOut], summary="Worker pools and their load")
def pool_list(request: HttpRequest):
    return selectors.pool_overview()
