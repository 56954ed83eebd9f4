urlpatterns: list = []  # filled by the guard API (work in progress)
