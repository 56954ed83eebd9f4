from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The peer address. X-Forwarded-For is not trusted: a proxy deployment sets REMOTE_ADDR itself."""
    return str(request.META.get("REMOTE_ADDR") or "unknown")
