from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from compliance.audit.models import AuditCheckpoint, AuditLeaf


class _ReadOnlyAdmin(admin.ModelAdmin):
    """The log is append-only: the admin shows its rows and never adds, changes or deletes one."""

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AuditLeaf)
class AuditLeafAdmin(_ReadOnlyAdmin):
    list_display = ("seq", "event_type", "request_id", "created_at")
    search_fields = ("request_id",)
    list_filter = ("event_type",)


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(_ReadOnlyAdmin):
    list_display = ("size", "created_at")
