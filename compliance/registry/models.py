"""Registered models and corpora, their immutable versions, and the records located in them.

Versions are never overwritten: an unlearning job writes a new ModelVersion directory, a corpus
erasure writes a new CorpusVersion file set, each with its SHA-256, and links it to its parent.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class AIModel(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # Evaluation set for verification (JSON under ARTIFACT_ROOT): retain people's facts, never-seen
    # holdout texts, general texts and never-seen control people. Without one, the utility attack cannot
    # run and the others compare the subjects with generated fictitious people.
    eval_set_path = models.CharField(max_length=1000, blank=True)
    eval_set_sha256 = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    def active_version(self) -> ModelVersion | None:
        return self.versions.filter(status=ModelVersion.Status.ACTIVE).order_by("-number").first()


class Corpus(models.Model):
    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON lines"
        TEXT = "text", "Plain text (one record per line)"

    name = models.SlugField(max_length=100, unique=True)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSONL)
    text_field = models.CharField(max_length=64, default="text")
    id_field = models.CharField(max_length=64, default="id", blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "corpora"

    def __str__(self) -> str:
        return self.name

    def current_version(self) -> CorpusVersion | None:
        return self.versions.order_by("-number").first()


class CorpusVersion(models.Model):
    corpus = models.ForeignKey(Corpus, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    path = models.CharField(max_length=1000, help_text="File or directory of the version's files")
    sha256 = models.CharField(max_length=64)
    records = models.PositiveBigIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    created_by_job = models.ForeignKey("jobs.UnlearningJob", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["corpus", "number"], name="corpus_version_number")]
        ordering = ["corpus", "number"]

    def __str__(self) -> str:
        return f"{self.corpus.name} v{self.number}"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active (serve this one)"
        SUPERSEDED = "superseded", "Superseded"
        QUARANTINED = "quarantined", "Quarantined (still holds erased data)"
        CANDIDATE = "candidate", "Candidate (awaiting verification)"
        REJECTED = "rejected", "Rejected by verification"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    path = models.CharField(max_length=1000)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 over the sorted weight and config files")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    trained_on = models.ManyToManyField(CorpusVersion, blank=True, related_name="model_versions")
    created_by_job = models.ForeignKey("jobs.UnlearningJob", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    quarantine_until = models.DateField(null=True, blank=True)
    # How the version was trained, where the service can use it: {"kind": "sharded-lora/v1", "corpus": id,
    # "corpus_version": id, "recipe_sha256", "shards", "slices"} for a sharded fine-tune (exact erasure
    # by shard retraining; the full manifest is sharding.json in the version's directory). {} otherwise.
    training = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "number"], name="model_version_number")]
        ordering = ["model", "number"]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"


class ForgetItem(models.Model):
    """A record of a registered corpus that holds a request's subject. Its text is sealed under the
    request's data key and purged with it."""

    request = models.ForeignKey("erasure.ErasureRequest", on_delete=models.CASCADE, related_name="forget_items")
    corpus_version = models.ForeignKey(CorpusVersion, on_delete=models.PROTECT, related_name="forget_items")
    record_id = models.CharField(max_length=200)
    line_number = models.PositiveBigIntegerField()
    matched = models.JSONField(default=list, help_text="Identifier kinds that matched (name, email, phone...)")
    entities = models.JSONField(default=list, help_text="PII entities: type, start, end, score (no text)")
    pri_score = models.FloatField(default=0.0)
    pri_explanation = models.JSONField(null=True, blank=True)
    text_sealed = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request", "corpus_version", "record_id"], name="forget_item_unique")
        ]

    def __str__(self) -> str:
        return f"{self.corpus_version} record {self.record_id}"

    def _aad(self) -> str:
        return f"forget_item:{self.request_id}:{self.corpus_version_id}:{self.record_id}"

    def seal_text(self, text: str) -> None:
        self.text_sealed = self.request.data_key.seal_json(text, aad=self._aad())

    def text(self) -> str | None:
        if self.text_sealed is None:
            return None
        return str(self.request.data_key.open_json(bytes(self.text_sealed), aad=self._aad()))
