use std::time::{Duration, SystemTime};

use super::*;

fn store() -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(&dir.path().join("meta.db")).unwrap();
    store.bootstrap().unwrap();
    (dir, store)
}

const PW: &str = "correct horse battery";
const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn users_are_created_checked_and_listed_per_tenant() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let alice = store
        .create_user("alice", PW, "default", Role::Editor)
        .unwrap();
    assert_eq!(alice.role_in("default"), Some(Role::Editor));
    assert_eq!(alice.role_in("acme"), None);
    store.create_user("bob", PW, "acme", Role::Viewer).unwrap();
    // Names are unique ignoring case; the tenant must exist.
    assert!(matches!(
        store.create_user("ALICE", PW, "default", Role::Viewer),
        Err(MetaError::Conflict(_))
    ));
    assert!(matches!(
        store.create_user("carol", PW, "nope", Role::Viewer),
        Err(MetaError::NotFound(_))
    ));
    assert!(matches!(
        store.create_user("carol", "short", "default", Role::Viewer),
        Err(MetaError::Invalid(_))
    ));
    assert!(matches!(
        store.create_user("bad name", PW, "default", Role::Viewer),
        Err(MetaError::Invalid(_))
    ));
    let huge = "x".repeat(MAX_PASSWORD_LEN + 1);
    assert!(matches!(
        store.create_user("carol", &huge, "default", Role::Viewer),
        Err(MetaError::Invalid(_))
    ));
    let names = |t| {
        store
            .list_users(t)
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(Some("default")), ["alice"]);
    assert_eq!(names(Some("acme")), ["bob"]);
    assert_eq!(names(None), ["alice", "bob"]);

    assert_eq!(
        store.verify_password("Alice", PW).unwrap().user_id,
        alice.user_id
    );
    assert_eq!(
        store.verify_password("alice", "wrong password!"),
        Err(LoginRejection::BadCredentials)
    );
    assert_eq!(
        store.verify_password("nobody", PW),
        Err(LoginRejection::BadCredentials),
        "an unknown name reads like a wrong password"
    );
    store.set_user_disabled(&alice.user_id, true).unwrap();
    assert_eq!(
        store.verify_password("alice", PW),
        Err(LoginRejection::Disabled)
    );
    // The hash is never part of what is listed.
    let listed = format!("{:?}", store.list_users(None).unwrap());
    assert!(!listed.contains("argon2"), "{listed}");
}

#[test]
fn roles_move_between_tenants_and_leaving_ends_sessions() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let u = store
        .create_user("dana", PW, "default", Role::Viewer)
        .unwrap();
    let u = store
        .set_user_role(&u.user_id, "acme", Some(Role::Admin))
        .unwrap();
    assert_eq!(u.roles.len(), 2);
    let (s, _) = store
        .create_session(&u.user_id, "acme", DAY, None, None)
        .unwrap();
    assert_eq!(
        store
            .check_session(&s.session_id, SystemTime::now())
            .unwrap()
            .role,
        Role::Admin
    );
    store
        .set_user_role(&u.user_id, "acme", Some(Role::Viewer))
        .unwrap();
    assert_eq!(
        store
            .check_session(&s.session_id, SystemTime::now())
            .unwrap()
            .role,
        Role::Viewer,
        "a role change applies to live sessions at once"
    );
    store.set_user_role(&u.user_id, "acme", None).unwrap();
    assert_eq!(
        store.check_session(&s.session_id, SystemTime::now()),
        Err(SessionRejection::Revoked)
    );
    assert!(matches!(
        store.set_user_role(&u.user_id, "nope", Some(Role::Viewer)),
        Err(MetaError::NotFound(_))
    ));
}

#[test]
fn sessions_refresh_rotate_and_detect_reuse() {
    let (_dir, store) = store();
    let u = store
        .create_user("erin", PW, "default", Role::Admin)
        .unwrap();
    let (s, r1) = store
        .create_session(
            &u.user_id,
            "default",
            DAY,
            Some("127.0.0.1"),
            Some("curl/8"),
        )
        .unwrap();
    assert!(r1.starts_with(REFRESH_PREFIX));
    assert!(!format!("{s:?}").contains(&r1[REFRESH_PREFIX.len() + 17..]));
    let (grant, r2) = store.refresh_session(&r1, DAY, 30 * DAY).unwrap();
    assert_eq!(grant.session_id, s.session_id);
    assert_ne!(r1, r2);
    // The replaced token presented again: stolen; the session ends.
    assert_eq!(
        store.refresh_session(&r1, DAY, 30 * DAY).unwrap_err(),
        SessionRejection::Reused
    );
    assert_eq!(
        store.refresh_session(&r2, DAY, 30 * DAY).unwrap_err(),
        SessionRejection::Revoked
    );
    for bad in [
        "",
        "vtr_",
        "vtr_zz_00",
        "vtg_0123456789ab_00",
        &r2[..r2.len() - 2],
    ] {
        assert_eq!(
            store.refresh_session(bad, DAY, 30 * DAY).unwrap_err(),
            SessionRejection::Unknown,
            "{bad:?}"
        );
    }
    // Expiry, logout and password changes.
    let (s2, _) = store
        .create_session(&u.user_id, "default", Duration::from_secs(60), None, None)
        .unwrap();
    assert_eq!(
        store.check_session(&s2.session_id, SystemTime::now() + Duration::from_secs(61)),
        Err(SessionRejection::Expired)
    );
    let (s3, _) = store
        .create_session(&u.user_id, "default", DAY, None, None)
        .unwrap();
    let (s4, _) = store
        .create_session(&u.user_id, "default", DAY, None, None)
        .unwrap();
    store
        .set_password(&u.user_id, "a new long password", Some(&s3.session_id))
        .unwrap();
    assert!(
        store
            .check_session(&s3.session_id, SystemTime::now())
            .is_ok()
    );
    assert_eq!(
        store.check_session(&s4.session_id, SystemTime::now()),
        Err(SessionRejection::Revoked)
    );
    store.revoke_session(&s3.session_id).unwrap();
    assert_eq!(
        store.check_session(&s3.session_id, SystemTime::now()),
        Err(SessionRejection::Revoked)
    );
    assert!(store.verify_password("erin", "a new long password").is_ok());
    assert_eq!(store.list_sessions(&u.user_id).unwrap().len(), 4);
    // Deleting the user ends everything.
    store.delete_user(&u.user_id).unwrap();
    assert_eq!(
        store.check_session(&s3.session_id, SystemTime::now()),
        Err(SessionRejection::Unknown)
    );
}

#[test]
fn session_lifetime_is_capped_by_max_age() {
    let (_dir, store) = store();
    let u = store
        .create_user("finn", PW, "default", Role::Viewer)
        .unwrap();
    let (s, r) = store
        .create_session(&u.user_id, "default", DAY, None, None)
        .unwrap();
    let (_, _) = store
        .refresh_session(&r, 10 * DAY, Duration::from_secs(3600))
        .unwrap();
    let after = store.get_session(&s.session_id).unwrap();
    assert!(after.expires_at <= s.created_at + Duration::from_secs(3600));
}

#[test]
fn totp_enrolment_and_recovery_codes() {
    let (_dir, store) = store();
    let u = store
        .create_user("gus", PW, "default", Role::Viewer)
        .unwrap();
    let secret = store.totp_begin(&u.user_id).unwrap();
    assert_eq!(secret.len(), 20);
    assert_eq!(
        store.totp_secret(&u.user_id).unwrap(),
        Some((secret.clone(), false))
    );
    let codes = store.totp_enable(&u.user_id).unwrap();
    assert_eq!(codes.len(), RECOVERY_CODES);
    assert!(store.get_user(&u.user_id).unwrap().totp_enabled);
    assert!(matches!(
        store.totp_begin(&u.user_id),
        Err(MetaError::Conflict(_))
    ));
    assert!(store.use_recovery_code(&u.user_id, &codes[3]).unwrap());
    assert!(
        !store.use_recovery_code(&u.user_id, &codes[3]).unwrap(),
        "once only"
    );
    assert!(!store.use_recovery_code(&u.user_id, "00000-00000").unwrap());
    store.totp_disable(&u.user_id).unwrap();
    assert_eq!(store.totp_secret(&u.user_id).unwrap(), None);
    assert!(!store.use_recovery_code(&u.user_id, &codes[4]).unwrap());
}

#[test]
fn signing_key_is_created_once() {
    let (_dir, store) = store();
    let (kid, secret) = store.signing_key().unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(store.signing_key().unwrap(), (kid, secret));
}

#[test]
fn audit_log_filters_and_pages() {
    let (_dir, store) = store();
    for (i, action) in ["user.create", "user.delete", "auth.login", "key.create"]
        .into_iter()
        .enumerate()
    {
        store
            .append_audit(&AuditEvent {
                tenant: Some(if i % 2 == 0 { "default" } else { "acme" }.into()),
                actor: "user:admin".into(),
                action: action.into(),
                target: Some(format!("t{i}")),
                outcome: "ok".into(),
                remote_addr: Some("127.0.0.1".into()),
                detail: Some("d".repeat(5000)),
            })
            .unwrap();
    }
    let all = store
        .list_audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].event.action, "key.create", "newest first");
    assert_eq!(all[0].event.detail.as_ref().unwrap().len(), 1024);
    let users = store
        .list_audit(&AuditQuery {
            action: Some("user.".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(users.len(), 2);
    let default_only = store
        .list_audit(&AuditQuery {
            tenant: Some("default".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(default_only.len(), 2);
    let page = store
        .list_audit(&AuditQuery {
            before_id: Some(all[1].id),
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page[0].id, all[2].id);
}

#[test]
fn enrollment_tokens_enroll_agents_with_their_own_revocable_keys() {
    let (_dir, store) = store();
    store.create_tenant("acme").unwrap();
    let (token, text) = store
        .create_enrollment_token("acme", "web fleet", Some(DAY), Some(2))
        .unwrap();
    assert!(text.starts_with(ENROLLMENT_PREFIX));
    assert!(!format!("{token:?}").contains(&text[ENROLLMENT_PREFIX.len() + 13..]));
    // The token is not an API key, and an API key is not a token.
    assert!(store.verify_api_key(&text, SystemTime::now()).is_err());
    let (agent, key) = store
        .enroll_agent(&text, "web-1", "0.1.0", "linux")
        .unwrap();
    assert_eq!(agent.tenant, "acme");
    let verified = store.verify_api_key(&key, SystemTime::now()).unwrap();
    assert_eq!(verified.tenant, "acme");
    assert_eq!(verified.scopes, vec![Scope::Ingest]);
    assert_eq!(verified.key_id, agent.key_id);
    store
        .enroll_agent(&text, "web-2", "0.1.0", "linux")
        .unwrap();
    assert_eq!(
        store
            .enroll_agent(&text, "web-3", "0.1.0", "linux")
            .unwrap_err(),
        EnrollRejection::UsedUp
    );
    assert_eq!(
        store.list_enrollment_tokens(Some("acme")).unwrap()[0].uses,
        2
    );
    let names: Vec<String> = store
        .list_agents(Some("acme"))
        .unwrap()
        .into_iter()
        .map(|a| a.hostname)
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    assert!(store.list_agents(Some("default")).unwrap().is_empty());

    // Revoking the agent revokes its key.
    let revoked = store.revoke_agent(&agent.agent_id).unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        store.verify_api_key(&key, SystemTime::now()).unwrap_err(),
        KeyRejection::Revoked
    );

    // Bad tokens and fields.
    let (t2, text2) = store
        .create_enrollment_token("acme", "short", Some(Duration::from_secs(60)), None)
        .unwrap();
    for bad in ["", "vte_", "vtg_0123456789ab_00", &text2[..text2.len() - 1]] {
        assert_eq!(
            store.enroll_agent(bad, "h", "v", "o").unwrap_err(),
            EnrollRejection::Unknown,
            "{bad:?}"
        );
    }
    assert_eq!(
        store.enroll_agent(&text2, "", "v", "o").unwrap_err(),
        EnrollRejection::BadField
    );
    assert_eq!(
        store
            .enroll_agent(&text2, &"h".repeat(300), "v", "o")
            .unwrap_err(),
        EnrollRejection::BadField
    );
    assert_eq!(
        store.enroll_agent(&text2, "a\nb", "v", "o").unwrap_err(),
        EnrollRejection::BadField
    );
    store.revoke_enrollment_token(&t2.token_id).unwrap();
    assert_eq!(
        store.enroll_agent(&text2, "h", "v", "o").unwrap_err(),
        EnrollRejection::Revoked
    );
    assert!(matches!(
        store.create_enrollment_token("nope", "x", None, None),
        Err(MetaError::NotFound(_))
    ));
    assert!(matches!(
        store.create_enrollment_token("acme", "x", None, Some(0)),
        Err(MetaError::Invalid(_))
    ));
}

#[cfg(unix)]
#[test]
fn the_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = MetaStore::open(&path).unwrap();
    store.bootstrap().unwrap();
    store.signing_key().unwrap();
    for file in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }
    drop(store);
    // A database made readable by others (an old build, a careless copy) is narrowed.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = MetaStore::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
