#!/usr/bin/env python3
"""Sends a trace across two services to a Vantage collector with the real OpenTelemetry SDK.

Used by collector/tests/traces.rs. Two TracerProviders with different `service.name`
(`py-frontend` and `py-backend`), each with a BatchSpanProcessor and the OTLP span
exporter (gRPC or HTTP/protobuf). The frontend's server span `GET /checkout` makes a
client call `call backend`; its context is injected into a carrier with the W3C
propagator and extracted by the backend, whose server span `POST /charge` has a child
`SELECT payments` that fails (status ERROR, an exception event). `--token` is sent as
`authorization: Bearer TOKEN` on every export.

Prints one JSON object on stdout: run id, trace id, and every span's id, parent id,
name and service. Exits 1 if any export failed, and 3 if the OpenTelemetry packages are
not installed (install them with `python3 -m pip install -r tests/python/requirements.txt`).
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
        help="gRPC: http://HOST:PORT; http: http://HOST:PORT/v1/traces",
    )
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--run-id", required=True, help="attribute put on every span")
    parser.add_argument("--token", help="API key with the ingest scope")
    return parser.parse_args()


def make_exporter(protocol, endpoint, token):
    headers = {"authorization": f"Bearer {token}"} if token else None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=10)


def main():
    args = parse_args()
    try:
        from opentelemetry.propagate import extract, inject
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.trace import SpanKind, Status, StatusCode

        exporters = [make_exporter(args.protocol, args.endpoint, args.token) for _ in range(2)]
    except ImportError as e:
        print(
            f"send_traces.py: the OpenTelemetry Python SDK is missing ({e}); install it with "
            "`python3 -m pip install -r tests/python/requirements.txt`",
            file=sys.stderr,
        )
        return EXIT_MISSING_PACKAGES

    class RecordingExporter(SpanExporter):
        """Passes batches to the real exporter and remembers how each export went,
        because the batch processor itself swallows failures."""

        def __init__(self, inner):
            self.inner = inner
            self.results = []
            self.spans = []

        def export(self, batch):
            try:
                result = self.inner.export(batch)
            except Exception as e:  # noqa: BLE001 - reported below
                self.results.append((len(batch), f"raised {e!r}"))
                raise
            self.results.append((len(batch), result.name))
            if result == SpanExportResult.SUCCESS:
                self.spans.extend(batch)
            return result

        def shutdown(self):
            self.inner.shutdown()

        def force_flush(self, timeout_millis=30000):
            return self.inner.force_flush(timeout_millis)

    run = args.run_id
    providers = {}
    recorders = {}
    for service, exporter in zip(["py-frontend", "py-backend"], exporters):
        recorder = RecordingExporter(exporter)
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "run.id": run})
        )
        provider.add_span_processor(BatchSpanProcessor(recorder, schedule_delay_millis=200))
        providers[service] = provider
        recorders[service] = recorder
    frontend = providers["py-frontend"].get_tracer("vantage.e2e.frontend")
    backend = providers["py-backend"].get_tracer("vantage.e2e.backend")

    with frontend.start_as_current_span(
        "GET /checkout", kind=SpanKind.SERVER, attributes={"run_id": run, "http.method": "GET"}
    ) as root:
        trace_id = root.get_span_context().trace_id
        with frontend.start_as_current_span(
            "call backend", kind=SpanKind.CLIENT, attributes={"run_id": run}
        ):
            carrier = {}
            inject(carrier)
        # The "backend" receives the request with the propagated headers.
        ctx = extract(carrier)
        with backend.start_as_current_span(
            "POST /charge",
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={"run_id": run, "http.status_code": 500},
        ):
            with backend.start_as_current_span(
                "SELECT payments", kind=SpanKind.CLIENT, attributes={"run_id": run}
            ) as db:
                db.record_exception(ValueError("card declined"))
                db.set_status(Status(StatusCode.ERROR, "card declined"))

    for provider in providers.values():
        provider.shutdown()

    spans = []
    failed = []
    for service, recorder in recorders.items():
        failed += [r for r in recorder.results if r[1] != SpanExportResult.SUCCESS.name]
        for s in recorder.spans:
            spans.append(
                {
                    "service": service,
                    "name": s.name,
                    "span_id": format(s.context.span_id, "016x"),
                    "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
                }
            )
    print(json.dumps({"run_id": run, "trace_id": format(trace_id, "032x"), "spans": spans}))
    if failed or len(spans) != 4:
        print(f"send_traces.py: exports failed: {failed}, spans {len(spans)}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
