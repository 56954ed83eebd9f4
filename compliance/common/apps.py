from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "compliance.common"
    label = "common"
