from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from compliance.api import audit, views

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path("v1/requests/", views.RequestListCreate.as_view(), name="requests"),
    path("v1/requests/<str:reference>/", views.RequestDetail.as_view(), name="request"),
    path("v1/requests/<str:reference>/approve/", views.Approve.as_view(), name="approve"),
    path("v1/requests/<str:reference>/refuse/", views.Refuse.as_view(), name="refuse"),
    path("v1/requests/<str:reference>/extend/", views.Extend.as_view(), name="extend"),
    path("v1/audit/checkpoint", audit.AuditCheckpoint.as_view(), name="audit_checkpoint"),
    path("v1/audit/proof/inclusion", audit.AuditInclusionProof.as_view(), name="audit_inclusion_proof"),
    path("v1/audit/proof/consistency", audit.AuditConsistencyProof.as_view(), name="audit_consistency_proof"),
    path("v1/", include("compliance.jobs.api")),
    path("v1/", include("compliance.guard.api")),
    path("v1/", include("compliance.certificates.api")),
]
