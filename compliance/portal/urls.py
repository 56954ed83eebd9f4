from django.contrib.auth import views as auth_views
from django.urls import path

from compliance.portal import certificate_views, job_views, views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.queue, name="queue"),
    path("requests/<str:reference>/", views.detail, name="detail"),
    path("requests/<str:reference>/approve/", views.approve, name="approve"),
    path("requests/<str:reference>/refuse/", views.refuse, name="refuse"),
    path("requests/<str:reference>/extend/", views.extend, name="extend"),
    path("requests/<str:reference>/assign/", views.assign, name="assign"),
    path("requests/<str:reference>/escalation/retry/", views.escalation_retry, name="escalation_retry"),
    path("requests/<str:reference>/escalation/refuse/", views.escalation_refuse, name="escalation_refuse"),
    path("requests/<str:reference>/escalation/guard-only/", views.escalation_guard_only, name="escalation_guard_only"),
    path("requests/<str:reference>/certificate.pdf", certificate_views.officer_pdf, name="certificate_pdf"),
    path("requests/<str:reference>/certificate.json", certificate_views.officer_json, name="certificate_json"),
    path("requests/<str:reference>/sign-off/", certificate_views.sign_off, name="sign_off"),
    path("jobs/", job_views.job_list, name="jobs"),
    path("jobs/<uuid:job_id>/", job_views.job_detail, name="job"),
    path("jobs/<uuid:job_id>/progress/", job_views.job_progress, name="job_progress"),
    path("jobs/<uuid:job_id>/cancel/", job_views.job_cancel, name="job_cancel"),
    path("jobs/<uuid:job_id>/retry/", job_views.job_retry, name="job_retry"),
    path("jobs/<uuid:job_id>/plots/<str:name>", job_views.job_plot, name="job_plot"),
    path("audit/", views.audit, name="audit"),
    path("health/", views.health, name="health"),
]
