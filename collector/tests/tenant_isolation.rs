//! Two tenants, everything at once, from the outside: what one tenant sends or
//! configures — logs, metrics, traces, rules, alerts, silences, notification routing,
//! enrollment tokens, users — is invisible to the other through every API.

mod common;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use vantage_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

use common::*;

async fn call(
    c: &Collector,
    key: &str,
    method: Method,
    path: &str,
    ctype: &str,
    body: String,
) -> Reply {
    let auth = bearer(key);
    c.api_request(
        method,
        path,
        &[("authorization", &auth), ("content-type", ctype)],
        Bytes::from(body),
    )
    .await
}

async fn get(c: &Collector, key: &str, path: &str) -> Value {
    let r = call(c, key, Method::GET, path, "application/json", String::new()).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text());
    r.json()
}

async fn tenant_admin(c: &Collector, name: &str) -> String {
    let r = call(
        c,
        c.token(),
        Method::POST,
        "/api/v1/tenants",
        "application/json",
        json!({"name": name}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = call(
        c,
        c.token(),
        Method::POST,
        "/api/v1/keys",
        "application/json",
        json!({"name": "admin", "scopes": ["admin"], "tenant": name}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

/// Everything tenant `name` sends and configures, marked with `name`.
async fn populate(c: &Collector, key: &str, name: &str) {
    let auth = bearer(key);
    let channel = c.grpc_channel_with(Some(&auth)).await;
    // Logs.
    let mut logs = c.logs_client_with(Some(&auth)).await;
    logs.export(logs_request(
        &format!("svc-{name}"),
        vec![log_record(&format!("marker-{name}"), vec![])],
    ))
    .await
    .unwrap();
    // Metrics.
    MetricsServiceClient::new(channel.clone())
        .export(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", &format!("svc-{name}"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: format!("load_{name}"),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                time_unix_nano: now_ns(),
                                value: Some(number_data_point::Value::AsDouble(1.0)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    // Traces.
    let trace_id = if name == "blue" {
        [0xb1; 16]
    } else {
        [0xc2; 16]
    };
    TraceServiceClient::new(channel)
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv_str("service.name", &format!("svc-{name}"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: trace_id.to_vec(),
                        span_id: 7u64.to_be_bytes().to_vec(),
                        name: format!("op-{name}"),
                        start_time_unix_nano: now_ns() - 2_000_000,
                        end_time_unix_nano: now_ns() - 1_000_000,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    // A rule group, an alert, a silence, notification routing, an enrollment token.
    let group = format!(
        "name: rules_{name}\ninterval: 1s\nrules:\n  - record: rec_{name}\n    expr: vector(1)\n"
    );
    let r = call(
        c,
        key,
        Method::POST,
        &format!("/api/v1/rules/ns_{name}"),
        "application/yaml",
        group,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let alert = json!([{"labels": {"alertname": format!("alert_{name}")}, "annotations": {}}]);
    let r = call(
        c,
        key,
        Method::POST,
        "/api/v2/alerts",
        "application/json",
        alert.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let silence = json!({
        "matchers": [{"name": "alertname", "value": format!("alert_{name}"), "isRegex": false, "isEqual": true}],
        "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
        "createdBy": name, "comment": format!("silence-{name}"),
    });
    let r = call(
        c,
        key,
        Method::POST,
        "/api/v2/silences",
        "application/json",
        silence.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let am = format!(
        "route:\n  receiver: hook_{name}\nreceivers:\n- name: hook_{name}\n  webhook_configs:\n  - url: http://127.0.0.1:9/{name}\n"
    );
    let r = call(
        c,
        key,
        Method::PUT,
        "/api/v1/alertmanager/config",
        "application/yaml",
        am,
    )
    .await;
    assert!(r.status.is_success(), "{}", r.text());
    let r = call(
        c,
        key,
        Method::POST,
        "/api/v1/enrollment-tokens",
        "application/json",
        json!({"name": format!("fleet-{name}")}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn two_tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let blue = tenant_admin(&c, "blue").await;
    let green = tenant_admin(&c, "green").await;
    populate(&c, &blue, "blue").await;
    populate(&c, &green, "green").await;
    c.wait_for_total_as(&blue, &[("query", "marker-blue")], 1)
        .await;
    c.wait_for_total_as(&green, &[("query", "marker-green")], 1)
        .await;

    for (me, mine, other) in [(&blue, "blue", "green"), (&green, "green", "blue")] {
        let everything = [
            get(&c, me, "/api/v1/logs/search?query=*&start=now-1h").await,
            get(&c, me, "/api/v1/label/__name__/values").await,
            get(
                &c,
                me,
                "/api/v1/query?query=count(%7B__name__%3D~%22.%2B%22%7D)%20by%20(__name__)",
            )
            .await,
            get(&c, me, "/api/services").await,
            get(&c, me, "/api/v1/traces/search?limit=100").await,
            get(&c, me, "/api/v1/rules").await,
            get(&c, me, "/api/v2/alerts").await,
            get(&c, me, "/api/v2/silences").await,
            get(&c, me, "/api/v1/enrollment-tokens").await,
            get(&c, me, "/api/v1/users").await,
            get(&c, me, "/api/v1/keys").await,
        ];
        let text = serde_json::to_string(&everything).unwrap();
        let config = call(
            &c,
            me,
            Method::GET,
            "/api/v1/alertmanager/config",
            "application/json",
            String::new(),
        )
        .await
        .text();
        // Its own things are there…
        for own in [
            format!("marker-{mine}"),
            format!("svc-{mine}"),
            format!("load_{mine}"),
            format!("op-{mine}"),
            format!("rules_{mine}"),
            format!("alert_{mine}"),
            format!("fleet-{mine}"),
        ] {
            assert!(text.contains(&own), "{mine} should see {own}: {text}");
        }
        assert!(config.contains(&format!("hook_{mine}")), "{config}");
        // …and nothing of the other's, by any name.
        assert!(
            !text.contains(other),
            "{mine} sees something of {other}: {text}"
        );
        assert!(!config.contains(other), "{config}");
        // The other's trace by id is simply not found.
        let other_trace = if other == "blue" {
            "b1".repeat(16)
        } else {
            "c2".repeat(16)
        };
        let r = call(
            &c,
            me,
            Method::GET,
            &format!("/api/v1/traces/{other_trace}"),
            "application/json",
            String::new(),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
        let r = call(
            &c,
            me,
            Method::GET,
            &format!("/api/v1/rules/ns_{other}"),
            "application/json",
            String::new(),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    }
}
