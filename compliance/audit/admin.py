from django.contrib import admin

from compliance.audit.models import AuditCheckpoint, AuditLeaf


@admin.register(AuditLeaf)
class AuditLeafAdmin(admin.ModelAdmin):
    list_display = ("seq", "event_type", "request_id", "created_at")
    search_fields = ("request_id",)
    list_filter = ("event_type",)

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(AuditLeafAdmin):
    list_display = ("size", "created_at")
    search_fields = ()
    list_filter = ()
