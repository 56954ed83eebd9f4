from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from compliance.api import audit_views, certificate_views, guard_views, job_views, views

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path("v1/requests/", views.RequestListCreate.as_view(), name="requests"),
    path("v1/requests/<str:reference>/", views.RequestDetail.as_view(), name="request"),
    path("v1/requests/<str:reference>/approve/", views.Approve.as_view(), name="approve"),
    path("v1/requests/<str:reference>/refuse/", views.Refuse.as_view(), name="refuse"),
    path("v1/requests/<str:reference>/extend/", views.Extend.as_view(), name="extend"),
    path("v1/audit/checkpoint", audit_views.AuditCheckpoint.as_view(), name="audit_checkpoint"),
    path("v1/audit/proof/inclusion", audit_views.AuditInclusionProof.as_view(), name="audit_inclusion_proof"),
    path("v1/audit/proof/consistency", audit_views.AuditConsistencyProof.as_view(), name="audit_consistency_proof"),
    path("v1/jobs/", job_views.JobList.as_view(), name="jobs"),
    path("v1/jobs/<str:job_id>/", job_views.JobDetail.as_view(), name="job"),
    path("v1/jobs/<str:job_id>/cancel/", job_views.JobCancel.as_view(), name="job_cancel"),
    path("v1/jobs/<str:job_id>/retry/", job_views.JobRetry.as_view(), name="job_retry"),
    path("v1/guard", guard_views.GuardFilter.as_view(), name="guard"),
    path("v1/guard/stream", guard_views.GuardStream.as_view(), name="guard_stream"),
    path("v1/guard/health", guard_views.GuardHealthView.as_view(), name="guard_health"),
    path("v1/requests/<str:reference>/certificate.json", certificate_views.CertificateJson.as_view(), name="certificate_json"),
    path("v1/requests/<str:reference>/certificate.pdf", certificate_views.CertificatePdf.as_view(), name="certificate_pdf"),
    path("v1/certificates/verify", certificate_views.CertificateVerify.as_view(), name="certificate_verify"),
]
