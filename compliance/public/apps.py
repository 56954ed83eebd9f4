from django.apps import AppConfig


class PublicConfig(AppConfig):
    name = "compliance.public"
    label = "public"
    verbose_name = "Public pages"
