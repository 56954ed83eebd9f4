from django.http import Http404, HttpRequest, HttpResponse


def _wip(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    raise Http404("certificate pages are being built")


subject_pdf = subject_json = verify_page = officer_pdf = officer_json = sign_off = _wip
