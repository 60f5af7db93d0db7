"""The process-wide OpenTelemetry SDK for tests: metrics go to an in-memory reader."""

from __future__ import annotations

from functools import cache

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


@cache
def metric_reader() -> InMemoryMetricReader:
    """Install (once per process) a MeterProvider reading into memory, and return the reader."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def counter_value(name: str, **attributes: str) -> int:
    """The current value of a counter for one attribute set (0 when never added to)."""
    data = metric_reader().get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if dict(point.attributes or {}) == attributes:
                        total += int(point.value)
    return total
