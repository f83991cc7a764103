"""Ship the default policies: the seed's fee ($0.80 per planned task: 4 tasks → $3.20) and its refund
example (backend 90 s and security 120 s lost of 60+90+45+120 s → 0.9 × 210/315 = 60% of the fee)."""

from decimal import Decimal

from django.db import migrations


def create_defaults(apps, schema_editor):
    RefundPolicy = apps.get_model("executions", "RefundPolicy")
    PricingPolicy = apps.get_model("executions", "PricingPolicy")
    if not RefundPolicy.objects.filter(is_active=True).exists():
        RefundPolicy.objects.update_or_create(name="seed-default", defaults={
            "is_active": True, "description": "90% of the undelivered share of the work, by estimated duration",
            "share_rule": "weight", "factor": Decimal("0.9"), "floor_share": Decimal("0"), "cap_share": Decimal("1"),
            "on_partial": "undelivered", "on_budget_exceeded": "undelivered", "on_failed": "full",
            "on_cancelled_before_start": "none", "on_cancelled_after_start": "none",
        })
    if not PricingPolicy.objects.filter(is_active=True).exists():
        PricingPolicy.objects.update_or_create(name="seed-default", defaults={
            "is_active": True, "description": "$0.80 per planned task", "method": "per_task",
            "fee_per_task": Decimal("0.80"), "markup": Decimal("1.5"), "minimum_fee": Decimal("0"),
        })


def remove_defaults(apps, schema_editor):
    apps.get_model("executions", "RefundPolicy").objects.filter(name="seed-default").delete()
    apps.get_model("executions", "PricingPolicy").objects.filter(name="seed-default").delete()


class Migration(migrations.Migration):
    dependencies = [("executions", "0002_refund_and_pricing_policies")]

    operations = [migrations.RunPython(create_defaults, remove_defaults)]
