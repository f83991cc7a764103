"""Task.paths: the file paths of a task's result, kept beside it (see record_collisions); filled in
for the tasks that already have results."""

from django.db import migrations, models


def fill_paths(apps, schema_editor):
    Task = apps.get_model("executions", "Task")
    for task in Task.objects.exclude(result={}).only("id", "result").iterator(chunk_size=500):
        files = task.result.get("files", []) if isinstance(task.result, dict) else []
        paths = sorted({f["path"] for f in files if isinstance(f, dict) and "path" in f})
        if paths:
            Task.objects.filter(pk=task.pk).update(paths=paths)


class Migration(migrations.Migration):
    dependencies = [("executions", "0003_default_billing_policies")]

    operations = [
        migrations.AddField(
            model_name="task",
            name="paths",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.RunPython(fill_paths, migrations.RunPython.noop),
    ]
