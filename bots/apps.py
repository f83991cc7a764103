from django.apps import AppConfig


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Slack bot"

    def ready(self) -> None:
        from executions import events

        from .notifier import on_execution_event

        # Every process that changes executions (web, workers, reaper) nudges the Slack threads.
        events.subscribe(on_execution_event)
