"""The staff web console: thin views over console_selectors and the execution services.

Pages render a first snapshot into the HTML; static/console/*.js keeps it live over the websockets
of consumers.py and refetches the `.json` twins of the pages (same selectors) when events arrive.
Every page sends a Content-Security-Policy without inline script, so even markup that slipped
through sanitizing could not run.

Viewing needs staff status; acting needs the model permission the admin would ask for (cancel and
retry change an execution, a new request adds one), and the snapshot tells the page which
actions the viewer may take, so it shows only those buttons.
"""

import re
from decimal import Decimal
from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from . import approval, console_selectors, selectors, services, webhooks
from .models import Client, Execution, WebhookDelivery
from .states import ExecutionStatus
from .throttling import login_throttled

LOGIN_URL = "/console/login/"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
ACTIVITY_EVENTS = 200
CHANGE_EXECUTION = "executions.change_execution"
ADD_EXECUTION = "executions.add_execution"


def console_view(view):
    """Staff only (others go to the console's login), and a strict Content-Security-Policy."""

    @staff_member_required(login_url=LOGIN_URL)
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return wrapped


def require_permission(permission: str):
    """403 for a staff member without `permission` (inside console_view: staff is checked first)."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.has_perm(permission):
                return HttpResponseForbidden(
                    f"Your account lacks the {permission} permission. Ask an administrator.",
                    content_type="text/plain",
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _snapshot(request: HttpRequest, execution_id: str) -> dict:
    snapshot = console_selectors.execution_snapshot(
        execution_id, may_change=request.user.has_perm(CHANGE_EXECUTION)
    )
    if snapshot is None:
        raise Http404("no such execution")
    return snapshot


class StaffAuthenticationForm(AuthenticationForm):
    error_messages = {
        **AuthenticationForm.error_messages,
        "not_staff": "This account has no access to the console. Ask an administrator for staff access.",
    }

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise ValidationError(self.error_messages["not_staff"], code="not_staff")


class ConsoleLoginView(auth_views.LoginView):
    template_name = "console/login.html"
    authentication_form = login_throttled(StaffAuthenticationForm)
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        return reverse("console:executions")


def _list_query(request: HttpRequest) -> dict:
    status = request.GET.get("status", "")
    client = request.GET.get("client", "")
    return {
        "status": status if status in ExecutionStatus.values else "",
        "project": request.GET.get("project", "")[:100],
        "client_id": int(client) if client.isdigit() else None,
    }


@console_view
@require_GET
def executions_page(request: HttpRequest) -> HttpResponse:
    query = _list_query(request)
    return render(
        request,
        "console/executions.html",
        {
            "rows": console_selectors.execution_rows(**query),
            "filters": console_selectors.list_filters(),
            "query": query,
            "nav": "executions",
        },
    )


@console_view
@require_GET
def executions_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"rows": console_selectors.execution_rows(**_list_query(request))})


@console_view
@require_GET
def execution_page(request: HttpRequest, execution_id: str) -> HttpResponse:
    snapshot = _snapshot(request, execution_id)
    execution = Execution.objects.get(pk=execution_id)
    recent = list(execution.events.order_by("-seq")[:ACTIVITY_EVENTS])
    return render(
        request,
        "console/execution.html",
        {
            "snapshot": snapshot,
            "activity": [e.as_message() for e in reversed(recent)],
            "webhooks": console_selectors.webhook_deliveries(execution_id),
            "nav": "executions",
            "git": {
                "client_id": execution.client_id,
                "project": execution.project,
                "result_commit": execution.result_commit,
            },
        },
    )


@console_view
@require_GET
def execution_json(request: HttpRequest, execution_id: str) -> JsonResponse:
    return JsonResponse(_snapshot(request, execution_id))


@console_view
@require_GET
def task_files_json(request: HttpRequest, execution_id: str, task_key: str) -> JsonResponse:
    files = console_selectors.task_files(execution_id, task_key)
    if files is None:
        raise Http404("no such task")
    return JsonResponse({"task": task_key, "files": files})


@console_view
@require_GET
def attempt_json(request: HttpRequest, execution_id: str, task_key: str, number: int) -> JsonResponse:
    transcript = selectors.attempt_transcript(_execution_or_404(execution_id), task_key, number)
    if transcript is None:
        raise Http404("no such attempt")
    return JsonResponse(transcript)


@console_view
@require_POST
@require_permission(CHANGE_EXECUTION)
def execution_cancel(request: HttpRequest, execution_id: str) -> HttpResponse:
    execution = _execution_or_404(execution_id)
    if services.execution_cancel(execution, by=f"staff ({request.user.get_username()})"):
        messages.success(
            request, "Execution cancelled. Running attempts were abandoned; their tokens stay billed."
        )
    else:
        execution.refresh_from_db()
        messages.error(request, f"Nothing to cancel: the execution is {execution.status}.")
    return redirect("console:execution", execution_id=execution_id)


@console_view
@require_POST
@require_permission(CHANGE_EXECUTION)
def execution_retry(request: HttpRequest, execution_id: str) -> HttpResponse:
    execution = _execution_or_404(execution_id)
    reopened = services.execution_retry(execution)
    if reopened:
        messages.success(request, f"Retrying {reopened} dead or blocked task{'s' if reopened != 1 else ''}.")
    else:
        execution.refresh_from_db()
        messages.error(request, f"Nothing to retry: the execution is {execution.status}.")
    return redirect("console:execution", execution_id=execution_id)


def plan_from_form(post, plan: list[dict]) -> list[dict] | None:
    """The task list the approval form describes: the quoted plan's tasks that were kept, with
    their pool, description and hard dependencies as edited (soft dependencies on removed tasks
    dropped: they only lend context). None when nothing was changed."""
    kept = set(post.getlist("keep"))
    tasks = []
    for task in plan:
        if task["id"] not in kept:
            continue
        blocked_by = [d for d in re.split(r"[\s,]+", post.get(f"blocked_by:{task['id']}", "")) if d]
        tasks.append(
            {
                **{k: task[k] for k in ("id", "priority", "timeout_sec")},
                "pool": post.get(f"pool:{task['id']}", task["pool"]),
                "description": post.get(f"description:{task['id']}", task["description"]).strip(),
                "blocked_by": blocked_by,
                "soft_deps": [d for d in task["soft_deps"] if d in kept],
            }
        )
    unchanged = [{k: t[k] for k in tasks[0]} for t in plan] if tasks else None
    return None if tasks == unchanged else tasks


@console_view
@require_POST
@require_permission(CHANGE_EXECUTION)
def execution_approve(request: HttpRequest, execution_id: str) -> HttpResponse:
    execution = _execution_or_404(execution_id)
    plan = console_selectors.execution_snapshot(execution_id)["plan"]
    tasks = plan_from_form(request.POST, plan)
    try:
        approval.execution_approve(execution, by=f"staff ({request.user.get_username()})", tasks=tasks)
    except approval.ApprovalRefused as exc:
        messages.error(request, f"Not approved: {exc.reason}")
    else:
        edited = " with the edited plan" if tasks is not None else ""
        messages.success(request, f"Plan approved{edited}: the fee is charged and the tasks start.")
    return redirect("console:execution", execution_id=execution_id)


@console_view
@require_POST
@require_permission(CHANGE_EXECUTION)
def execution_reject(request: HttpRequest, execution_id: str) -> HttpResponse:
    execution = _execution_or_404(execution_id)
    try:
        approval.execution_reject(execution, by=f"staff ({request.user.get_username()})")
    except approval.ApprovalRefused as exc:
        messages.error(request, f"Not rejected: {exc.reason}")
    else:
        messages.success(request, "Plan rejected: the execution is cancelled with no fee.")
    return redirect("console:execution", execution_id=execution_id)


@console_view
@require_POST
@require_permission(CHANGE_EXECUTION)
def webhook_resend(request: HttpRequest, execution_id: str, delivery_pk: int) -> HttpResponse:
    delivery = WebhookDelivery.objects.filter(pk=delivery_pk, execution_id=execution_id).first()
    if delivery is None:
        raise Http404("no such delivery")
    if webhooks.webhook_delivery_resend(delivery=delivery):
        messages.success(request, f"Sending webhook {delivery.delivery_id} again (same delivery id).")
    else:
        messages.error(request, "That webhook is still being delivered; it is retried on its own.")
    return redirect("console:execution", execution_id=execution_id)


def _execution_or_404(execution_id: str) -> Execution:
    execution = Execution.objects.filter(pk=execution_id).first()
    if execution is None:
        raise Http404("no such execution")
    return execution


@console_view
@require_GET
def projects_page(request: HttpRequest) -> HttpResponse:
    return render(
        request, "console/projects.html", {"rows": console_selectors.project_rows(), "nav": "projects"}
    )


@console_view
@require_GET
def project_page(request: HttpRequest, client_id: int, name: str) -> HttpResponse:
    page = console_selectors.project_page(
        client_id, name, at=request.GET.get("at", ""), path=request.GET.get("path", "")
    )
    if page is None:
        raise Http404("no such project")
    return render(request, "console/project.html", {**page, "nav": "projects"})


def _diff_response(diff: str | None) -> HttpResponse:
    if diff is None:
        raise Http404("no commit to show")
    return HttpResponse(diff or "(no changes)\n", content_type="text/plain; charset=utf-8")


@console_view
@require_GET
def execution_diff(request: HttpRequest, execution_id: str) -> HttpResponse:
    return _diff_response(console_selectors.execution_diff(execution_id))


@console_view
@require_GET
def task_diff(request: HttpRequest, execution_id: str, task_key: str) -> HttpResponse:
    return _diff_response(console_selectors.task_diff(execution_id, task_key))


@console_view
@require_GET
def pools_page(request: HttpRequest) -> HttpResponse:
    return render(request, "console/pools.html", {"pools": console_selectors.pool_stats(), "nav": "pools"})


@console_view
@require_GET
def pools_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pools": console_selectors.pool_stats()})


class NewRequestForm(forms.Form):
    client = forms.ModelChoiceField(
        queryset=Client.objects.filter(is_active=True).order_by("name"),
        empty_label=None,
        help_text="The client the execution is billed to.",
    )
    message = forms.CharField(
        widget=forms.Textarea(
            attrs={
                "rows": 5,
                "placeholder": "Build a restaurant website with online booking and secure payments",
            }
        ),
        error_messages={"required": "Describe what to build."},
    )
    project = forms.CharField(max_length=100, required=False)
    mode = forms.ChoiceField(
        choices=Execution.MODES,
        initial="auto",
        help_text="auto lets the router decide between parallel and serial.",
    )
    force_parallel = forms.BooleanField(required=False)
    budget_usd = forms.DecimalField(
        required=False,
        min_value=Decimal("0"),
        max_value=Decimal("100000"),
        max_digits=12,
        decimal_places=2,
        label="Budget (USD)",
        help_text="Empty: the client's default budget.",
    )

    def clean_message(self):
        message = self.cleaned_data["message"]  # already stripped; empty is "required"
        if len(message) > settings.OPENCLAW_MAX_MESSAGE_CHARS:
            raise ValidationError(f"At most {settings.OPENCLAW_MAX_MESSAGE_CHARS} characters.")
        return message


@console_view
@require_permission(ADD_EXECUTION)
def new_request_page(request: HttpRequest) -> HttpResponse:
    form = NewRequestForm(
        request.POST or None,
        initial={"client": Client.objects.filter(is_active=True).order_by("name").first()},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            execution = services.execution_create(
                client=data["client"],
                message=data["message"],
                session_key=_session_key(request),
                project=data["project"],
                mode=data["mode"],
                force_parallel=data["force_parallel"],
                budget_usd=data["budget_usd"],
            )
        except services.RequestRefused as exc:
            form.add_error("message", str(exc))
        else:
            return redirect("console:execution", execution_id=execution.pk)
    return render(
        request,
        "console/new.html",
        {"form": form, "nav": "new", "has_clients": form.fields["client"].queryset.exists()},
    )


def _session_key(request: HttpRequest) -> str:
    return "console-" + (re.sub(r"[^A-Za-z0-9_.:@-]", "", request.user.get_username()) or "staff")[:48]


app_name = "console"
urlpatterns = [
    path("", executions_page, name="executions"),
    path("login/", ConsoleLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page=LOGIN_URL), name="logout"),
    path("executions.json", executions_json, name="executions_json"),
    path("executions/<str:execution_id>/", execution_page, name="execution"),
    path("executions/<str:execution_id>.json", execution_json, name="execution_json"),
    path("executions/<str:execution_id>/tasks/<str:task_key>/files.json", task_files_json, name="task_files"),
    path(
        "executions/<str:execution_id>/tasks/<str:task_key>/attempts/<int:number>.json",
        attempt_json,
        name="attempt",
    ),
    path("executions/<str:execution_id>/cancel", execution_cancel, name="execution_cancel"),
    path("executions/<str:execution_id>/retry", execution_retry, name="execution_retry"),
    path("executions/<str:execution_id>/approve", execution_approve, name="execution_approve"),
    path("executions/<str:execution_id>/reject", execution_reject, name="execution_reject"),
    path(
        "executions/<str:execution_id>/webhooks/<int:delivery_pk>/resend",
        webhook_resend,
        name="webhook_resend",
    ),
    path("projects/", projects_page, name="projects"),
    path("projects/<int:client_id>/<str:name>/", project_page, name="project"),
    path("executions/<str:execution_id>/diff", execution_diff, name="execution_diff"),
    path("executions/<str:execution_id>/tasks/<str:task_key>/diff", task_diff, name="task_diff"),
    path("pools/", pools_page, name="pools"),
    path("pools.json", pools_json, name="pools_json"),
    path("new/", new_request_page, name="new"),
]
