//! Every API route is registered here, through [`Catalog::add`], together with what it
//! needs (open, or a scope) and what it does; the router and the OpenAPI document
//! (`/api/openapi.json`, and the readable `/api/docs`) are built from the same calls, so
//! a route cannot be served without being documented, and a test can walk the document
//! to check every route's authentication.

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use serde_json::{Map, Value, json};
use vantage_storage::meta::Scope;

use super::ApiState;

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credential (probes, login, enrollment: the body carries the secret).
    Open,
    /// A bearer credential holding this scope.
    Scope(Scope),
}

/// One documented operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// HTTP method, upper case.
    pub method: Method,
    /// Path template, axum style (`/api/v1/users/{user_id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// The group it is listed under.
    pub tag: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
}

/// The router under construction and the list of what it serves.
pub struct Catalog {
    router: Router<Arc<ApiState>>,
    operations: Vec<Operation>,
}

fn filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        _ => MethodFilter::GET,
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Catalog {
            router: Router::new(),
            operations: Vec::new(),
        }
    }

    /// Serves `handler` at `method path` and documents it.
    pub fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        tag: &'static str,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Arc<ApiState>>,
        T: 'static,
    {
        self.router = self.router.route(path, on(filter(&method), handler));
        self.operations.push(Operation {
            method,
            path,
            access,
            tag,
            summary,
        });
        self
    }

    /// The router, and the operations it serves (the two documentation routes
    /// included).
    pub fn finish(self) -> (Router<Arc<ApiState>>, Arc<Vec<Operation>>) {
        let mut operations = self.operations;
        for (path, summary) in [
            ("/api/openapi.json", "this API as an OpenAPI 3 document"),
            ("/api/docs", "this API as a readable page"),
        ] {
            operations.push(Operation {
                method: Method::GET,
                path,
                access: Access::Open,
                tag: "meta",
                summary,
            });
        }
        let operations = Arc::new(operations);
        let (json_ops, html_ops) = (operations.clone(), operations.clone());
        let router = self
            .router
            .route(
                "/api/openapi.json",
                axum::routing::get(move || {
                    let doc = openapi(&json_ops);
                    async move {
                        (
                            [(header::CONTENT_TYPE, "application/json")],
                            doc.to_string(),
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                "/api/docs",
                axum::routing::get(move || {
                    let page = html(&html_ops);
                    async move { page }
                }),
            );
        (router, operations)
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn operation_id(op: &Operation) -> String {
    let mut id = op.method.as_str().to_ascii_lowercase();
    for seg in op.path.split('/').filter(|s| !s.is_empty() && *s != "api") {
        id.push('_');
        id.push_str(&seg.replace(['{', '}', '.'], "").replace('-', "_"));
    }
    id
}

/// The OpenAPI 3.0 document of `operations`.
pub fn openapi(operations: &[Operation]) -> Value {
    let mut paths = Map::new();
    for op in operations {
        let mut item = json!({
            "operationId": operation_id(op),
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": path_params(op.path).iter().map(|p| json!({
                "name": p, "in": "path", "required": true, "schema": {"type": "string"}
            })).collect::<Vec<_>>(),
            "responses": {
                "200": {"description": "success"},
                "400": {"description": "a parameter or the body is invalid; the message names it"},
            },
        });
        match op.access {
            Access::Open => {
                item["security"] = json!([]);
            }
            Access::Scope(scope) => {
                item["security"] = json!([{"bearer": []}]);
                item["x-vantage-scope"] = json!(scope.as_str());
                item["responses"]["401"] =
                    json!({"description": "no, malformed, unknown, expired or revoked credential"});
                item["responses"]["403"] = json!({"description": format!("the credential lacks the {} scope", scope.as_str())});
                item["responses"]["429"] = json!({"description": "rate limited; see Retry-After"});
            }
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method.as_str().to_ascii_lowercase()] = item;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Vantage collector API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Logs, metrics (the Prometheus API), traces (native and Jaeger), alerting (rules and Alertmanager's API v2), people, keys and agents. Every operation with a scope needs `Authorization: Bearer <API key or access token>`; the credential decides the tenant.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A plain page listing every operation (no scripts: the API's CSP allows none).
fn html(operations: &[Operation]) -> Response {
    let mut ops: Vec<&Operation> = operations.iter().collect();
    ops.sort_by(|a, b| (a.tag, a.path, a.method.as_str()).cmp(&(b.tag, b.path, b.method.as_str())));
    let mut body = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Vantage API</title></head><body>\
         <h1>Vantage collector API</h1><p>Machine-readable: <a href=\"/api/openapi.json\">/api/openapi.json</a>. \
         Send <code>Authorization: Bearer &lt;API key or access token&gt;</code>; the credential decides the tenant.</p>\
         <table border=\"1\" cellpadding=\"4\"><tr><th>group</th><th>method</th><th>path</th><th>needs</th><th>what</th></tr>",
    );
    for op in ops {
        let needs = match op.access {
            Access::Open => "nothing".to_string(),
            Access::Scope(s) => format!("scope <code>{}</code>", s.as_str()),
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            op.tag,
            op.method,
            escape(op.path),
            needs,
            escape(op.summary)
        ));
    }
    body.push_str("</table></body></html>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_operation_with_its_security() {
        let ops = vec![
            Operation {
                method: Method::GET,
                path: "/healthz",
                access: Access::Open,
                tag: "probes",
                summary: "alive",
            },
            Operation {
                method: Method::GET,
                path: "/api/v1/users/{user_id}",
                access: Access::Scope(Scope::Admin),
                tag: "people",
                summary: "one user",
            },
            Operation {
                method: Method::DELETE,
                path: "/api/v1/users/{user_id}",
                access: Access::Scope(Scope::Admin),
                tag: "people",
                summary: "delete",
            },
        ];
        let doc = openapi(&ops);
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        let get = &doc["paths"]["/api/v1/users/{user_id}"]["get"];
        assert_eq!(get["x-vantage-scope"], "admin");
        assert_eq!(get["parameters"][0]["name"], "user_id");
        assert!(doc["paths"]["/api/v1/users/{user_id}"]["delete"].is_object());
        assert_eq!(get["operationId"], "get_v1_users_user_id");
    }
}
