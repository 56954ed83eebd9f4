from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "compliance.portal"
    label = "portal"
    verbose_name = "Officer portal"
