from django.http import Http404, HttpRequest, HttpResponse


def _wip(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    raise Http404("jobs pages are being built")


job_list = job_detail = job_progress = job_cancel = job_retry = job_plot = _wip
