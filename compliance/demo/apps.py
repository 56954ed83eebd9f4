from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "compliance.demo"
    label = "demo"
    verbose_name = "Demo (manage.py demo)"
