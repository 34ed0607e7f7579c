//! The OpAMP server from the outside, with clients written here from the specification:
//! plain HTTP and WebSocket agents register, receive the documents their labels select,
//! get changes pushed, catch up after being away, fall into a stable roll-out; and
//! hostile input — malformed and oversized messages, an instance uid presented with
//! another credential, wrong scopes and tenants — is refused without harm.

mod common;
mod opamp_support;

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use prost::Message as _;
use vantage_proto::opamp::{
    AgentToServer, AgentToServerFlags, RemoteConfigStatuses, ServerErrorResponseType,
    ServerToAgentFlags,
};

use common::*;
use opamp_support::*;

const BASE_V1: &str = "logs:\n  files: [/var/log/app.log]\n";
const BASE_V2: &str = "logs:\n  files: [/var/log/app.log, /var/log/other.log]\n";
const WEB: &str = "metrics:\n  interval_s: 10\n";

#[tokio::test]
async fn http_agent_registers_gets_its_documents_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    create_config(&c, c.token(), "base", "env=prod", BASE_V1).await;
    create_config(&c, c.token(), "web", "env=prod,role=web", WEB).await;
    create_config(&c, c.token(), "dev-only", "env=dev", "x: 1\n").await;
    let ingest = new_key(&c, &["ingest"], None).await;

    let mut agent = SimAgent::new(
        101,
        &[("env", "prod"), ("role", "web"), ("host.name", "h1")],
    );
    // A heartbeat from an unknown agent: the server asks for the full state.
    let (status, reply) = http_send(&c, &ingest, &agent.heartbeat()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(reply.error_response.is_none(), "{reply:?}");
    assert_ne!(reply.flags & ServerToAgentFlags::ReportFullState as u64, 0);
    assert_ne!(
        reply.capabilities & 0b11,
        0,
        "accepts status, offers config"
    );
    assert_eq!(reply.instance_uid, agent.uid);

    let (_, reply) = http_send(&c, &ingest, &agent.full_state(None)).await;
    assert_eq!(reply.flags & ServerToAgentFlags::ReportFullState as u64, 0);
    let got = bodies(&reply).expect("a remote config");
    let want: BTreeMap<String, String> = [("base", BASE_V1), ("web", WEB)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want, "the two documents env=prod,role=web selects");
    let hash = reply.remote_config.unwrap().config_hash;
    assert_eq!(hash, expected_hash(&[("base", BASE_V1), ("web", WEB)]));

    // Not applied yet: the fleet says so.
    let entry = fleet_entry(&c, c.token(), &agent.uid_hex())
        .await
        .expect("listed");
    assert_eq!(entry["desired_config_hash"], hex::encode(&hash));
    assert_eq!(entry["config_status"], "applying");
    assert_eq!(entry["enrolled"], false);
    assert_eq!(entry["hostname"], "h1");
    assert_eq!(entry["desired_config_versions"]["base"], 1);

    let (_, reply) = http_send(
        &c,
        &ingest,
        &agent.status(&hash, RemoteConfigStatuses::Applied, ""),
    )
    .await;
    assert!(
        reply.remote_config.is_none(),
        "it has it: nothing to resend"
    );
    let entry = fleet_entry(&c, c.token(), &agent.uid_hex()).await.unwrap();
    assert_eq!(entry["config_status"], "applied");
    assert_eq!(entry["applied_config_hash"], hex::encode(&hash));
    assert_eq!(entry["connected"], true);
    assert_eq!(entry["healthy"], true);

    // A sequence gap asks for the full state again.
    agent.seq += 5;
    let (_, reply) = http_send(&c, &ingest, &agent.heartbeat()).await;
    assert_ne!(reply.flags & ServerToAgentFlags::ReportFullState as u64, 0);

    // A failure is reported with its error.
    let (_, _) = http_send(
        &c,
        &ingest,
        &agent.status(
            &hash,
            RemoteConfigStatuses::Failed,
            "unknown key logs.files",
        ),
    )
    .await;
    let entry = fleet_entry(&c, c.token(), &agent.uid_hex()).await.unwrap();
    assert_eq!(entry["config_status"], "failed");
    assert_eq!(entry["last_error"], "unknown key logs.files");

    // gzip bodies are accepted.
    let gz = {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&agent.heartbeat().encode_to_vec()).unwrap();
        enc.finish().unwrap()
    };
    let (status, reply) =
        decode_reply(http_raw(&c, &ingest, &[("content-encoding", "gzip")], gz).await);
    assert_eq!(status, StatusCode::OK);
    assert!(reply.error_response.is_none());

    // The state survives a restart.
    let (_, _) = http_send(
        &c,
        &ingest,
        &agent.status(&hash, RemoteConfigStatuses::Applied, ""),
    )
    .await;
    let token = c.token().to_string();
    let (exit, _) = c.terminate().await;
    assert!(exit.success());
    let c = Collector::start(dir.path());
    let entry = fleet_entry(&c, &token, &agent.uid_hex())
        .await
        .expect("still listed after a restart");
    assert_eq!(entry["applied_config_hash"], hex::encode(&hash));
    assert_eq!(entry["remote_config_status"], "applied");
}

#[tokio::test]
async fn websocket_agent_gets_changes_pushed_and_catches_up_after_being_away() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    create_config(&c, c.token(), "base", "", BASE_V1).await;
    let ingest = new_key(&c, &["ingest"], None).await;
    let mut agent = SimAgent::new(102, &[("env", "prod")]);
    let mut ws = WsConn::connect(&c, &ingest).await;
    let reply = ws.call(&agent.full_state(None)).await;
    assert_eq!(bodies(&reply).unwrap()["base"], BASE_V1);
    let v1_hash = reply.remote_config.unwrap().config_hash;
    let reply = ws
        .call(&agent.status(&v1_hash, RemoteConfigStatuses::Applied, ""))
        .await;
    assert!(reply.remote_config.is_none());

    // A new version is pushed without the agent asking.
    put_config(&c, c.token(), "base", BASE_V2, true).await;
    let push = ws.recv().await.expect("a push");
    assert_eq!(bodies(&push).unwrap()["base"], BASE_V2);
    let v2_hash = push.remote_config.unwrap().config_hash;
    assert_eq!(v2_hash, expected_hash(&[("base", BASE_V2)]));
    let reply = ws
        .call(&agent.status(&v2_hash, RemoteConfigStatuses::Applied, ""))
        .await;
    assert!(reply.remote_config.is_none());

    // Rollback pushes the old body again (same hash as version 1).
    let r = api(
        &c,
        c.token(),
        Method::POST,
        "/api/v1/configs/base/rollback",
        Some(serde_json::json!({"version": 1, "message": "too noisy"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["current_version"], 3);
    let push = ws.recv().await.expect("a push");
    assert_eq!(push.remote_config.unwrap().config_hash, v1_hash);
    let _ = ws
        .call(&agent.status(&v1_hash, RemoteConfigStatuses::Applied, ""))
        .await;

    // The agent goes away; a change happens; it comes back and catches up.
    ws.send(&agent.disconnect()).await;
    let _ = ws.recv().await;
    drop(ws);
    put_config(&c, c.token(), "base", BASE_V2, true).await;
    let entry = fleet_entry(&c, c.token(), &agent.uid_hex()).await.unwrap();
    assert_eq!(entry["config_status"], "applying", "{entry}");
    let mut ws = WsConn::connect(&c, &ingest).await;
    let reply = ws.call(&agent.full_state(Some(&v1_hash))).await;
    assert_eq!(bodies(&reply).unwrap()["base"], BASE_V2);

    // Deleting the document pushes an empty configuration.
    let r = api(&c, c.token(), Method::DELETE, "/api/v1/configs/base", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let push = ws.recv().await.expect("a push after delete");
    assert!(bodies(&push).unwrap().is_empty());
    assert_eq!(push.remote_config.unwrap().config_hash, expected_hash(&[]));
    assert!(metric(&c, "vantage_opamp_config_pushes_total").await >= 4.0);
}

#[tokio::test]
async fn half_rollout_reaches_some_of_ten_agents_and_grows_stably() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    create_config(&c, c.token(), "base", "env=prod", BASE_V1).await;
    put_config(&c, c.token(), "base", BASE_V2, false).await;
    let ingest = new_key(&c, &["ingest"], None).await;
    let mut agents: Vec<SimAgent> = (0..10)
        .map(|i| SimAgent::new(i, &[("env", "prod")]))
        .collect();
    let mut conns = Vec::new();
    for a in &mut agents {
        let mut ws = WsConn::connect(&c, &ingest).await;
        let reply = ws.call(&a.full_state(None)).await;
        assert_eq!(bodies(&reply).unwrap()["base"], BASE_V1, "v2 is not active");
        let hash = reply.remote_config.unwrap().config_hash;
        let _ = ws
            .call(&a.status(&hash, RemoteConfigStatuses::Applied, ""))
            .await;
        conns.push(ws);
    }
    let r = api(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/configs/base/rollout",
        Some(serde_json::json!({"version": 2, "percent": 50})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["rollout"]["percent"], 50);
    let v2_hash = expected_hash(&[("base", BASE_V2)]);
    let mut at_50 = Vec::new();
    for (a, ws) in agents.iter_mut().zip(&mut conns) {
        if vantage_storage::meta::in_rollout("base", &a.uid_hex(), 50) {
            // In the roll-out: version 2 is pushed without asking.
            let push = ws.recv().await.expect("a push");
            assert_eq!(bodies(&push).unwrap()["base"], BASE_V2);
            at_50.push(a.uid_hex());
        } else {
            // Out: a heartbeat's answer offers nothing new.
            let reply = ws.call(&a.heartbeat()).await;
            assert!(reply.remote_config.is_none(), "{reply:?}");
        }
    }
    assert!(
        (3..=7).contains(&at_50.len()),
        "a 50 % roll-out over ten agents gave {} of them the new version",
        at_50.len()
    );
    // The fleet view agrees with the stable hash for every agent.
    for a in &agents {
        let entry = fleet_entry(&c, c.token(), &a.uid_hex()).await.unwrap();
        let want = if at_50.contains(&a.uid_hex()) { 2 } else { 1 };
        assert_eq!(entry["desired_config_versions"]["base"], want, "{entry}");
        if want == 2 {
            assert_eq!(entry["desired_config_hash"], hex::encode(&v2_hash));
        }
    }
    // Growing to 90 % keeps everyone who was in.
    let r = api(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/configs/base/rollout",
        Some(serde_json::json!({"version": 2, "percent": 90})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for a in &agents {
        let entry = fleet_entry(&c, c.token(), &a.uid_hex()).await.unwrap();
        if at_50.contains(&a.uid_hex()) {
            assert_eq!(entry["desired_config_versions"]["base"], 2);
        }
    }
    // 100 % makes version 2 current for all.
    let r = api(
        &c,
        c.token(),
        Method::PUT,
        "/api/v1/configs/base/rollout",
        Some(serde_json::json!({"version": 2, "percent": 100})),
    )
    .await;
    assert_eq!(r.json()["current_version"], 2);
    assert!(r.json()["rollout"].is_null());
    for a in &agents {
        let entry = fleet_entry(&c, c.token(), &a.uid_hex()).await.unwrap();
        assert_eq!(entry["desired_config_versions"]["base"], 2);
    }
}

#[tokio::test]
async fn malformed_and_oversized_messages_are_refused_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    let ingest = new_key(&c, &["ingest"], None).await;

    // Not protobuf: 400 with an error response naming the problem.
    let (status, reply) =
        decode_reply(http_raw(&c, &ingest, &[], vec![0xff, 0xff, 0xff, 0x0f, 0x01]).await);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let err = reply.error_response.expect("an error response");
    assert_eq!(err.r#type, ServerErrorResponseType::BadRequest as i32);
    assert!(
        err.error_message.contains("AgentToServer"),
        "{}",
        err.error_message
    );

    // No instance uid: refused as a bad request, not a crash.
    let (status, reply) = http_send(&c, &ingest, &AgentToServer::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        reply
            .error_response
            .unwrap()
            .error_message
            .contains("instance_uid")
    );

    // Oversized: 413.
    let big = vec![0u8; 2 * 1024 * 1024];
    let r = http_raw(&c, &ingest, &[], big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A gzip bomb is cut at the limit too.
    let bomb = {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 8 * 1024 * 1024]).unwrap();
        enc.finish().unwrap()
    };
    let r = http_raw(&c, &ingest, &[("content-encoding", "gzip")], bomb).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = http_raw(
        &c,
        &ingest,
        &[("content-encoding", "gzip")],
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // WebSocket: a garbage frame gets an error response and the connection stays usable.
    let mut ws = WsConn::connect(&c, &ingest).await;
    ws.send_raw(vec![0, 0xff, 0xff, 0xff]).await;
    let reply = ws.recv().await.expect("an error response");
    assert!(reply.error_response.is_some());
    ws.send_raw(vec![7, 1, 2]).await;
    let reply = ws.recv().await.expect("an error response for a bad header");
    assert!(
        reply
            .error_response
            .unwrap()
            .error_message
            .contains("header")
    );
    let mut agent = SimAgent::new(103, &[]);
    let reply = ws.call(&agent.full_state(None)).await;
    assert!(reply.error_response.is_none());
    // An oversized frame closes the connection.
    let _ = ws.try_send_raw(vec![0u8; 2 * 1024 * 1024]).await;
    assert!(
        ws.recv().await.is_none(),
        "closed after an oversized message"
    );

    // Still serving; the errors were counted.
    let (status, _) = http_send(&c, &ingest, &agent.heartbeat()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metric(
            &c,
            "vantage_opamp_protocol_errors_total{reason=\"malformed\"}"
        )
        .await
            >= 2.0
    );
    assert!(
        metric(
            &c,
            "vantage_opamp_protocol_errors_total{reason=\"oversized\"}"
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn an_instance_uid_belongs_to_the_credential_that_first_used_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    create_config(&c, c.token(), "base", "", BASE_V1).await;
    let first = new_key(&c, &["ingest"], None).await;
    let second = new_key(&c, &["ingest"], None).await;
    let mut agent = SimAgent::new(104, &[]);
    let (_, reply) = http_send(&c, &first, &agent.full_state(None)).await;
    assert!(reply.remote_config.is_some());
    // Another credential presenting the same uid: refused and counted.
    let (_, reply) = http_send(&c, &second, &agent.full_state(None)).await;
    let err = reply.error_response.expect("refused");
    assert_eq!(err.r#type, ServerErrorResponseType::BadRequest as i32);
    assert!(
        err.error_message.contains("another credential"),
        "{}",
        err.error_message
    );
    assert!(reply.remote_config.is_none());
    let mut ws = WsConn::connect(&c, &second).await;
    let reply = ws.call(&agent.full_state(None)).await;
    assert!(reply.error_response.is_some());
    assert!(
        metric(
            &c,
            "vantage_opamp_protocol_errors_total{reason=\"uid_conflict\"}"
        )
        .await
            >= 2.0
    );
    // The owner still works.
    let (_, reply) = http_send(&c, &first, &agent.heartbeat()).await;
    assert!(reply.error_response.is_none());

    // RequestInstanceUid: the server assigns a fresh uid.
    let mut msg = SimAgent::new(105, &[]).full_state(None);
    msg.flags = AgentToServerFlags::RequestInstanceUid as u64;
    let (_, reply) = http_send(&c, &first, &msg).await;
    let new_uid = reply
        .agent_identification
        .expect("a new uid")
        .new_instance_uid;
    assert_eq!(new_uid.len(), 16);
    assert_ne!(new_uid, msg.instance_uid);
    assert!(
        fleet_entry(&c, c.token(), &hex::encode(&new_uid))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn scopes_and_tenants_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    create_config(&c, c.token(), "secret-layout", "", BASE_V1).await;
    let query = new_key(&c, &["query"], None).await;
    let ingest = new_key(&c, &["ingest"], None).await;
    // No credential, wrong scope: refused on both transports.
    let r = c
        .request_anonymous(
            Method::POST,
            &format!("http://{}/v1/opamp", c.addrs.api),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (status, _) = {
        let r = http_raw(
            &c,
            &query,
            &[],
            SimAgent::new(106, &[]).full_state(None).encode_to_vec(),
        )
        .await;
        (r.status, r.text())
    };
    assert_eq!(status, StatusCode::FORBIDDEN);
    let err = WsConn::try_connect(&c, &query)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    // An ingest key cannot edit configs; a query key can read but not write.
    let r = api(
        &c,
        &ingest,
        Method::POST,
        "/api/v1/configs",
        Some(serde_json::json!({"name": "x", "body": "a: 1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = api(&c, &query, Method::GET, "/api/v1/configs", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api(
        &c,
        &query,
        Method::PUT,
        "/api/v1/configs/secret-layout",
        Some(serde_json::json!({"body": "a: 1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Tenant B sees none of tenant A's documents, and its agents get none of them.
    new_tenant(&c, "tenant-b").await;
    let b_edit = new_key(&c, &["edit"], Some("tenant-b")).await;
    let b_ingest = new_key(&c, &["ingest"], Some("tenant-b")).await;
    let r = api(&c, &b_edit, Method::GET, "/api/v1/configs", None).await;
    assert_eq!(r.json()["configs"], serde_json::json!([]));
    let r = api(
        &c,
        &b_edit,
        Method::GET,
        "/api/v1/configs/secret-layout",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api(
        &c,
        &b_edit,
        Method::GET,
        "/api/v1/configs/secret-layout/versions/1",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api(
        &c,
        &b_edit,
        Method::GET,
        "/api/v1/configs?tenant=default",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut b_agent = SimAgent::new(107, &[]);
    let (_, reply) = http_send(&c, &b_ingest, &b_agent.full_state(None)).await;
    assert!(
        bodies(&reply).unwrap().is_empty(),
        "tenant B's agent gets nothing of A"
    );
    // Nor does A's fleet list B's agent, nor B's list A's.
    assert!(
        fleet_entry(&c, c.token(), &b_agent.uid_hex())
            .await
            .is_none()
    );
    assert!(fleet_entry(&c, &b_edit, &b_agent.uid_hex()).await.is_some());
    // B may use the same document name independently.
    create_config(&c, &b_edit, "secret-layout", "", "b: 2\n").await;
    let (_, reply) = http_send(&c, &b_ingest, &b_agent.heartbeat()).await;
    assert_eq!(bodies(&reply).unwrap()["secret-layout"], "b: 2\n");
}

/// Sets secret `name` of the key's tenant; panics unless 200.
async fn set_secret(c: &Collector, token: &str, name: &str, value: &str) {
    let r = api(
        c,
        token,
        Method::PUT,
        &format!("/api/v1/secrets/{name}"),
        Some(serde_json::json!({ "value": value })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "set {name}: {}", r.text());
}

#[tokio::test]
async fn a_changed_secret_is_pushed_to_the_agents_whose_config_references_it() {
    const DB: &str = "db:\n  password: ${secret:db_pass}\n";
    let with = |v: &str| DB.replace("${secret:db_pass}", v);
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path());
    set_secret(&c, c.token(), "db_pass", "one").await;
    create_config(&c, c.token(), "db", "role=db", DB).await;
    create_config(&c, c.token(), "web", "role=web", WEB).await;
    let ingest = new_key(&c, &["ingest"], None).await;
    // Tenant B has a secret of the same name and a document referencing it.
    new_tenant(&c, "tenant-b").await;
    let b_edit = new_key(&c, &["edit"], Some("tenant-b")).await;
    let b_ingest = new_key(&c, &["ingest"], Some("tenant-b")).await;
    set_secret(&c, &b_edit, "db_pass", "b-value").await;
    create_config(&c, &b_edit, "db", "", DB).await;

    // Three agents hold WebSockets and run what they were given.
    let mut db_agent = SimAgent::new(120, &[("role", "db")]);
    let mut web_agent = SimAgent::new(121, &[("role", "web")]);
    let mut b_agent = SimAgent::new(122, &[("role", "db")]);
    let mut db_ws = WsConn::connect(&c, &ingest).await;
    let mut web_ws = WsConn::connect(&c, &ingest).await;
    let mut b_ws = WsConn::connect(&c, &b_ingest).await;
    for (agent, ws, want) in [
        (&mut db_agent, &mut db_ws, ("db", with("one"))),
        (&mut web_agent, &mut web_ws, ("web", WEB.to_string())),
        (&mut b_agent, &mut b_ws, ("db", with("b-value"))),
    ] {
        let reply = ws.call(&agent.full_state(None)).await;
        assert_eq!(bodies(&reply).unwrap()[want.0], want.1);
        let hash = reply.remote_config.unwrap().config_hash;
        let reply = ws
            .call(&agent.status(&hash, RemoteConfigStatuses::Applied, ""))
            .await;
        assert!(reply.remote_config.is_none());
    }

    // A new value: pushed at once to the agent whose body references it, without it
    // sending anything.
    set_secret(&c, c.token(), "db_pass", "two").await;
    let push = db_ws.recv().await.expect("a push after the secret changed");
    assert_eq!(bodies(&push).unwrap()["db"], with("two"));
    let hash = push.remote_config.unwrap().config_hash;
    assert_eq!(hash, expected_hash(&[("db", &with("two"))]));
    let entry = fleet_entry(&c, c.token(), &db_agent.uid_hex())
        .await
        .unwrap();
    assert_eq!(entry["desired_config_hash"], hex::encode(&hash));
    assert_eq!(entry["config_status"], "applying", "{entry}");
    let reply = db_ws
        .call(&db_agent.status(&hash, RemoteConfigStatuses::Applied, ""))
        .await;
    assert!(reply.remote_config.is_none());

    // The push happens before the API answers, so anything pushed to the others would
    // be queued ahead of the answer to their heartbeat: the first message they get is
    // that answer, with nothing to apply.
    for (agent, ws) in [(&mut web_agent, &mut web_ws), (&mut b_agent, &mut b_ws)] {
        let reply = ws.call(&agent.heartbeat()).await;
        assert!(reply.remote_config.is_none(), "{reply:?}");
    }
    // Tenant B's own change reaches B's agent and not A's.
    set_secret(&c, &b_edit, "db_pass", "b-two").await;
    let push = b_ws.recv().await.expect("a push to tenant B's agent");
    assert_eq!(bodies(&push).unwrap()["db"], with("b-two"));
    let reply = db_ws.call(&db_agent.heartbeat()).await;
    assert!(reply.remote_config.is_none(), "{reply:?}");

    // Setting the same value again changes nothing visible: nothing is pushed.
    set_secret(&c, c.token(), "db_pass", "two").await;
    let reply = db_ws.call(&db_agent.heartbeat()).await;
    assert!(reply.remote_config.is_none(), "{reply:?}");

    // Deleted while referenced: nothing to send (the body cannot be expanded), the
    // agent keeps what it runs; set again, the new value is pushed.
    let r = api(
        &c,
        c.token(),
        Method::DELETE,
        "/api/v1/secrets/db_pass",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let reply = db_ws.call(&db_agent.heartbeat()).await;
    assert!(reply.remote_config.is_none(), "{reply:?}");
    assert!(
        metric(
            &c,
            "vantage_opamp_protocol_errors_total{reason=\"expand_failed\"}"
        )
        .await
            >= 1.0
    );
    set_secret(&c, c.token(), "db_pass", "three").await;
    let push = db_ws
        .recv()
        .await
        .expect("a push after the secret came back");
    assert_eq!(bodies(&push).unwrap()["db"], with("three"));
    // The secret's value never reached the log.
    let log = c.log();
    for value in ["one", "two", "three", "b-value", "b-two"] {
        let needle = format!("password: {value}");
        assert!(!log.contains(&needle), "{needle} in the log");
    }
}

#[tokio::test]
async fn a_config_holding_a_secret_is_withheld_from_agents_without_tls_when_refused() {
    const DB: &str = "db:\n  password: ${secret:db_pass}\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collector.yaml");
    let listen =
        "listen:\n  otlp_grpc: 127.0.0.1:0\n  otlp_http: 127.0.0.1:0\n  api: 127.0.0.1:0\n";
    std::fs::write(&file, format!("{listen}secrets:\n  without_tls: refuse\n")).unwrap();
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    set_secret(&c, c.token(), "db_pass", "hunter2").await;
    create_config(&c, c.token(), "db", "role=db", DB).await;
    create_config(&c, c.token(), "web", "role=web", WEB).await;
    let ingest = new_key(&c, &["ingest"], None).await;

    // Plain HTTP, no TLS: the body holding the secret is not sent, and the fleet view
    // says why; a body without secrets still is.
    let mut db_agent = SimAgent::new(130, &[("role", "db")]);
    let mut web_agent = SimAgent::new(131, &[("role", "web")]);
    let (status, reply) = http_send(&c, &ingest, &db_agent.full_state(None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(reply.error_response.is_none(), "{reply:?}");
    assert!(reply.remote_config.is_none(), "withheld: {reply:?}");
    let entry = fleet_entry(&c, c.token(), &db_agent.uid_hex())
        .await
        .unwrap();
    assert_eq!(entry["config_status"], "failed");
    let error = entry["last_error"].as_str().unwrap();
    assert!(error.contains("no TLS") && error.contains("db"), "{error}");
    assert!(!error.contains("hunter2"));
    let (_, reply) = http_send(&c, &ingest, &web_agent.full_state(None)).await;
    assert_eq!(bodies(&reply).unwrap()["web"], WEB);
    let (_, reply) = http_send(&c, &ingest, &db_agent.heartbeat()).await;
    assert!(reply.remote_config.is_none(), "still withheld");

    // The default (loopback peers may have it), taken live on SIGHUP: the next poll
    // gets the body with the value, and the reason is gone once it is applied.
    std::fs::write(
        &file,
        format!("{listen}secrets:\n  without_tls: loopback\n"),
    )
    .unwrap();
    c.signal("HUP");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let reply = loop {
        let (_, reply) = http_send(&c, &ingest, &db_agent.heartbeat()).await;
        if reply.remote_config.is_some() {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never sent after the reload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        bodies(&reply).unwrap()["db"],
        DB.replace("${secret:db_pass}", "hunter2")
    );
    let hash = reply.remote_config.unwrap().config_hash;
    http_send(
        &c,
        &ingest,
        &db_agent.status(&hash, RemoteConfigStatuses::Applied, ""),
    )
    .await;
    let entry = fleet_entry(&c, c.token(), &db_agent.uid_hex())
        .await
        .unwrap();
    assert_eq!(entry["config_status"], "applied");
    assert!(entry["last_error"].is_null(), "{entry}");
    assert!(!c.log().contains("hunter2"), "the value is never logged");

    // Restarted under `refuse`: the agent is restored from the store, but how it
    // connects is unknown until it talks, so a change pushed before then does not mark
    // it withheld; its first plain-HTTP poll does.
    std::fs::write(&file, format!("{listen}secrets:\n  without_tls: refuse\n")).unwrap();
    let token = c.token().to_string();
    let (exit, _) = c.terminate().await;
    assert!(exit.success());
    let c = Collector::builder()
        .config_file(&file)
        .start(&dir.path().join("data"));
    set_secret(&c, &token, "db_pass", "hunter3").await;
    let entry = fleet_entry(&c, &token, &db_agent.uid_hex()).await.unwrap();
    assert_eq!(entry["config_status"], "applying", "{entry}");
    assert!(entry["last_error"].is_null(), "{entry}");
    let (_, reply) = http_send(&c, &ingest, &db_agent.heartbeat()).await;
    assert!(reply.remote_config.is_none(), "withheld again: {reply:?}");
    let entry = fleet_entry(&c, &token, &db_agent.uid_hex()).await.unwrap();
    assert_eq!(entry["config_status"], "failed", "{entry}");
    assert!(entry["last_error"].as_str().unwrap().contains("no TLS"));
    assert!(!c.log().contains("hunter3"), "the value is never logged");
}
