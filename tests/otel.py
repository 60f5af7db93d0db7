"""The process-wide OpenTelemetry SDK for tests: metrics and spans go to memory.

The API allows one provider of each kind per process, so both are installed
once, on first use, and tests look only at their own data (by attribute set,
decision id or trace id).
"""

from __future__ import annotations

from functools import cache

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    DataPointT,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@cache
def metric_reader() -> InMemoryMetricReader:
    """Install (once per process) a MeterProvider reading into memory, and return the reader."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


@cache
def span_exporter() -> InMemorySpanExporter:
    """Install (once per process) a TracerProvider exporting every span to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def finished_spans(name: str | None = None) -> list[ReadableSpan]:
    """The spans ended so far (named `name`, when given), oldest first."""
    spans = span_exporter().get_finished_spans()
    return [s for s in spans if name is None or s.name == name]


def _points(name: str) -> list[DataPointT]:
    data = metric_reader().get_metrics_data()
    points: list[DataPointT] = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def counter_value(name: str, **attributes: str) -> int:
    """The current value of a counter for one attribute set (0 when never added to)."""
    return sum(
        int(point.value)
        for point in _points(name)
        if isinstance(point, NumberDataPoint) and dict(point.attributes or {}) == attributes
    )


def gauge_value(name: str, **attributes: str) -> float | None:
    """The value an observable gauge reports for one attribute set now (None if none)."""
    for point in _points(name):
        if isinstance(point, NumberDataPoint) and dict(point.attributes or {}) == attributes:
            return float(point.value)
    return None


def histogram_count(name: str, **attributes: str) -> int:
    """How many values a histogram has recorded for one attribute set."""
    return sum(
        point.count
        for point in _points(name)
        if isinstance(point, HistogramDataPoint) and dict(point.attributes or {}) == attributes
    )
