from django.db import migrations, models


class Migration(migrations.Migration):
    """New workspaces are restricted to mapped users unless linked with `--any-member`.

    Only the default changes: workspaces linked before keep their value. The database cannot tell
    a workspace that was left open on purpose from one that was open by default, and closing them
    here would silently refuse every user of a working integration until someone maps them.
    Operators review the open ones in the admin (the "restrict to mapped users" column) or re-run
    `link_slack TEAM CLIENT --user U…`, which closes a workspace unless `--any-member` is given.
    """

    dependencies = [
        ("bots", "0001_slack_workspaces_threads_receipts"),
    ]

    operations = [
        migrations.AlterField(
            model_name="slackworkspace",
            name="restrict_to_mapped_users",
            field=models.BooleanField(
                default=True,
                help_text="Only users with an allowed user mapping may start or act on executions "
                "(off: every member of the workspace may)",
            ),
        ),
    ]
