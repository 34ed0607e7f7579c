#!/usr/bin/env python3
"""Sends logs to a Vantage collector with the real OpenTelemetry Python SDK.

Used by collector/tests/python_sdk.rs: the standard `logging` module, bridged by the
SDK's LoggingHandler into a LoggerProvider with a BatchLogRecordProcessor and the OTLP
log exporter (gRPC or HTTP/protobuf). One record is logged inside an active span so it
carries a trace id and span id. `--token` is sent as `authorization: Bearer TOKEN` on
every export, as the collector requires by default.

Prints one JSON object on stdout describing what was sent (run id, service name, trace
and span ids, record count). Exits 1 if any export failed, and 3 if the OpenTelemetry
packages are not installed (install them with
`python3 -m pip install -r tests/python/requirements.txt`).
"""

import argparse
import json
import logging
import sys

EXIT_EXPORT_FAILED = 1
EXIT_MISSING_PACKAGES = 3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint",
        required=True,
        help="gRPC: http://HOST:PORT; http: http://HOST:PORT/v1/logs",
    )
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--run-id", required=True, help="tag put on every record")
    parser.add_argument("--compression", choices=["none", "gzip"], default="none")
    parser.add_argument(
        "--token",
        help="API key with the ingest scope, sent as `authorization: Bearer TOKEN` "
        "(omit for a collector started with --insecure-no-auth)",
    )
    return parser.parse_args()


def make_exporter(protocol, endpoint, compression, token):
    # gRPC metadata keys must be lowercase; HTTP header names are case-insensitive.
    headers = {"authorization": f"Bearer {token}"} if token else None
    if protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(
            endpoint=endpoint,
            insecure=True,
            headers=headers,
            timeout=10,
            compression=grpc.Compression.Gzip
            if compression == "gzip"
            else grpc.Compression.NoCompression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(
        endpoint=endpoint,
        headers=headers,
        timeout=10,
        compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression,
    )


def main():
    args = parse_args()
    try:
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import (
            BatchLogRecordProcessor,
            LogRecordExporter,
            LogRecordExportResult,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        exporter = make_exporter(args.protocol, args.endpoint, args.compression, args.token)
    except ImportError as e:
        print(
            f"send_logs.py: the OpenTelemetry Python SDK is missing ({e}); install it with "
            "`python3 -m pip install -r tests/python/requirements.txt`",
            file=sys.stderr,
        )
        return EXIT_MISSING_PACKAGES

    class RecordingExporter(LogRecordExporter):
        """Passes batches to the real exporter and remembers how each export went,
        because the batch processor itself swallows failures."""

        def __init__(self, inner):
            self.inner = inner
            self.results = []

        def export(self, batch):
            try:
                result = self.inner.export(batch)
            except Exception as e:  # noqa: BLE001 - reported below
                self.results.append((len(batch), f"raised {e!r}"))
                raise
            self.results.append((len(batch), result.name))
            return result

        def shutdown(self):
            self.inner.shutdown()

        def force_flush(self, timeout_millis=30000):
            return self.inner.force_flush(timeout_millis)

    service = f"py-e2e-{args.protocol}"
    resource = Resource.create(
        {"service.name": service, "deployment.environment": "e2e", "run.id": args.run_id}
    )
    recording = RecordingExporter(exporter)
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(recording, schedule_delay_millis=200)
    )
    tracer = TracerProvider(resource=resource).get_tracer("vantage.e2e.tracer")

    logger = logging.getLogger(f"vantage.e2e.{args.protocol}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))

    run = args.run_id
    logger.info(
        "python sdk hello %s",
        run,
        extra={"run_id": run, "user.id": 42, "ratio": 0.5, "flag": True, "step": "hello"},
    )
    with tracer.start_as_current_span("checkout") as span:
        context = span.get_span_context()
        logger.error(
            "python sdk inside span %s",
            run,
            extra={"run_id": run, "order.id": 1001, "step": "span"},
        )
    try:
        raise ValueError("card declined")
    except ValueError:
        logger.exception("python sdk failure %s", run, extra={"run_id": run, "step": "exception"})
    sent = 3

    provider.shutdown()  # flushes the batch processor, then shuts the exporter down

    exported = sum(n for n, result in recording.results if result == LogRecordExportResult.SUCCESS.name)
    failed = [r for r in recording.results if r[1] != LogRecordExportResult.SUCCESS.name]
    print(
        json.dumps(
            {
                "run_id": run,
                "service_name": service,
                "logger_name": logger.name,
                "trace_id": format(context.trace_id, "032x"),
                "span_id": format(context.span_id, "016x"),
                "sent": sent,
                "exported": exported,
                "results": recording.results,
            }
        )
    )
    if failed or exported != sent:
        print(f"send_logs.py: exports failed: {recording.results}", file=sys.stderr)
        return EXIT_EXPORT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
