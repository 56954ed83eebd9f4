from django.apps import AppConfig


class GuardConfig(AppConfig):
    name = "compliance.guard"
    label = "guard"
    verbose_name = "Inference guard"
