#!/usr/bin/env python3
"""Sends metrics to a Vantage collector with the real OpenTelemetry Python SDK.

Used by collector/tests/python_sdk.rs: a MeterProvider with a PeriodicExportingMetricReader
and the OTLP metric exporter (gRPC or HTTP/protobuf, the SDK's default cumulative
temporality), recording a counter, an up-down counter, a histogram and an observable
gauge, each with a `region` attribute and the run id. `--token` is sent as
`authorization: Bearer TOKEN` on every export.

Prints one JSON object on stdout describing what was sent. Exits 1 if an export
failed, and 3 if the OpenTelemetry packages are not installed (install them with
`python3 -m pip install -r tests/python/requirements.txt`).
"""

import argparse
import json
import sys

EXIT_EXPORT_FAILED = 1
EXIT_MISSING_PACKAGES = 3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint",
        required=True,
        help="gRPC: http://HOST:PORT; http: http://HOST:PORT/v1/metrics",
    )
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--run-id", required=True, help="attribute put on every point")
    parser.add_argument("--token", help="API key with the ingest scope")
    return parser.parse_args()


def make_exporter(protocol, endpoint, token):
    headers = {"authorization": f"Bearer {token}"} if token else None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=10)


def main():
    args = parse_args()
    try:
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricExportResult,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource

        exporter = make_exporter(args.protocol, args.endpoint, args.token)
    except ImportError as e:
        print(
            f"send_metrics.py: the OpenTelemetry Python SDK is missing ({e}); install it with "
            "`python3 -m pip install -r tests/python/requirements.txt`",
            file=sys.stderr,
        )
        return EXIT_MISSING_PACKAGES

    class RecordingExporter(MetricExporter):
        """Passes exports to the real exporter and remembers how each went, because the
        periodic reader itself swallows failures."""

        def __init__(self, inner):
            super().__init__(
                preferred_temporality=inner._preferred_temporality,
                preferred_aggregation=inner._preferred_aggregation,
            )
            self.inner = inner
            self.results = []

        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
            self.results.append(result.name)
            return result

        def force_flush(self, timeout_millis=10_000):
            return self.inner.force_flush(timeout_millis)

        def shutdown(self, timeout_millis=30_000, **kwargs):
            self.inner.shutdown(timeout_millis=timeout_millis)

    service = f"py-metrics-{args.protocol}"
    resource = Resource.create(
        {"service.name": service, "service.instance.id": args.run_id, "host.name": "e2e-host"}
    )
    recording = RecordingExporter(exporter)
    reader = PeriodicExportingMetricReader(recording, export_interval_millis=60_000)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("vantage.e2e.meter", "1.2.3")

    attrs = {"region": "eu", "run.id": args.run_id}
    orders = meter.create_counter("app.orders", unit="{order}", description="Orders placed")
    queue = meter.create_up_down_counter("app.queue.depth", unit="{item}")
    duration = meter.create_histogram("app.request.duration", unit="s")
    meter.create_observable_gauge(
        "app.temperature",
        callbacks=[lambda _options: [Observation(21.5, attrs)]],
        unit="Cel",
    )
    orders.add(5, attrs)
    orders.add(2, attrs)
    queue.add(10, attrs)
    queue.add(-3, attrs)
    for seconds in [0.002, 0.02, 0.2, 2.0]:
        duration.record(seconds, attrs)

    provider.force_flush()
    provider.shutdown()
    failed = [r for r in recording.results if r != MetricExportResult.SUCCESS.name]
    print(
        json.dumps(
            {
                "service": service,
                "run_id": args.run_id,
                "exports": recording.results,
                "orders": 7,
                "queue_depth": 7,
                "durations": 4,
                "duration_sum": 2.222,
                "temperature": 21.5,
            }
        )
    )
    return EXIT_EXPORT_FAILED if failed or not recording.results else 0


if __name__ == "__main__":
    sys.exit(main())
