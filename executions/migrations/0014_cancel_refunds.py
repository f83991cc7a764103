"""A cancel refunds by default: the whole fee before any task started, the undelivered share after.
The shipped policy (`seed-default`) moves to the new defaults unless an admin changed its cancel rules."""

from django.db import migrations, models


def refund_cancels(apps, schema_editor):
    apps.get_model("executions", "RefundPolicy").objects.filter(
        name="seed-default", on_cancelled_before_start="none", on_cancelled_after_start="none"
    ).update(on_cancelled_before_start="full", on_cancelled_after_start="undelivered")


def keep_cancels(apps, schema_editor):
    apps.get_model("executions", "RefundPolicy").objects.filter(
        name="seed-default", on_cancelled_before_start="full", on_cancelled_after_start="undelivered"
    ).update(on_cancelled_before_start="none", on_cancelled_after_start="none")


class Migration(migrations.Migration):

    dependencies = [
        ('executions', '0013_project_contract'),
    ]

    operations = [
        migrations.AlterField(
            model_name='refundpolicy',
            name='on_cancelled_after_start',
            field=models.CharField(choices=[('none', 'no refund'), ('full', 'full refund'), ('undelivered', 'refund the undelivered share')], default='undelivered', max_length=12),
        ),
        migrations.AlterField(
            model_name='refundpolicy',
            name='on_cancelled_before_start',
            field=models.CharField(choices=[('none', 'no refund'), ('full', 'full refund'), ('undelivered', 'refund the undelivered share')], default='full', help_text='Cancelled before any task started', max_length=12),
        ),
        migrations.RunPython(refund_cancels, keep_cancels),
    ]
