urlpatterns: list = []  # filled by the jobs API (work in progress)
