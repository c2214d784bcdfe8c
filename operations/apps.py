"""Operations: the engine every application's actions on hosts and VMs run through."""

from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Register the operations engine; applications register their operation specs."""

    name = "operations"
    label = "operations"
    verbose_name = "Operations"
