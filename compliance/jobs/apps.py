from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "compliance.jobs"
    label = "jobs"
    verbose_name = "Unlearning jobs"
