//! Every API route is registered here, through [`Catalog::add`], together with what it
//! needs (open, or a scope) and what it does; the router and the OpenAPI document
//! (`/api/openapi.json`, and the readable `/api/docs`) are built from the same calls, so
//! a route cannot be served without being documented, and a test can walk the document
//! to check every route's authentication.
//!
//! Bodies are documented from the types the handlers (de)serialize: `.request::<T>()`
//! and `.response::<T>()` after an `add` attach the JSON Schema `schemars` derives from
//! `T` (as a `$ref` into `components/schemas`), so a field added to a request type is in
//! the document without anyone editing it. Bodies that are not JSON are declared with
//! `.request_body(content type)` and `.produces(content type)`.

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
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
    /// Its query parameters: the properties of a derived type's schema.
    pub query: Option<SchemaFn>,
    /// The request body, if it takes one.
    pub request: Option<Body>,
    /// The success response's body.
    pub response: Option<Body>,
    /// The success status (200 unless set).
    pub status: u16,
}

/// Makes the JSON Schema of a body type in a generator (its `$ref`).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// A request or response body: its media type and, for JSON, its schema.
#[derive(Clone, Debug)]
pub struct Body {
    /// Media type, e.g. `application/json`.
    pub content_type: &'static str,
    /// The schema of a JSON body; `None`: an opaque string of that media type.
    pub schema: Option<SchemaFn>,
}

impl Body {
    fn json<T: JsonSchema>() -> Body {
        Body {
            content_type: "application/json",
            schema: Some(SchemaGenerator::subschema_for::<T>),
        }
    }
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
            query: None,
            request: None,
            response: None,
            status: 200,
        });
        self
    }

    fn last(&mut self) -> &mut Operation {
        match self.operations.last_mut() {
            Some(op) => op,
            // Calling a body method before the first `add` is a bug in the route list.
            None => panic!("catalog: a body declared before any route"),
        }
    }

    /// The last added operation takes the query parameters `T` deserializes from.
    pub fn query<T: JsonSchema>(mut self) -> Self {
        self.last().query = Some(T::json_schema);
        self
    }

    /// The last added operation takes a body of this media type whose fields are `T`'s
    /// (a form, say).
    pub fn request_as<T: JsonSchema>(mut self, content_type: &'static str) -> Self {
        self.last().request = Some(Body {
            content_type,
            schema: Some(SchemaGenerator::subschema_for::<T>),
        });
        self
    }

    /// The last added operation answers `status` with no body.
    pub fn no_content(mut self) -> Self {
        let op = self.last();
        op.response = None;
        op.status = 204;
        self
    }

    /// The last added operation is a WebSocket upgrade: it answers 101, no body.
    pub fn upgrade(mut self) -> Self {
        let op = self.last();
        op.response = None;
        op.status = 101;
        self
    }

    /// The last added operation takes a JSON body of type `T`.
    pub fn request<T: JsonSchema>(mut self) -> Self {
        self.last().request = Some(Body::json::<T>());
        self
    }

    /// The last added operation takes a body of this (non-JSON) media type.
    pub fn request_body(mut self, content_type: &'static str) -> Self {
        self.last().request = Some(Body {
            content_type,
            schema: None,
        });
        self
    }

    /// The last added operation answers 200 with a JSON body of type `T`.
    pub fn response<T: JsonSchema>(mut self) -> Self {
        self.last().response = Some(Body::json::<T>());
        self
    }

    /// The last added operation answers `status` with a JSON body of type `T`.
    pub fn response_status<T: JsonSchema>(mut self, status: axum::http::StatusCode) -> Self {
        let op = self.last();
        op.response = Some(Body::json::<T>());
        op.status = status.as_u16();
        self
    }

    /// The last added operation answers 200 with a body of this (non-JSON) media type.
    pub fn produces(mut self, content_type: &'static str) -> Self {
        self.last().response = Some(Body {
            content_type,
            schema: None,
        });
        self
    }

    /// The router, and the operations it serves (the two documentation routes
    /// included).
    pub fn finish(self) -> (Router<Arc<ApiState>>, Arc<Vec<Operation>>) {
        let mut operations = self.operations;
        for (path, summary, content_type) in [
            (
                "/api/openapi.json",
                "this API as an OpenAPI 3 document",
                "application/json",
            ),
            ("/api/docs", "this API as a readable page", "text/html"),
        ] {
            operations.push(Operation {
                method: Method::GET,
                path,
                access: Access::Open,
                tag: "meta",
                summary,
                query: None,
                request: None,
                response: Some(Body {
                    content_type,
                    schema: None,
                }),
                status: 200,
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

/// A schema made in `generator`, with the OpenAPI 3.0 transforms applied (the
/// definitions get them when taken; an inline schema, an array of a type say, needs
/// them too).
fn made(make: SchemaFn, generator: &mut SchemaGenerator) -> Value {
    let mut schema = make(generator);
    for t in generator.transforms_mut() {
        t.transform(&mut schema);
    }
    schema.to_value()
}

/// The query parameters of an object schema, one per property.
fn query_params(make: SchemaFn, generator: &mut SchemaGenerator) -> Vec<Value> {
    let schema = made(make, generator);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object() else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let mut p = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": prop,
            });
            if let Some(d) = prop.get("description") {
                p["description"] = d.clone();
            }
            p
        })
        .collect()
}

/// The `content` of a body, its schema made in `generator`.
fn content(body: &Body, generator: &mut SchemaGenerator) -> Value {
    let schema = match body.schema {
        Some(make) => made(make, generator),
        None if body.content_type.starts_with("text/") => json!({"type": "string"}),
        None => json!({"type": "string", "format": "binary"}),
    };
    json!({ body.content_type: { "schema": schema } })
}

/// OpenAPI 3.0 has no boolean schemas (JSON Schema's `true`, "anything", which
/// `serde_json::Value` derives to); where a schema is expected, `true` becomes `{}`.
fn no_bool_schemas(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match key.as_str() {
                    "items" | "not" if child.is_boolean() => *child = json!({}),
                    "properties" => {
                        if let Some(props) = child.as_object_mut() {
                            for p in props.values_mut() {
                                if p.is_boolean() {
                                    *p = json!({});
                                }
                            }
                        }
                    }
                    "allOf" | "anyOf" | "oneOf" => {
                        if let Some(list) = child.as_array_mut() {
                            for s in list.iter_mut().filter(|s| s.is_boolean()) {
                                *s = json!({});
                            }
                        }
                    }
                    _ => {}
                }
                no_bool_schemas(child);
            }
        }
        Value::Array(list) => list.iter_mut().for_each(no_bool_schemas),
        _ => {}
    }
}

/// The error body every failure has.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct ErrorBody {
    /// Always `error`.
    status: String,
    /// The error code, e.g. `invalid_argument`.
    #[schemars(rename = "errorType")]
    error_type: String,
    /// What went wrong, naming the parameter or thing.
    error: String,
}

/// The OpenAPI 3.0 document of `operations`.
pub fn openapi(operations: &[Operation]) -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::openapi3());
    let error = content(&Body::json::<ErrorBody>(), &mut generator);
    let mut paths = Map::new();
    for op in operations {
        let mut success = json!({"description": "success"});
        if let Some(body) = &op.response {
            success["content"] = content(body, &mut generator);
        }
        let mut item = json!({
            "operationId": operation_id(op),
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": path_params(op.path).iter().map(|p| json!({
                "name": p, "in": "path", "required": true, "schema": {"type": "string"}
            })).collect::<Vec<_>>(),
            "responses": {
                op.status.to_string(): success,
                "400": {"description": "a parameter or the body is invalid; the message names it", "content": error.clone()},
            },
        });
        if let Some(make) = op.query
            && let Some(params) = item["parameters"].as_array_mut()
        {
            params.extend(query_params(make, &mut generator));
        }
        if let Some(body) = &op.request {
            item["requestBody"] =
                json!({"required": true, "content": content(body, &mut generator)});
        }
        match op.access {
            Access::Open => {
                item["security"] = json!([]);
            }
            Access::Scope(scope) => {
                item["security"] = json!([{"bearer": []}]);
                item["x-vantage-scope"] = json!(scope.as_str());
                item["responses"]["401"] = json!({"description": "no, malformed, unknown, expired or revoked credential", "content": error.clone()});
                item["responses"]["403"] = json!({"description": format!("the credential lacks the {} scope", scope.as_str()), "content": error.clone()});
                item["responses"]["429"] = json!({"description": "rate limited; see Retry-After", "content": error.clone()});
            }
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method.as_str().to_ascii_lowercase()] = item;
    }
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Vantage collector API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Logs, metrics (the Prometheus API), traces (native and Jaeger), alerting (rules and Alertmanager's API v2), people, keys and agents. Every operation with a scope needs `Authorization: Bearer <API key or access token>`; the credential decides the tenant.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": generator.take_definitions(true),
        },
        "security": [{"bearer": []}],
        "paths": paths,
    });
    no_bool_schemas(&mut doc);
    doc
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

    fn op(method: Method, path: &'static str, access: Access, summary: &'static str) -> Operation {
        Operation {
            method,
            path,
            access,
            tag: "people",
            summary,
            query: None,
            request: None,
            response: None,
            status: 200,
        }
    }

    #[test]
    fn the_document_has_every_operation_with_its_security() {
        let ops = vec![
            op(Method::GET, "/healthz", Access::Open, "alive"),
            op(
                Method::GET,
                "/api/v1/users/{user_id}",
                Access::Scope(Scope::Admin),
                "one user",
            ),
            op(
                Method::DELETE,
                "/api/v1/users/{user_id}",
                Access::Scope(Scope::Admin),
                "delete",
            ),
        ];
        let doc = openapi(&ops);
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        let get = &doc["paths"]["/api/v1/users/{user_id}"]["get"];
        assert_eq!(get["x-vantage-scope"], "admin");
        assert_eq!(get["parameters"][0]["name"], "user_id");
        assert!(doc["paths"]["/api/v1/users/{user_id}"]["delete"].is_object());
        assert_eq!(get["operationId"], "get_v1_users_user_id");
    }

    /// A request type as a handler would have it.
    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Thing {
        /// Its name.
        name: String,
        #[serde(default)]
        tags: Vec<Inner>,
        limit: Option<u32>,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        key: String,
    }

    #[test]
    fn bodies_become_refs_into_components_schemas() {
        let mut post = op(Method::POST, "/things", Access::Scope(Scope::Edit), "make");
        post.request = Some(Body::json::<Thing>());
        post.response = Some(Body::json::<Vec<Inner>>());
        post.status = 201;
        let mut put = op(Method::PUT, "/config", Access::Scope(Scope::Admin), "set");
        put.request = Some(Body {
            content_type: "application/yaml",
            schema: None,
        });
        let doc = openapi(&[post, put]);
        let post = &doc["paths"]["/things"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Thing"
        );
        let list = &post["responses"]["201"]["content"]["application/json"]["schema"];
        assert_eq!(list["type"], "array");
        assert_eq!(list["items"]["$ref"], "#/components/schemas/Inner");
        let thing = &doc["components"]["schemas"]["Thing"];
        assert_eq!(thing["required"], json!(["name"]));
        assert_eq!(thing["properties"]["name"]["description"], "Its name.");
        // OpenAPI 3.0 has no type arrays: an Option is `nullable`.
        assert_eq!(thing["properties"]["limit"]["nullable"], true);
        assert!(doc["components"]["schemas"]["Inner"].is_object());
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        assert_eq!(
            doc["paths"]["/config"]["put"]["requestBody"]["content"]["application/yaml"]["schema"]
                ["format"],
            "binary"
        );
        // Every $ref resolves.
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling $ref {name}"
            );
        }
    }
}
