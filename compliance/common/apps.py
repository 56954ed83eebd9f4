from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "compliance.common"
    label = "common"

    def ready(self) -> None:
        from celery.signals import task_postrun

        from compliance.common.periodic import record_run

        task_postrun.connect(record_run, weak=False, dispatch_uid="compliance.periodic.record_run")
