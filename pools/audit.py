"""The configuration audit trail: every changed field of pools, models, settings and policies."""

import json

from django.db import models

from .models import ConfigChange

# Bookkeeping fields that change on every save and say nothing about the configuration.
SKIPPED_FIELDS = {"id", "updated_at"}
CREATED, DELETED = "(created)", "(deleted)"


def _display(obj: models.Model, field: models.Field) -> str:
    if field.is_relation:
        related = getattr(obj, field.name)
        return "" if related is None else str(related)
    value = getattr(obj, field.attname)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def snapshot(obj: models.Model) -> dict[str, str]:
    """The object's configuration fields as displayable strings."""
    return {f.name: _display(obj, f) for f in obj._meta.concrete_fields if f.name not in SKIPPED_FIELDS}


def _entry(obj: models.Model, field: str, old: str, new: str, user, actor: str) -> ConfigChange:
    return ConfigChange(
        user=user if getattr(user, "pk", None) else None,
        actor=actor or getattr(user, "get_username", lambda: "")(),
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        field=field,
        old_value=old,
        new_value=new,
    )


def record_changes(
    obj: models.Model, before: dict[str, str] | None, *, user=None, actor: str = ""
) -> list[ConfigChange]:
    """Record what differs between `before` (None: the object was just created) and the object now."""
    # As stored, not as assigned: Decimal("0.3") in memory is 0.3000 in the database.
    after = snapshot(type(obj)._base_manager.get(pk=obj.pk))
    if before is None:
        entries = [_entry(obj, CREATED, "", json.dumps(after, sort_keys=True), user, actor)]
    else:
        entries = [
            _entry(obj, name, before.get(name, ""), value, user, actor)
            for name, value in after.items()
            if before.get(name, "") != value
        ]
    return ConfigChange.objects.bulk_create(entries)


def record_deletion(obj: models.Model, *, user=None, actor: str = "") -> ConfigChange:
    return ConfigChange.objects.bulk_create(
        [_entry(obj, DELETED, json.dumps(snapshot(obj), sort_keys=True), "", user, actor)]
    )[0]
