from django.apps import AppConfig


class CertificatesConfig(AppConfig):
    name = "compliance.certificates"
    label = "certificates"
    verbose_name = "Certificates"
