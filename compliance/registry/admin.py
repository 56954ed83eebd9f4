"""Read-mostly admin for the registry: versions are created by services (atomic artifacts, audit),
never typed in by hand, so their identity and hash fields are read-only here."""

from __future__ import annotations

from django.contrib import admin

from compliance.registry.models import AIModel, Corpus, CorpusVersion, ForgetItem, ModelVersion


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ("number", "status", "sha256", "path", "parent", "created_by_job", "quarantine_until", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(AIModel)
class AIModelAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)
    readonly_fields = ("eval_set_path", "eval_set_sha256", "created_at")
    inlines = [ModelVersionInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("model", "number", "status", "sha256", "quarantine_until", "created_at")
    list_filter = ("status", "model")
    readonly_fields = ("model", "number", "parent", "path", "sha256", "status", "trained_on", "created_by_job", "created_at")
    fields = (*readonly_fields, "quarantine_until")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class CorpusVersionInline(admin.TabularInline):
    model = CorpusVersion
    fields = ("number", "sha256", "records", "bytes", "parent", "created_by_job", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Corpus)
class CorpusAdmin(admin.ModelAdmin):
    list_display = ("name", "format", "text_field", "id_field", "created_at")
    readonly_fields = ("format", "text_field", "id_field", "created_at")
    inlines = [CorpusVersionInline]


@admin.register(ForgetItem)
class ForgetItemAdmin(admin.ModelAdmin):
    """Located records: positions and entity types only; the sealed text is never shown here."""

    list_display = ("request", "corpus_version", "record_id", "line_number", "pri_score")
    exclude = ("text_sealed",)
    readonly_fields = ("request", "corpus_version", "record_id", "line_number", "matched", "entities", "pri_score", "pri_explanation", "created_at")

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
