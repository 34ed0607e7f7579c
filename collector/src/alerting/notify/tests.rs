//! The dispatcher on paused time: group_wait, group_interval, repeat_interval,
//! deduplication, resolution, silences, inhibition, routing and the notification log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::AmConfig;
use super::deliver::{Deliverer, RetryPolicy, Tapped};
use super::dispatch::{Clock, Dispatcher, LogEntry, match_routes, needs_update};
use super::silence::{ApiMatcher, Silence};
use super::{Shared, system_time};
use crate::alerting::{Alert, AlertBatch};
use crate::telemetry::Telemetry;

const CONFIG: &str = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
  routes:
  - matchers: [team="db"]
    receiver: db
    continue: true
  - matchers: [team=~"db|web"]
    receiver: web
receivers:
- name: hook
  webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
- name: db
  webhook_configs: [{url: "http://127.0.0.1:9/db", send_resolved: false}]
- name: web
  webhook_configs: [{url: "http://127.0.0.1:9/web"}]
inhibit_rules:
- source_matchers: [severity="critical"]
  target_matchers: [severity="warning"]
  equal: [alertname]
"#;

struct Harness {
    alerts: mpsc::Sender<AlertBatch>,
    tapped: mpsc::Receiver<Tapped>,
    shared: Arc<Shared>,
    clock: Clock,
    _commands: mpsc::Sender<super::dispatch::Command>,
    _dir: Option<tempfile::TempDir>,
}

fn shared(yaml: &str) -> Arc<Shared> {
    let mut configs = HashMap::new();
    configs.insert(
        "t".to_string(),
        Arc::new(AmConfig::parse(yaml, None).unwrap()),
    );
    Arc::new(Shared {
        configs: RwLock::new(configs),
        empty: Arc::new(AmConfig::empty()),
        silences: RwLock::new(HashMap::new()),
        subscriptions: RwLock::new(HashMap::new()),
        external_url: RwLock::new("http://vantage".into()),
    })
}

fn start(
    yaml: &str,
    store: Option<(tempfile::TempDir, Arc<vantage_storage::meta::MetaStore>)>,
) -> Harness {
    let shared = shared(yaml);
    let (tap_tx, tapped) = mpsc::channel(1024);
    let (dir, store) = match store {
        Some((d, s)) => (Some(d), Some(s)),
        None => (None, None),
    };
    let deliverer = Deliverer::new(
        store.clone(),
        Arc::new(Telemetry::new()),
        RetryPolicy::default(),
    )
    .with_tap(tap_tx);
    let dispatcher = Dispatcher::new(shared.clone(), store, deliverer);
    let clock = Clock::new();
    let (alerts, alerts_rx) = mpsc::channel(16);
    let (commands, commands_rx) = mpsc::channel(16);
    tokio::spawn(dispatcher.run(alerts_rx, commands_rx, CancellationToken::new()));
    Harness {
        alerts,
        tapped,
        shared,
        clock,
        _commands: commands,
        _dir: dir,
    }
}

fn alert(clock: &Clock, labels: &[(&str, &str)], resolved: bool) -> Alert {
    let now = clock.now_ms();
    Alert {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
        starts_at_ms: if resolved { now - 120_000 } else { now },
        ends_at_ms: if resolved {
            now - 1
        } else {
            now + 24 * 3_600_000
        },
        generator_url: String::new(),
    }
}

impl Harness {
    async fn send(&self, alerts: Vec<Alert>) {
        self.alerts
            .send(AlertBatch {
                tenant: "t".into(),
                alerts,
            })
            .await
            .unwrap();
        // Let the dispatcher take the batch before time moves.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }

    async fn advance(&self, d: Duration) {
        tokio::time::sleep(d).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn drain(&mut self) -> Vec<Tapped> {
        let mut out = Vec::new();
        while let Ok(t) = self.tapped.try_recv() {
            out.push(t);
        }
        out
    }
}

fn names(data: &super::payload::Data) -> Vec<(String, bool)> {
    data.alerts
        .iter()
        .map(|a| {
            (
                a.alert.labels.get("instance").cloned().unwrap_or_default(),
                a.resolved,
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn group_wait_then_group_interval_batch_alerts() {
    let mut h = start(CONFIG, None);
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "1")],
        false,
    )])
    .await;
    h.advance(Duration::from_secs(29)).await;
    assert!(h.drain().is_empty(), "nothing before group_wait");
    h.advance(Duration::from_secs(2)).await;
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].data.group_key, "{}:{alertname=\"A\"}");
    assert_eq!(names(&sent[0].data), vec![("1".into(), false)]);

    // Two more alerts of the same group: batched into the next group_interval.
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "2")],
        false,
    )])
    .await;
    h.advance(Duration::from_secs(60)).await;
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "3")],
        false,
    )])
    .await;
    assert!(h.drain().is_empty(), "group_interval has not passed");
    h.advance(Duration::from_secs(4 * 60)).await;
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "one notification for both new alerts");
    assert_eq!(
        names(&sent[0].data),
        vec![
            ("1".into(), false),
            ("2".into(), false),
            ("3".into(), false)
        ]
    );

    // Another group is independent.
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "B"), ("instance", "1")],
        false,
    )])
    .await;
    h.advance(Duration::from_secs(31)).await;
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].data.group_key, "{}:{alertname=\"B\"}");
}

#[tokio::test(start_paused = true)]
async fn unchanged_groups_repeat_only_after_repeat_interval() {
    let mut h = start(CONFIG, None);
    let a = alert(&h.clock, &[("alertname", "A"), ("instance", "1")], false);
    h.send(vec![a.clone()]).await;
    h.advance(Duration::from_secs(31)).await;
    assert_eq!(h.drain().len(), 1);
    // Resends of the same alert every minute change nothing.
    for _ in 0..50 {
        h.send(vec![a.clone()]).await;
        h.advance(Duration::from_secs(60)).await;
        assert!(h.drain().is_empty(), "no repeat before repeat_interval");
    }
    // 1h after the first notification, at the next group_interval tick: a repeat.
    h.send(vec![a.clone()]).await;
    h.advance(Duration::from_secs(15 * 60)).await;
    let sent = h.drain();
    assert_eq!(sent.len(), 1, "repeated after repeat_interval");
    assert_eq!(names(&sent[0].data), vec![("1".into(), false)]);
}

#[tokio::test(start_paused = true)]
async fn resolution_is_notified_then_the_group_ends() {
    let mut h = start(CONFIG, None);
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "1")],
        false,
    )])
    .await;
    h.advance(Duration::from_secs(31)).await;
    assert_eq!(h.drain().len(), 1);
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "1")],
        true,
    )])
    .await;
    h.advance(Duration::from_secs(5 * 60)).await;
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].data.status, "resolved");
    assert_eq!(names(&sent[0].data), vec![("1".into(), true)]);
    h.advance(Duration::from_secs(3 * 3600)).await;
    assert!(h.drain().is_empty(), "a resolved group is not repeated");
}

#[tokio::test(start_paused = true)]
async fn an_alert_that_stops_being_resent_resolves_by_itself() {
    let mut h = start(CONFIG, None);
    let mut a = alert(&h.clock, &[("alertname", "A"), ("instance", "1")], false);
    a.ends_at_ms = h.clock.now_ms() + 60_000;
    h.send(vec![a]).await;
    h.advance(Duration::from_secs(31)).await;
    assert_eq!(h.drain()[0].data.status, "firing");
    h.advance(Duration::from_secs(5 * 60)).await;
    let sent = h.drain();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].data.status, "resolved");
}

#[tokio::test(start_paused = true)]
async fn silences_and_inhibition_suppress() {
    let mut h = start(CONFIG, None);
    let now = h.clock.now_ms();
    let api = vec![ApiMatcher {
        name: "alertname".into(),
        value: "Muted".into(),
        is_regex: false,
        is_equal: true,
    }];
    let s = Silence {
        id: "s1".into(),
        matchers: Silence::compile(&api).unwrap(),
        api_matchers: api,
        starts_at_ms: now - 1,
        ends_at_ms: now + 3_600_000,
        created_by: "t".into(),
        comment: "t".into(),
        updated_at_ms: now,
    };
    h.shared
        .silences
        .write()
        .unwrap()
        .insert("t".into(), vec![Arc::new(s)]);
    h.send(vec![
        alert(
            &h.clock,
            &[("alertname", "Muted"), ("instance", "1")],
            false,
        ),
        alert(
            &h.clock,
            &[
                ("alertname", "Disk"),
                ("severity", "critical"),
                ("instance", "1"),
            ],
            false,
        ),
        alert(
            &h.clock,
            &[
                ("alertname", "Disk"),
                ("severity", "warning"),
                ("instance", "2"),
            ],
            false,
        ),
        alert(
            &h.clock,
            &[
                ("alertname", "Cpu"),
                ("severity", "warning"),
                ("instance", "3"),
            ],
            false,
        ),
    ])
    .await;
    h.advance(Duration::from_secs(31)).await;
    let mut sent: Vec<(String, Vec<(String, bool)>)> = h
        .drain()
        .iter()
        .map(|t| (t.data.group_key.clone(), names(&t.data)))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        vec![
            (
                "{}:{alertname=\"Cpu\"}".to_string(),
                vec![("3".to_string(), false)]
            ),
            (
                "{}:{alertname=\"Disk\"}".to_string(),
                vec![("1".to_string(), false)]
            ),
        ],
        "the silenced group sends nothing; the warning is inhibited by the critical with the same alertname, not the Cpu one"
    );
}

#[tokio::test(start_paused = true)]
async fn continue_routes_to_several_receivers_and_send_resolved_false_holds_back() {
    let mut h = start(CONFIG, None);
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("team", "db")],
        false,
    )])
    .await;
    h.advance(Duration::from_secs(31)).await;
    let mut receivers: Vec<String> = h.drain().iter().map(|t| t.data.receiver.clone()).collect();
    receivers.sort();
    assert_eq!(receivers, vec!["db", "web"]);
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("team", "db")],
        true,
    )])
    .await;
    h.advance(Duration::from_secs(5 * 60)).await;
    let receivers: Vec<String> = h.drain().iter().map(|t| t.data.receiver.clone()).collect();
    assert_eq!(receivers, vec!["web"], "db has send_resolved: false");
}

#[tokio::test(start_paused = true)]
async fn the_notification_log_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(vantage_storage::meta::MetaStore::open(&dir.path().join("m.db")).unwrap());
    let a_labels = [("alertname", "A"), ("instance", "1")];
    {
        let mut h = start(CONFIG, Some((tempfile::tempdir().unwrap(), store.clone())));
        h.send(vec![alert(&h.clock, &a_labels, false)]).await;
        let first = h.tapped.recv().await.unwrap();
        assert_eq!(first.data.alerts.len(), 1);
        // Let the delivery log update finish.
        tokio::task::spawn_blocking(|| ()).await.unwrap();
    }
    let rows = store.list_notifications("t", None, None, 10).unwrap();
    assert_eq!(rows.len(), 1, "recorded");
    // A new dispatcher on the same store: the same firing alert is not sent again.
    let mut h = start(CONFIG, Some((dir, store.clone())));
    h.send(vec![alert(&h.clock, &a_labels, false)]).await;
    h.advance(Duration::from_secs(31)).await;
    assert!(
        h.drain().is_empty(),
        "deduplicated against the restored log"
    );
    // A new alert in the group is.
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "2")],
        false,
    )])
    .await;
    let next = h.tapped.recv().await.unwrap();
    assert_eq!(
        names(&next.data),
        vec![("1".into(), false), ("2".into(), false)]
    );
}

#[test]
fn needs_update_follows_alertmanager() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let hour = Duration::from_secs(3600);
    assert!(needs_update(None, &set(&["a"]), &set(&[]), true, hour, 0));
    assert!(
        !needs_update(None, &set(&[]), &set(&["a"]), true, hour, 0),
        "only resolved, never notified"
    );
    let e = LogEntry {
        firing: set(&["a", "b"]),
        resolved: set(&[]),
        at_ms: 1_000,
    };
    assert!(!needs_update(
        Some(&e),
        &set(&["a", "b"]),
        &set(&[]),
        true,
        hour,
        2_000
    ));
    assert!(
        needs_update(Some(&e), &set(&["a", "c"]), &set(&[]), true, hour, 2_000),
        "new firing"
    );
    assert!(
        needs_update(Some(&e), &set(&["a"]), &set(&["b"]), true, hour, 2_000),
        "b resolved"
    );
    assert!(
        !needs_update(Some(&e), &set(&["a"]), &set(&["b"]), false, hour, 2_000),
        "resolved not wanted"
    );
    assert!(
        needs_update(Some(&e), &set(&[]), &set(&["a", "b"]), false, hour, 2_000),
        "all resolved clears"
    );
    assert!(needs_update(
        Some(&e),
        &set(&["a", "b"]),
        &set(&[]),
        true,
        hour,
        1_000 + 3_600_001
    ));
    let empty = LogEntry::default();
    assert!(!needs_update(
        Some(&empty),
        &set(&[]),
        &set(&["x"]),
        true,
        hour,
        0
    ));
}

#[test]
fn routing_follows_continue_and_falls_back_to_the_parent() {
    let c = AmConfig::parse(CONFIG, None).unwrap();
    let l = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        match_routes(&c.route, &l(&[("team", "db")])),
        vec![vec![0], vec![1]]
    );
    assert_eq!(
        match_routes(&c.route, &l(&[("team", "web")])),
        vec![vec![1]]
    );
    assert_eq!(
        match_routes(&c.route, &l(&[("team", "x")])),
        vec![Vec::<usize>::new()]
    );
    let _ = system_time(0);
}

#[tokio::test(start_paused = true)]
async fn time_intervals_hold_routes_back() {
    let config = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  routes:
  - matchers: [when="never"]
    receiver: hook
    active_time_intervals: [long-ago]
  - matchers: [when="muted"]
    receiver: hook
    mute_time_intervals: [always]
time_intervals:
- name: long-ago
  time_intervals: [{years: ['2001']}]
- name: always
  time_intervals: [{years: ['1:9999']}]
receivers:
- name: hook
  webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
"#;
    let mut h = start(config, None);
    h.send(vec![
        alert(
            &h.clock,
            &[("alertname", "Never"), ("when", "never")],
            false,
        ),
        alert(
            &h.clock,
            &[("alertname", "Muted"), ("when", "muted")],
            false,
        ),
        alert(&h.clock, &[("alertname", "Sent")], false),
    ])
    .await;
    h.advance(Duration::from_secs(31)).await;
    let keys: Vec<String> = h.drain().iter().map(|t| t.data.group_key.clone()).collect();
    assert_eq!(keys, vec!["{}:{alertname=\"Sent\"}".to_string()]);
}

fn subscription(
    id: &str,
    matchers: &[&str],
    mute: vantage_storage::meta::Mute,
) -> Arc<super::subscribe::Subscription> {
    let row = vantage_storage::meta::SubscriptionRow {
        id: id.into(),
        tenant: "t".into(),
        user_id: "u".into(),
        username: "sam".into(),
        receiver: "hook".into(),
        matchers: matchers.iter().map(|m| m.to_string()).collect(),
        email: format!("{id}@example.com"),
        mute,
        created_at: std::time::UNIX_EPOCH,
        updated_at: std::time::UNIX_EPOCH,
    };
    super::subscribe::load(vec![row]).remove(0).1
}

#[tokio::test(start_paused = true)]
async fn subscribers_get_their_alerts_of_the_receivers_notifications_unless_muted() {
    let config = format!(
        "global:\n  smtp_from: v@example.com\n  smtp_smarthost: 127.0.0.1:25\n{}",
        CONFIG
    );
    let mut h = start(&config, None);
    h.shared.subscriptions.write().unwrap().insert(
        "t".into(),
        vec![
            subscription(
                "pages",
                &["severity=\"page\""],
                vantage_storage::meta::Mute::Off,
            ),
            subscription("all", &[], vantage_storage::meta::Mute::Off),
            subscription("muted", &[], vantage_storage::meta::Mute::Indefinitely),
        ],
    );
    h.send(vec![
        alert(
            &h.clock,
            &[("alertname", "A"), ("instance", "1"), ("severity", "page")],
            false,
        ),
        alert(
            &h.clock,
            &[("alertname", "A"), ("instance", "2"), ("severity", "info")],
            false,
        ),
        // Another receiver's alert: no subscriber of hook hears of it.
        alert(&h.clock, &[("alertname", "B"), ("team", "web")], false),
    ])
    .await;
    h.advance(Duration::from_secs(31)).await;
    let mut sent: Vec<(String, Vec<(String, bool)>)> = h
        .drain()
        .iter()
        .map(|t| (t.integration.clone(), names(&t.data)))
        .collect();
    sent.sort();
    let one = ("1".to_string(), false);
    let two = ("2".to_string(), false);
    assert_eq!(
        sent,
        vec![
            ("subscription/all".into(), vec![one.clone(), two.clone()]),
            ("subscription/pages".into(), vec![one.clone()]),
            ("webhook/0".into(), vec![(String::new(), false)]),
            ("webhook/0".into(), vec![one.clone(), two.clone()]),
        ]
    );
    // A new info alert: the receiver and "all" hear of it; "pages" has nothing new.
    h.send(vec![alert(
        &h.clock,
        &[("alertname", "A"), ("instance", "3"), ("severity", "info")],
        false,
    )])
    .await;
    h.advance(Duration::from_secs(5 * 60)).await;
    let mut got: Vec<String> = h.drain().iter().map(|t| t.integration.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        vec!["subscription/all".to_string(), "webhook/0".into()]
    );
}

#[tokio::test(start_paused = true)]
async fn the_groups_due_in_one_tick_are_recorded_together_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(vantage_storage::meta::MetaStore::open(&dir.path().join("m.db")).unwrap());
    let mut h = start(CONFIG, Some((dir, store.clone())));
    let alerts: Vec<Alert> = (0..50)
        .map(|i| alert(&h.clock, &[("alertname", &format!("G{i}"))], false))
        .collect();
    h.send(alerts).await;
    for _ in 0..50 {
        h.tapped.recv().await.unwrap();
    }
    h.advance(Duration::from_secs(1)).await;
    assert!(h.drain().is_empty(), "one notification per group");
    let rows = store.latest_notifications().unwrap();
    assert_eq!(rows.len(), 50, "each recorded once");
    // Recorded in one transaction: consecutive ids, one creation time.
    let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids.last().unwrap() - ids[0], 49);
    assert!(rows.iter().all(|r| r.created_at == rows[0].created_at));
}
