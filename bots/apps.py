from django.apps import AppConfig


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Slack bot"

    def ready(self) -> None:
        # Imported once the apps are ready: the notifier's models cannot load before.
        from executions import events  # noqa: PLC0415

        from .notifier import on_execution_event  # noqa: PLC0415

        # Every process that changes executions (web, workers, reaper) nudges the Slack threads.
        events.subscribe(on_execution_event)
