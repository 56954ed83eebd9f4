from django.apps import AppConfig


class ErasureConfig(AppConfig):
    name = "compliance.erasure"
    label = "erasure"
    verbose_name = "Erasure requests"
