use std::sync::Arc;
use std::thread;

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::migrations::{MIGRATIONS, Migration};
use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn store() -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(&dir.path().join("meta.db")).unwrap();
    (dir, store)
}

/// The secret part of a key text: everything after `vtg_<key_id>_`.
fn secret_of(text: &str) -> &str {
    &text[KEY_PREFIX.len() + KEY_ID_LEN + 1..]
}

fn applied_migrations(path: &Path) -> Vec<(u32, String, i64)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
        .unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MetaStore>();
}

#[test]
fn migrations_are_numbered_from_one_without_gaps() {
    for (i, migration) in MIGRATIONS.iter().enumerate() {
        assert_eq!(migration.version as usize, i + 1, "{}", migration.name);
    }
    assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
}

#[test]
fn open_creates_parent_dir_wal_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/meta.db");
    let store = MetaStore::open(&path).unwrap();
    assert!(path.is_file());
    assert_eq!(store.path(), path);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let conn = store.conn();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: bool = conn
        .query_row("PRAGMA foreign_keys", [], |row| row.get(0))
        .unwrap();
    assert!(fk);
}

#[test]
fn reopen_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = MetaStore::open(&path).unwrap();
    store.create_tenant("acme").unwrap();
    let (key, text) = store
        .create_api_key("acme", "ci", &[Scope::Ingest], None)
        .unwrap();
    drop(store);
    let first = applied_migrations(&path);
    assert_eq!(first.len(), MIGRATIONS.len());

    let store = MetaStore::open(&path).unwrap();
    assert_eq!(applied_migrations(&path), first, "migrations ran again");
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.tenant_exists("acme").unwrap());
    assert_eq!(store.list_api_keys(None).unwrap(), vec![key.clone()]);
    assert_eq!(store.verify_api_key(&text, SystemTime::now()).unwrap(), key);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(MetaStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'from_the_future', 0)",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    let err = MetaStore::open(&path).unwrap_err();
    match &err {
        MetaError::NewerSchema {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*found, SCHEMA_VERSION + 1);
            assert_eq!(*supported, SCHEMA_VERSION);
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("newer"), "{message}");
}

#[test]
fn pending_migration_applies_once_on_reopen() {
    const ADD_AGENTS: Migration = Migration {
        version: 2,
        name: "agents",
        sql: "CREATE TABLE agents (
            agent_id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL REFERENCES tenants (name)
        ) STRICT;",
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = MetaStore::open_with(&path, &MIGRATIONS[..1]).unwrap();
    store.create_tenant("acme").unwrap();
    drop(store);

    let mut with_agents = MIGRATIONS[..1].to_vec();
    with_agents.push(ADD_AGENTS);
    let store = MetaStore::open_with(&path, &with_agents).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    store
        .conn()
        .execute("INSERT INTO agents VALUES ('a1', 'acme')", [])
        .unwrap();
    drop(store);
    let applied = applied_migrations(&path);
    assert_eq!(applied.iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(applied[1].1, "agents");

    // Reopening with the same list changes nothing; the older build refuses the file.
    drop(MetaStore::open_with(&path, &with_agents).unwrap());
    assert_eq!(applied_migrations(&path), applied);
    assert!(matches!(
        MetaStore::open_with(&path, &MIGRATIONS[..1]),
        Err(MetaError::NewerSchema {
            found: 2,
            supported: 1,
            ..
        })
    ));
}

#[test]
fn failing_migration_rolls_back_and_is_not_recorded() {
    const BROKEN: Migration = Migration {
        version: 2,
        name: "broken",
        sql: "CREATE TABLE half_done (x INTEGER) STRICT; INSERT INTO no_such_table VALUES (1);",
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let mut broken = MIGRATIONS[..1].to_vec();
    broken.push(BROKEN);
    let err = MetaStore::open_with(&path, &broken).unwrap_err();
    assert!(
        matches!(
            err,
            MetaError::Migration {
                version: 2,
                name: "broken",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no_such_table"), "{err}");

    let store = MetaStore::open_with(&path, &MIGRATIONS[..1]).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    let half_done: bool = store
        .conn()
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'half_done')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!half_done, "the failed migration's table survived");
}

#[test]
fn a_file_that_is_not_a_database_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = MetaStore::open(&path).unwrap_err();
    assert!(matches!(err, MetaError::Sqlite { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn bootstrap_runs_exactly_once_and_its_key_is_admin_of_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = MetaStore::open(&path).unwrap();
    let text = store.bootstrap().unwrap().expect("first start mints a key");
    assert!(text.starts_with(KEY_PREFIX));
    assert_eq!(store.bootstrap().unwrap(), None);
    drop(store);

    let store = MetaStore::open(&path).unwrap();
    assert_eq!(store.bootstrap().unwrap(), None);
    let key = store.verify_api_key(&text, SystemTime::now()).unwrap();
    assert_eq!(key.tenant, DEFAULT_TENANT);
    assert_eq!(key.name, INITIAL_ADMIN_KEY_NAME);
    assert_eq!(key.scopes, vec![Scope::Admin]);
    assert!(key.has_scope(Scope::Admin));
    assert!(key.has_scope(Scope::Ingest));
    assert!(key.has_scope(Scope::Query));
    assert_eq!(store.list_tenants().unwrap().len(), 1);
    assert_eq!(store.list_api_keys(None).unwrap().len(), 1);
}

#[test]
fn bootstrap_does_nothing_when_tenants_exist() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    assert_eq!(store.bootstrap().unwrap(), None);
    assert!(!store.tenant_exists(DEFAULT_TENANT).unwrap());
    assert!(store.list_api_keys(None).unwrap().is_empty());
}

#[test]
fn tenants_are_validated_listed_and_unique() {
    let (_dir, store) = store();
    for bad in ["", "a/b", "../etc", "a b", "é", &"x".repeat(65)] {
        assert!(
            matches!(store.create_tenant(bad), Err(MetaError::Invalid(_))),
            "{bad:?}"
        );
        assert!(!store.tenant_exists(bad).unwrap());
    }
    let b = store.create_tenant("team-b_2").unwrap();
    let a = store.create_tenant("Acme").unwrap();
    store.create_tenant(&"x".repeat(64)).unwrap();
    assert!(matches!(
        store.create_tenant("team-b_2"),
        Err(MetaError::Conflict(_))
    ));
    // Tenant names are directory names: no two that differ only in case.
    assert!(matches!(
        store.create_tenant("acme"),
        Err(MetaError::Conflict(_))
    ));
    assert!(store.tenant_exists("Acme").unwrap());
    assert!(!store.tenant_exists("acme").unwrap());
    let listed = store.list_tenants().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0], a);
    assert_eq!(listed[1], b);
}

#[test]
fn create_list_and_revoke_api_keys() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    store.create_tenant("zeta").unwrap();
    let expires = SystemTime::now() + HOUR;
    let (k1, t1) = store
        .create_api_key(
            "acme",
            "agents",
            &[Scope::Query, Scope::Ingest, Scope::Ingest],
            Some(expires),
        )
        .unwrap();
    assert_eq!(k1.scopes, vec![Scope::Ingest, Scope::Query]);
    assert_eq!(k1.expires_at, Some(expires));
    assert_eq!(k1.tenant, "acme");
    let (k2, _t2) = store
        .create_api_key("zeta", "grafana", &[Scope::Query], None)
        .unwrap();
    let (k3, _t3) = store
        .create_api_key("acme", "admin", &[Scope::Admin], None)
        .unwrap();

    let all = store.list_api_keys(None).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2], k2, "sorted by tenant first");
    let acme = store.list_api_keys(Some("acme")).unwrap();
    assert_eq!(acme.len(), 2);
    assert!(acme.contains(&k1) && acme.contains(&k3));
    assert_eq!(store.list_api_keys(Some("zeta")).unwrap(), vec![k2]);
    assert!(matches!(
        store.list_api_keys(Some("nobody")),
        Err(MetaError::NotFound(_))
    ));

    store.revoke_api_key(&k1.key_id).unwrap();
    let revoked_at = store.list_api_keys(Some("acme")).unwrap()[0]
        .revoked_at
        .expect("revocation recorded");
    // Idempotent, and the first revocation time stays.
    store.revoke_api_key(&k1.key_id).unwrap();
    let again = store
        .list_api_keys(Some("acme"))
        .unwrap()
        .into_iter()
        .find(|k| k.key_id == k1.key_id)
        .unwrap();
    assert_eq!(again.revoked_at, Some(revoked_at));
    assert_eq!(
        store.verify_api_key(&t1, SystemTime::now()),
        Err(KeyRejection::Revoked)
    );
    assert!(matches!(
        store.revoke_api_key("0123456789ab"),
        Err(MetaError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_api_key("not a key id"),
        Err(MetaError::NotFound(_))
    ));
}

#[test]
fn create_api_key_refuses_bad_arguments() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    assert!(matches!(
        store.create_api_key("nobody", "k", &[Scope::Ingest], None),
        Err(MetaError::NotFound(_))
    ));
    assert!(matches!(
        store.create_api_key("a/b", "k", &[Scope::Ingest], None),
        Err(MetaError::Invalid(_))
    ));
    assert!(matches!(
        store.create_api_key("acme", "k", &[], None),
        Err(MetaError::Invalid(_))
    ));
    for bad_name in ["", "   ", "line\nbreak", &"n".repeat(MAX_KEY_NAME_LEN + 1)] {
        assert!(
            matches!(
                store.create_api_key("acme", bad_name, &[Scope::Ingest], None),
                Err(MetaError::Invalid(_))
            ),
            "{bad_name:?}"
        );
    }
    let far_future = UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400);
    assert!(matches!(
        store.create_api_key("acme", "k", &[Scope::Ingest], Some(far_future)),
        Err(MetaError::Invalid(_))
    ));
    assert!(store.list_api_keys(None).unwrap().is_empty());
}

#[test]
fn key_text_has_the_documented_shape_and_keys_are_random() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let (k1, t1) = store
        .create_api_key("acme", "one", &[Scope::Ingest], None)
        .unwrap();
    let (k2, t2) = store
        .create_api_key("acme", "two", &[Scope::Ingest], None)
        .unwrap();
    for (key, text) in [(&k1, &t1), (&k2, &t2)] {
        assert_eq!(text.len(), KEY_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN);
        assert_eq!(&text[..KEY_PREFIX.len()], KEY_PREFIX);
        assert_eq!(
            &text[KEY_PREFIX.len()..KEY_PREFIX.len() + KEY_ID_LEN],
            key.key_id
        );
        assert!(
            text[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b == b'_' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
    assert_ne!(t1, t2);
    assert_ne!(k1.key_id, k2.key_id);
    assert_ne!(secret_of(&t1), secret_of(&t2));
}

#[test]
fn verify_rejects_bad_keys_without_telling_which_part() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let (key, text) = store
        .create_api_key("acme", "ci", &[Scope::Ingest], None)
        .unwrap();
    let now = SystemTime::now();
    assert_eq!(store.verify_api_key(&text, now).unwrap(), key);

    let secret = secret_of(&text);
    let mut wrong_secret = secret.to_owned().into_bytes();
    wrong_secret[0] = if wrong_secret[0] == b'0' { b'1' } else { b'0' };
    let wrong_secret = String::from_utf8(wrong_secret).unwrap();
    let id = &key.key_id;
    let other_id = if id == "000000000000" {
        "111111111111"
    } else {
        "000000000000"
    };

    let cases = [
        (String::new(), KeyRejection::Malformed),
        ("garbage".to_owned(), KeyRejection::Malformed),
        ("Bearer xyz".to_owned(), KeyRejection::Malformed),
        ("vtg_".to_owned(), KeyRejection::Malformed),
        (format!("vtg_{id}"), KeyRejection::Malformed),
        (format!("vtg_{id}_"), KeyRejection::Malformed),
        (
            format!("vtg_{id}_{}", &secret[..63]),
            KeyRejection::Malformed,
        ),
        (format!("vtg_{id}_{secret}0"), KeyRejection::Malformed),
        (
            format!("vtg_{id}_{}", &secret[..32]),
            KeyRejection::Malformed,
        ),
        (
            format!("vtg_{id}_{}", secret.to_uppercase()),
            KeyRejection::Malformed,
        ),
        (format!(" {text}"), KeyRejection::Malformed),
        (format!("vtg_{id}_{wrong_secret}"), KeyRejection::Unknown),
        (format!("vtg_{other_id}_{secret}"), KeyRejection::Unknown),
    ];
    for (presented, expected) in cases {
        assert_eq!(
            store.verify_api_key(&presented, now),
            Err(expected),
            "{presented:?}"
        );
    }
}

#[test]
fn verify_checks_revocation_and_expiry() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let now = SystemTime::now();
    let (_, expiring) = store
        .create_api_key("acme", "short-lived", &[Scope::Query], Some(now + HOUR))
        .unwrap();
    assert!(store.verify_api_key(&expiring, now).is_ok());
    assert!(
        store
            .verify_api_key(&expiring, now + HOUR - Duration::from_nanos(1))
            .is_ok()
    );
    assert_eq!(
        store.verify_api_key(&expiring, now + HOUR),
        Err(KeyRejection::Expired)
    );
    assert_eq!(
        store.verify_api_key(&expiring, now + 2 * HOUR),
        Err(KeyRejection::Expired)
    );

    let (revoked, revoked_text) = store
        .create_api_key("acme", "leaked", &[Scope::Ingest], None)
        .unwrap();
    store.revoke_api_key(&revoked.key_id).unwrap();
    assert_eq!(
        store.verify_api_key(&revoked_text, now),
        Err(KeyRejection::Revoked)
    );
    // Revoked or expired is only told to the holder of the real secret.
    let mut guessed = revoked_text.clone();
    guessed.replace_range(
        guessed.len() - 1..,
        if guessed.ends_with('0') { "1" } else { "0" },
    );
    assert_eq!(
        store.verify_api_key(&guessed, now),
        Err(KeyRejection::Unknown)
    );
}

#[test]
fn scopes_admin_implies_the_others_and_ingest_does_not_imply_query() {
    assert!(Scope::Admin.allows(Scope::Ingest));
    assert!(Scope::Admin.allows(Scope::Query));
    assert!(Scope::Admin.allows(Scope::Admin));
    assert!(Scope::Ingest.allows(Scope::Ingest));
    assert!(!Scope::Ingest.allows(Scope::Query));
    assert!(!Scope::Ingest.allows(Scope::Admin));
    assert!(!Scope::Query.allows(Scope::Ingest));

    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let (ingest, _) = store
        .create_api_key("acme", "ingest", &[Scope::Ingest], None)
        .unwrap();
    assert!(ingest.has_scope(Scope::Ingest));
    assert!(!ingest.has_scope(Scope::Query));
    assert!(!ingest.has_scope(Scope::Admin));
    let (both, _) = store
        .create_api_key("acme", "both", &[Scope::Ingest, Scope::Query], None)
        .unwrap();
    assert!(both.has_scope(Scope::Query) && !both.has_scope(Scope::Admin));
    for scope in Scope::ALL {
        assert_eq!(scope.to_string().parse::<Scope>().unwrap(), scope);
    }
}

#[test]
fn stored_rows_and_files_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = MetaStore::open(&path).unwrap();
    let text = store.bootstrap().unwrap().unwrap();
    let secret_hex = secret_of(&text).to_owned();
    let secret_bytes = hex::decode(&secret_hex).unwrap();

    let conn = Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT * FROM api_keys").unwrap();
    let columns = stmt.column_count();
    let mut rows = stmt.query([]).unwrap();
    let mut seen_rows = 0;
    while let Some(row) = rows.next().unwrap() {
        seen_rows += 1;
        let mut digest_found = false;
        for i in 0..columns {
            let value = match row.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Text(t) => String::from_utf8(t.to_vec()).unwrap(),
                rusqlite::types::ValueRef::Blob(b) => {
                    assert_ne!(b, secret_bytes.as_slice());
                    digest_found |= b == Sha256::digest(&secret_bytes).as_slice();
                    hex::encode(b)
                }
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Null => continue,
            };
            assert!(!value.contains(&secret_hex), "column {i} holds the secret");
            assert!(!value.contains(&text), "column {i} holds the key text");
        }
        assert!(digest_found, "the row should hold sha256(secret)");
    }
    assert_eq!(seen_rows, 1);
    drop(rows);
    drop(stmt);
    drop(conn);
    drop(store);

    // Nor anywhere in the files SQLite wrote, free pages and WAL included.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(secret_hex.as_bytes()));
        assert!(!contains(&secret_bytes));
    }
}

#[test]
fn debug_output_never_shows_the_key_text() {
    let (_dir, store) = store();
    let text = store.bootstrap().unwrap().unwrap();
    let secret = secret_of(&text);
    let key = store.verify_api_key(&text, SystemTime::now()).unwrap();
    let new = keys::NewKey::generate().unwrap();
    let parsed = keys::parse(&text).unwrap();
    for debug in [
        format!("{store:?}"),
        format!("{key:?}"),
        format!("{parsed:?}"),
        format!("{:?}", store.list_api_keys(None).unwrap()),
    ] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(!format!("{new:?}").contains(secret_of(&new.text)));
}

#[test]
fn touch_records_last_use_and_never_goes_back() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let (key, _) = store
        .create_api_key("acme", "ci", &[Scope::Ingest], None)
        .unwrap();
    assert_eq!(key.last_used_at, None);
    let t1 = SystemTime::now();
    store.touch_api_key(&key.key_id, t1).unwrap();
    store.touch_api_key(&key.key_id, t1 - HOUR).unwrap();
    assert_eq!(store.list_api_keys(None).unwrap()[0].last_used_at, Some(t1));
    store.touch_api_key(&key.key_id, t1 + HOUR).unwrap();
    assert_eq!(
        store.list_api_keys(None).unwrap()[0].last_used_at,
        Some(t1 + HOUR)
    );
    assert!(matches!(
        store.touch_api_key("0123456789ab", t1),
        Err(MetaError::NotFound(_))
    ));
}

#[test]
fn four_threads_verify_at_once() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let store = Arc::new(store);
    let keys: Vec<(ApiKey, String)> = (0..4)
        .map(|i| {
            store
                .create_api_key("acme", &format!("k{i}"), &[Scope::Ingest], None)
                .unwrap()
        })
        .collect();
    let handles: Vec<_> = keys
        .into_iter()
        .map(|(key, text)| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..200 {
                    let now = SystemTime::now();
                    let verified = store.verify_api_key(&text, now).unwrap();
                    assert_eq!(verified.key_id, key.key_id);
                    assert_eq!(verified.scopes, key.scopes);
                    assert_eq!(
                        store.verify_api_key("vtg_000000000000_00", now),
                        Err(KeyRejection::Malformed)
                    );
                    if i % 50 == 0 {
                        store.touch_api_key(&key.key_id, now).unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

#[test]
fn times_round_trip_through_nanoseconds() {
    for t in [
        UNIX_EPOCH,
        UNIX_EPOCH + Duration::from_nanos(1),
        UNIX_EPOCH - Duration::from_secs(86_400),
        SystemTime::now(),
    ] {
        assert_eq!(from_nanos(to_nanos(t, "t").unwrap()), t);
    }
}

#[test]
fn verify_never_panics_on_arbitrary_text() {
    // One store for all cases: opening one per case would spend the run on fsyncs.
    let (_dir, store) = store();
    store.bootstrap().unwrap();
    let strategy = prop_oneof![
        any::<String>(),
        "vtg_.*",
        "vtg_[0-9a-f]{12}_.{0,70}",
        "vtg_[0-9a-fA-F_]{0,14}_[0-9a-fA-F]{60,68}",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(1024));
    runner
        .run(&strategy, |presented| {
            let verdict = store.verify_api_key(&presented, SystemTime::now());
            prop_assert!(verdict.is_err(), "{presented:?} verified");
            Ok(())
        })
        .unwrap();
}
