//! End to end: metrics in over Prometheus remote write and OTLP, out over the Prometheus
//! HTTP API, against the real collector binary. Covers the envelope and error types
//! Grafana and promtool rely on, auth and tenant isolation, the out-of-order window,
//! the series limit, bad input, and replay after `kill -9`.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use vantage_proto::otlp::common::v1::InstrumentationScope;
use vantage_proto::otlp::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::prom::{Labels, MetricBatch, MetricMetadata, MetricType, Sample, SeriesSamples};

use common::*;

/// Milliseconds since the epoch, now, rounded down to a whole second so expected
/// timestamps are easy to write.
fn now_ms() -> i64 {
    (now_ns() / 1_000_000_000 * 1_000) as i64
}

fn series(pairs: &[(&str, &str)], samples: Vec<Sample>) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::from_pairs(pairs.iter().copied()),
        samples,
    }
}

/// `POST /api/v1/write` with `batch` as a snappy remote-write body.
async fn remote_write(c: &Collector, batch: &MetricBatch, authorization: Option<&str>) -> Reply {
    let body = vantage_proto::prom::remote::encode_write_request(batch).expect("encodable batch");
    let mut headers = vec![
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    c.api_request(Method::POST, "/api/v1/write", &headers, body)
        .await
}

/// A Prometheus API GET with form-style parameters.
async fn prom_get(c: &Collector, path: &str, params: &[(&str, &str)]) -> Reply {
    let query = serde_urlencoded::to_string(params).expect("encodable");
    c.api_get(&format!("{path}?{query}")).await
}

/// The same as a form-encoded POST, Grafana's default.
async fn prom_post(c: &Collector, path: &str, params: &[(&str, &str)]) -> Reply {
    let body = serde_urlencoded::to_string(params).expect("encodable");
    c.api_request(
        Method::POST,
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

/// `data` of a successful Prometheus API answer; panics with the body otherwise.
fn data(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["status"], "success", "{v}");
    v["data"].clone()
}

/// Asserts a Prometheus error answer with this status and `errorType`.
fn assert_error(reply: &Reply, status: StatusCode, error_type: &str) -> String {
    assert_eq!(reply.status, status, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["errorType"], error_type, "{v}");
    v["error"].as_str().unwrap_or_default().to_string()
}

/// Ten minutes of a counter and a gauge on two instances, every 15 s, ending at `end`.
fn demo_batch(end: i64) -> MetricBatch {
    let mut out = Vec::new();
    for instance in ["a:9100", "b:9100"] {
        let counter = (0..41)
            .map(|i| Sample {
                t: end - (40 - i) * 15_000,
                v: (i * 10) as f64,
            })
            .collect();
        out.push(series(
            &[
                ("__name__", "demo_requests_total"),
                ("job", "api"),
                ("instance", instance),
            ],
            counter,
        ));
        let gauge = (0..41)
            .map(|i| Sample {
                t: end - (40 - i) * 15_000,
                v: if instance == "a:9100" { 1.5 } else { -2.0 },
            })
            .collect();
        out.push(series(
            &[
                ("__name__", "demo_temperature_celsius"),
                ("job", "api"),
                ("instance", instance),
            ],
            gauge,
        ));
    }
    MetricBatch {
        series: out,
        metadata: vec![MetricMetadata {
            metric: "demo_requests_total".into(),
            kind: MetricType::Counter,
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    }
}

#[tokio::test]
async fn remote_write_then_the_prometheus_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let end = now_ms() - 60_000;
    let reply = remote_write(&c, &demo_batch(end), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());

    // Instant query: both counters at `end`, values as strings, time as seconds.
    let t = format!("{}", end / 1000);
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "demo_requests_total"), ("time", &t)],
        )
        .await,
    );
    assert_eq!(d["resultType"], "vector");
    let result = d["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{d}");
    for r in result {
        assert_eq!(r["metric"]["__name__"], "demo_requests_total");
        assert_eq!(r["value"][1], "400");
        assert_eq!(r["value"][0], json!(end / 1000));
    }

    // rate over 5 m: 10 per 15 s.
    let d = data(
        &prom_post(
            &c,
            "/api/v1/query",
            &[
                ("query", "sum by (job) (rate(demo_requests_total[5m]))"),
                ("time", &t),
            ],
        )
        .await,
    );
    let v: f64 = d["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((v - 2.0 * 10.0 / 15.0).abs() < 1e-9, "{d}");
    assert_eq!(d["result"][0]["metric"], json!({"job": "api"}));

    // Range query: matrix sorted by labels, points at every step.
    let start = format!("{}", (end - 120_000) / 1000);
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query_range",
            &[
                ("query", "demo_temperature_celsius"),
                ("start", &start),
                ("end", &t),
                ("step", "30s"),
            ],
        )
        .await,
    );
    assert_eq!(d["resultType"], "matrix");
    let m = d["result"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["metric"]["instance"], "a:9100");
    assert_eq!(m[0]["values"].as_array().unwrap().len(), 5);
    assert_eq!(m[1]["values"][0][1], "-2");

    // Grafana's "Save & test".
    let d = data(&prom_post(&c, "/api/v1/query", &[("query", "1+1")]).await);
    assert_eq!(d["resultType"], "scalar");
    assert_eq!(d["result"][1], "2");

    // Series, labels, label values, metadata.
    let d = data(
        &prom_get(
            &c,
            "/api/v1/series",
            &[
                ("match[]", "demo_requests_total"),
                ("match[]", r#"{instance="b:9100"}"#),
            ],
        )
        .await,
    );
    assert_eq!(d.as_array().unwrap().len(), 3, "{d}");
    let d = data(&prom_get(&c, "/api/v1/labels", &[]).await);
    assert_eq!(d, json!(["__name__", "instance", "job"]));
    let d = data(&prom_get(&c, "/api/v1/label/__name__/values", &[]).await);
    assert_eq!(
        d,
        json!(["demo_requests_total", "demo_temperature_celsius"])
    );
    let d = data(
        &prom_get(
            &c,
            "/api/v1/label/instance/values",
            &[("match[]", r#"demo_temperature_celsius{instance=~"a.*"}"#)],
        )
        .await,
    );
    assert_eq!(d, json!(["a:9100"]));
    // `limit`, as Grafana sends it: cut, with Prometheus's warning.
    let r = prom_get(&c, "/api/v1/label/__name__/values", &[("limit", "1")]).await;
    assert_eq!(data(&r), json!(["demo_requests_total"]));
    assert_eq!(
        r.json()["warnings"],
        json!(["results truncated due to limit"])
    );
    let r = prom_get(
        &c,
        "/api/v1/series",
        &[("match[]", r#"{job="api"}"#), ("limit", "3")],
    )
    .await;
    assert_eq!(data(&r).as_array().unwrap().len(), 3);
    let r = prom_get(&c, "/api/v1/labels", &[("limit", "10")]).await;
    assert_eq!(data(&r).as_array().unwrap().len(), 3);
    assert!(r.json().get("warnings").is_none());
    assert_error(
        &prom_get(&c, "/api/v1/labels", &[("limit", "-1")]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    let d = data(&prom_get(&c, "/api/v1/metadata", &[]).await);
    assert_eq!(
        d["demo_requests_total"],
        json!([{"type": "counter", "help": "Requests served.", "unit": ""}])
    );

    // Build info as Grafana reads it, format_query, exemplars.
    let d = data(&prom_get(&c, "/api/v1/status/buildinfo", &[]).await);
    assert!(d["version"].as_str().unwrap().starts_with("2."), "{d}");
    assert!(d.get("features").is_none());
    let d = data(&prom_get(&c, "/api/v1/format_query", &[("query", "sum(up)by(job)")]).await);
    assert!(d.as_str().unwrap().contains("sum by (job)"), "{d}");
    let d = data(&prom_get(&c, "/api/v1/query_exemplars", &[("query", "up")]).await);
    assert_eq!(d, json!([]));
}

fn number_point(t_ns: u64, v: f64, attrs: &[(&str, &str)]) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
        start_time_unix_nano: t_ns - 60_000_000_000,
        time_unix_nano: t_ns,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn otlp_request(t_ns: u64) -> ExportMetricsServiceRequest {
    let metrics = vec![
        Metric {
            name: "http.server.active_requests".into(),
            unit: "{request}".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![number_point(t_ns, 3.0, &[("http.method", "GET")])],
            })),
            ..Default::default()
        },
        Metric {
            name: "http.server.requests".into(),
            description: "Requests handled".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![number_point(t_ns, 42.0, &[("http.method", "GET")])],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "http.server.duration".into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: t_ns - 60_000_000_000,
                    time_unix_nano: t_ns,
                    count: 6,
                    sum: Some(1.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.1, 0.5],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv_str("service.name", "checkout"),
                    kv_str("service.instance.id", "pod-1"),
                    kv_str("deployment.environment", "prod"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn otlp_metrics_are_queryable_with_prometheus_names() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let t_ns = now_ns() - 30_000_000_000;
    let mut client = MetricsServiceClient::new(c.grpc_channel().await);
    let response = client
        .export(otlp_request(t_ns))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success, None);

    let t = format!("{}", t_ns / 1_000_000_000 + 1);
    let value_of = |d: &Value| -> f64 {
        d["result"][0]["value"][1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[
                (
                    "query",
                    r#"http_server_requests_total{job="checkout",instance="pod-1"}"#,
                ),
                ("time", &t),
            ],
        )
        .await,
    );
    assert_eq!(value_of(&d), 42.0, "{d}");
    assert_eq!(d["result"][0]["metric"]["http_method"], "GET");
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "http_server_active_requests"), ("time", &t)],
        )
        .await,
    );
    assert_eq!(value_of(&d), 3.0, "{d}");
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[
                ("query", r#"http_server_duration_seconds_bucket{le="+Inf"}"#),
                ("time", &t),
            ],
        )
        .await,
    );
    assert_eq!(value_of(&d), 6.0, "{d}");
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[
                ("query", r#"http_server_duration_seconds_bucket{le="0.5"}"#),
                ("time", &t),
            ],
        )
        .await,
    );
    assert_eq!(value_of(&d), 3.0, "{d}");
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "target_info"), ("time", &t)],
        )
        .await,
    );
    assert_eq!(
        d["result"][0]["metric"]["deployment_environment"], "prod",
        "{d}"
    );
    let d = data(
        &prom_get(
            &c,
            "/api/v1/metadata",
            &[("metric", "http_server_requests_total")],
        )
        .await,
    );
    assert_eq!(d["http_server_requests_total"][0]["type"], "counter", "{d}");
}

#[tokio::test]
async fn api_errors_have_prometheus_types() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let e = assert_error(
        &prom_get(&c, "/api/v1/query", &[("query", "sum(")]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert!(!e.is_empty());
    assert_error(
        &prom_get(&c, "/api/v1/query", &[]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert_error(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "up"), ("time", "yesterday")],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    let e = assert_error(
        &prom_get(
            &c,
            "/api/v1/query_range",
            &[
                ("query", "up"),
                ("start", "0"),
                ("end", "100000"),
                ("step", "1"),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert!(e.contains("11,000 points"), "{e}");
    let e = assert_error(
        &prom_get(
            &c,
            "/api/v1/query_range",
            &[
                ("query", "up"),
                ("start", "100"),
                ("end", "50"),
                ("step", "1"),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert!(e.contains("before start"), "{e}");
    assert_error(
        &prom_get(
            &c,
            "/api/v1/query_range",
            &[
                ("query", "up"),
                ("start", "0"),
                ("end", "50"),
                ("step", "0"),
            ],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    let e = assert_error(
        &prom_get(&c, "/api/v1/series", &[]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert!(e.contains("match[]"), "{e}");
    assert_error(
        &prom_get(&c, "/api/v1/series", &[("match[]", r#"{job=""}"#)]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert_error(
        &prom_get(&c, "/api/v1/label/not-a-name/values", &[]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert_error(
        &prom_get(&c, "/api/v1/query", &[("query", r#"{__name__=~"("}"#)]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    // Unsupported PromQL is refused by name, never answered wrongly.
    let e = assert_error(
        &prom_get(&c, "/api/v1/query", &[("query", "histogram_count(up)")]).await,
        StatusCode::BAD_REQUEST,
        "bad_data",
    );
    assert!(e.contains("histogram_count"), "{e}");
}

#[tokio::test]
async fn bad_remote_write_bodies_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_INGEST__MAX_REQUEST_BYTES", "65536")
        .start(dir.path());
    let post = |headers: Vec<(&'static str, &'static str)>, body: Bytes| {
        let c = &c;
        async move {
            c.api_request(Method::POST, "/api/v1/write", &headers, body)
                .await
        }
    };
    let snappy = vec![("content-encoding", "snappy")];
    let r = post(
        snappy.clone(),
        Bytes::from_static(b"\xff\xff\xff\xff\x0fnot snappy"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // A snappy header claiming far more than the limit is refused before allocating.
    let r = post(
        snappy.clone(),
        Bytes::from_static(b"\x80\x80\x80\x80\x0f\x00"),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = post(snappy.clone(), Bytes::from(vec![0u8; 100_000])).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    let r = post(vec![("content-encoding", "gzip")], Bytes::from_static(b"x")).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());

    // Invalid label names: that series is refused and counted, the rest stored.
    let now = now_ms();
    let batch = MetricBatch {
        series: vec![
            series(
                &[("__name__", "ok_metric")],
                vec![Sample { t: now, v: 1.0 }],
            ),
            series(
                &[("__name__", "bad_metric"), ("bad-label", "x")],
                vec![Sample { t: now, v: 1.0 }],
            ),
        ],
        metadata: vec![],
    };
    let r = remote_write(&c, &batch, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("1 samples rejected"), "{}", r.text());
    let d = data(&prom_get(&c, "/api/v1/query", &[("query", "ok_metric")]).await);
    assert_eq!(d["result"].as_array().unwrap().len(), 1);

    // A label value far over the limit: the message quotes the series only in part, so
    // the answer (which SDKs log) is not as long as the value.
    let long = "v".repeat(40_000);
    let batch = MetricBatch {
        series: vec![series(
            &[("__name__", "long_metric"), ("big", &long)],
            vec![Sample { t: now, v: 1.0 }],
        )],
        metadata: vec![],
    };
    let r = remote_write(&c, &batch, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let text = r.text();
    assert!(text.len() < 2_000, "{} bytes", text.len());
    assert!(
        text.contains("long_metric{big=\"vvv") && text.contains("bytes cut"),
        "{text}"
    );
    assert!(
        text.contains("value of label \"big\" is 40000 bytes, more than 16384"),
        "{text}"
    );

    // NaN and ±Inf are values like any other.
    let batch = MetricBatch {
        series: vec![
            series(
                &[("__name__", "odd"), ("v", "nan")],
                vec![Sample {
                    t: now,
                    v: f64::NAN,
                }],
            ),
            series(
                &[("__name__", "odd"), ("v", "inf")],
                vec![Sample {
                    t: now,
                    v: f64::INFINITY,
                }],
            ),
            series(
                &[("__name__", "odd"), ("v", "-inf")],
                vec![Sample {
                    t: now,
                    v: f64::NEG_INFINITY,
                }],
            ),
        ],
        metadata: vec![],
    };
    assert_eq!(
        remote_write(&c, &batch, None).await.status,
        StatusCode::NO_CONTENT
    );
    let d = data(&prom_get(&c, "/api/v1/query", &[("query", "sort(odd)")]).await);
    let mut values: Vec<String> = d["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"][1].as_str().unwrap().to_string())
        .collect();
    values.sort();
    assert_eq!(values, vec!["+Inf", "-Inf", "NaN"]);
}

#[tokio::test]
async fn out_of_order_duplicates_and_the_series_limit() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_METRICS__MAX_SERIES_PER_TENANT", "100")
        .start(dir.path());
    let now = now_ms();
    let one = |t: i64, v: f64| MetricBatch {
        series: vec![series(
            &[("__name__", "ooo"), ("job", "x")],
            vec![Sample { t, v }],
        )],
        metadata: vec![],
    };
    assert_eq!(
        remote_write(&c, &one(now, 1.0), None).await.status,
        StatusCode::NO_CONTENT
    );
    // Within the 10 m window: accepted.
    assert_eq!(
        remote_write(&c, &one(now - 60_000, 0.5), None).await.status,
        StatusCode::NO_CONTENT
    );
    // An identical retry is accepted silently.
    assert_eq!(
        remote_write(&c, &one(now, 1.0), None).await.status,
        StatusCode::NO_CONTENT
    );
    // Too far behind, or the same time with another value: refused with a reason.
    let r = remote_write(&c, &one(now - 3_600_000, 2.0), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = remote_write(&c, &one(now, 9.0), None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let t = format!("{}", now / 1000);
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "count_over_time(ooo[5m])"), ("time", &t)],
        )
        .await,
    );
    assert_eq!(d["result"][0]["value"][1], "2", "{d}");

    // 150 new series past a limit of 100 (1 exists): 51 refused, the others stored.
    let batch = MetricBatch {
        series: (0..150)
            .map(|i| {
                series(
                    &[("__name__", "burst"), ("i", &i.to_string())],
                    vec![Sample { t: now, v: 1.0 }],
                )
            })
            .collect(),
        metadata: vec![],
    };
    let r = remote_write(&c, &batch, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().starts_with("51 samples rejected"), "{}", r.text());
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "count(burst)"), ("time", &t)],
        )
        .await,
    );
    assert_eq!(d["result"][0]["value"][1], "99", "{d}");
    let metrics = c.api_get("/metrics").await.text();
    assert!(
        metrics.contains(
            r#"vantage_ingest_rejected_records_total{signal="metrics",reason="series_limit"} 51"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn credentials_scopes_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let now = now_ms();
    let r = c
        .request_anonymous(
            Method::GET,
            &format!("http://{}/api/v1/query?query=up", c.addrs.api),
            &[],
            Bytes::new(),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthenticated");

    // A second tenant with its own keys.
    let created = c
        .api_request(
            Method::POST,
            "/api/v1/tenants",
            &[("content-type", "application/json")],
            json!({"name": "blue"}).to_string(),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.text());
    let key = |tenant: &str, scopes: &[&str]| {
        let body = json!({"tenant": tenant, "name": "k", "scopes": scopes}).to_string();
        let c = &c;
        async move {
            let r = c
                .api_request(
                    Method::POST,
                    "/api/v1/keys",
                    &[("content-type", "application/json")],
                    body,
                )
                .await;
            assert!(r.status.is_success(), "{}", r.text());
            bearer(r.json()["key"].as_str().unwrap())
        }
    };
    let blue_ingest = key("blue", &["ingest"]).await;
    let blue_query = key("blue", &["query"]).await;

    let batch = MetricBatch {
        series: vec![series(
            &[("__name__", "blue_only")],
            vec![Sample { t: now, v: 7.0 }],
        )],
        metadata: vec![],
    };
    // A query key cannot write; an ingest key can.
    assert_eq!(
        remote_write(&c, &batch, Some(&blue_query)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        remote_write(&c, &batch, Some(&blue_ingest)).await.status,
        StatusCode::NO_CONTENT
    );
    // An ingest key cannot query.
    let q = serde_urlencoded::to_string([("query", "blue_only")]).unwrap();
    let r = c
        .api_request(
            Method::GET,
            &format!("/api/v1/query?{q}"),
            &[("authorization", &blue_ingest)],
            Bytes::new(),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // Blue sees its series; default does not, in queries or in metadata endpoints.
    let r = c
        .api_request(
            Method::GET,
            &format!("/api/v1/query?{q}"),
            &[("authorization", &blue_query)],
            Bytes::new(),
        )
        .await;
    assert_eq!(data(&r)["result"][0]["value"][1], "7");
    let d = data(&prom_get(&c, "/api/v1/query", &[("query", "blue_only")]).await);
    assert_eq!(d["result"], json!([]));
    let d = data(&prom_get(&c, "/api/v1/label/__name__/values", &[]).await);
    assert_eq!(d, json!([]));
}

#[tokio::test]
async fn acknowledged_samples_survive_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let end = now_ms() - 60_000;
    let t = format!("{}", end / 1000);
    let count_query = [
        ("query", "count_over_time(demo_requests_total[15m])"),
        ("time", t.as_str()),
    ];
    {
        let c = Collector::start(dir.path());
        assert_eq!(
            remote_write(&c, &demo_batch(end), None).await.status,
            StatusCode::NO_CONTENT
        );
        c.kill_9();
    }
    {
        let c = Collector::start(dir.path());
        let d = data(&prom_get(&c, "/api/v1/query", &count_query).await);
        assert_eq!(d["result"].as_array().unwrap().len(), 2, "{d}");
        assert_eq!(d["result"][0]["value"][1], "41", "{d}");
        // A clean stop flushes the head into a block; the restart reads it back once.
        let (status, log) = c.terminate().await;
        assert!(status.success(), "{log}");
    }
    let c = Collector::start(dir.path());
    let d = data(&prom_get(&c, "/api/v1/query", &count_query).await);
    assert_eq!(d["result"][0]["value"][1], "41", "{d}");
    let d = data(&prom_get(&c, "/api/v1/metadata", &[]).await);
    assert_eq!(d["demo_requests_total"][0]["type"], "counter", "{d}");
}

#[tokio::test]
async fn a_100k_series_burst_stops_at_the_limit_and_heavy_queries_stop_too() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::builder()
        .env("VANTAGE_METRICS__MAX_SERIES_PER_TENANT", "50000")
        .start(dir.path());
    let now = now_ms();
    let mut rejected = 0u64;
    for chunk in 0..10 {
        let batch = MetricBatch {
            series: (0..10_000)
                .map(|i| {
                    let id = (chunk * 10_000 + i).to_string();
                    series(
                        &[("__name__", "explosion"), ("request_id", &id)],
                        vec![Sample { t: now, v: 1.0 }],
                    )
                })
                .collect(),
            metadata: vec![],
        };
        let r = remote_write(&c, &batch, None).await;
        if r.status == StatusCode::BAD_REQUEST {
            let text = r.text();
            assert!(
                text.contains("series"),
                "the reason names the limit: {text}"
            );
            rejected += text.split(' ').next().unwrap().parse::<u64>().unwrap();
        } else {
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
        }
    }
    assert_eq!(rejected, 50_000);
    let t = format!("{}", now / 1000);
    let d = data(
        &prom_get(
            &c,
            "/api/v1/query",
            &[("query", "count(explosion)"), ("time", &t)],
        )
        .await,
    );
    assert_eq!(d["result"][0]["value"][1], "50000", "{d}");

    // A query that would take far longer than its timeout is stopped with Prometheus's
    // timeout error; one that would load too many samples is refused as `execution`.
    let r = prom_get(
        &c,
        "/api/v1/query",
        &[
            ("query", "sum(count_over_time(explosion[1h:1s]))"),
            ("time", &t),
            ("timeout", "50ms"),
        ],
    )
    .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "timeout");
    let dir2 = tempfile::tempdir().unwrap();
    let c2 = Collector::builder()
        .env("VANTAGE_METRICS__MAX_SAMPLES_PER_QUERY", "1000")
        .start(dir2.path());
    let batch = MetricBatch {
        series: (0..2_000)
            .map(|i| {
                series(
                    &[("__name__", "many"), ("i", &i.to_string())],
                    vec![Sample { t: now, v: 1.0 }],
                )
            })
            .collect(),
        metadata: vec![],
    };
    assert_eq!(
        remote_write(&c2, &batch, None).await.status,
        StatusCode::NO_CONTENT
    );
    let r = prom_get(
        &c2,
        "/api/v1/query",
        &[("query", "sum(many)"), ("time", &t)],
    )
    .await;
    let e = assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "execution");
    assert!(e.contains("too many samples"), "{e}");
}
