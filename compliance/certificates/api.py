urlpatterns: list = []  # filled by the certificates API (work in progress)
