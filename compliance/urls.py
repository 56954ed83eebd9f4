from django.contrib import admin
from django.urls import include, path

from compliance.common import errors

urlpatterns = [
    path("", include(("compliance.public.urls", "public"), namespace="public")),
    path("portal/", include(("compliance.portal.urls", "portal"), namespace="portal")),
    path("api/", include(("compliance.api.urls", "api"), namespace="api")),
    path("admin/", admin.site.urls),
]

handler400 = errors.bad_request
handler403 = errors.forbidden
handler404 = errors.not_found
handler500 = errors.server_error
