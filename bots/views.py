"""`POST /slack/events`: events, slash commands and interactivity, verified and dispatched by bolt."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .slack_app import slack_request_handler


@csrf_exempt
@require_POST
def slack_events(request: HttpRequest) -> HttpResponse:
    handler = slack_request_handler()
    if handler is None:
        return JsonResponse(
            {"detail": "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET."}, status=503
        )
    return handler.handle(request)
