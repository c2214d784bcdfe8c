"""Monitoring keeps history in RRD files; the database holds only the last counters."""

from __future__ import annotations

from django.db import models


class LastSample(models.Model):
    """The counters of an object's previous collection, to compute rates from the next one."""

    key = models.CharField(max_length=80, unique=True, help_text="vm:<uuid> or host:<id>.")
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="+")
    data = models.JSONField()
    at = models.FloatField(help_text="Unix time of the sample.")

    def __str__(self) -> str:
        return self.key
