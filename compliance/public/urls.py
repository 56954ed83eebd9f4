from django.urls import path

from compliance.public import audit_views, certificate_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("request/", views.request_form, name="request"),
    path("request/sent/", views.sent, name="sent"),
    path("confirm/<str:token>/", views.confirm, name="confirm"),
    path("status/<str:token>/", views.status, name="status"),
    path("status/<str:token>/withdraw/", views.withdraw, name="withdraw"),
    path("status/<str:token>/certificate.pdf", certificate_views.subject_pdf, name="certificate_pdf"),
    path("status/<str:token>/certificate.json", certificate_views.subject_json, name="certificate_json"),
    path("verify/", certificate_views.verify_page, name="verify"),
    path("verify/pdf-signing.pem", certificate_views.pdf_signing_certificates, name="pdf_signing_certificates"),
    path("audit/keys/", audit_views.public_keys, name="audit_keys"),
    path("audit/checkpoint/", audit_views.latest_checkpoint, name="audit_checkpoint"),
]
