//! Rule groups managed through the API and the persisted state of alerts: the
//! evaluator's memory across restarts.

use std::time::SystemTime;

use rusqlite::params;

use super::{MetaError, MetaStore, to_nanos};

/// A rule group stored through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRuleGroup {
    /// The tenant it belongs to.
    pub tenant: String,
    /// The namespace (Cortex/Mimir ruler style), where a file would be.
    pub namespace: String,
    /// The group's name, unique in its namespace.
    pub name: String,
    /// The group as validated YAML (one group, not a file).
    pub yaml: String,
}

impl MetaStore {
    /// Creates or replaces a rule group.
    pub fn put_rule_group(
        &self,
        tenant: &str,
        namespace: &str,
        name: &str,
        yaml: &str,
    ) -> Result<(), MetaError> {
        let now = to_nanos(SystemTime::now(), "now")?;
        self.conn()
            .execute(
                "INSERT INTO rule_groups (tenant, namespace, name, yaml, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, namespace, name)
                 DO UPDATE SET yaml = excluded.yaml, updated_at = excluded.updated_at",
                params![tenant, namespace, name, yaml, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Deletes a rule group, or every group of a namespace when `name` is `None`;
    /// returns how many were deleted.
    pub fn delete_rule_groups(
        &self,
        tenant: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<usize, MetaError> {
        let conn = self.conn();
        let n = match name {
            Some(name) => conn.execute(
                "DELETE FROM rule_groups WHERE tenant = ?1 AND namespace = ?2 AND name = ?3",
                params![tenant, namespace, name],
            ),
            None => conn.execute(
                "DELETE FROM rule_groups WHERE tenant = ?1 AND namespace = ?2",
                params![tenant, namespace],
            ),
        }
        .map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Every stored rule group (of one tenant, or all), by tenant, namespace, name.
    pub fn list_rule_groups(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<StoredRuleGroup>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT tenant, namespace, name, yaml FROM rule_groups
                 WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, namespace, name",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![tenant], |row| {
            Ok(StoredRuleGroup {
                tenant: row.get(0)?,
                namespace: row.get(1)?,
                name: row.get(2)?,
                yaml: row.get(3)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Saves the alerts of one rule (`None`: it has none, the row goes).
    pub fn save_alert_state(
        &self,
        tenant: &str,
        group_key: &str,
        rule_key: &str,
        alerts_json: Option<&str>,
    ) -> Result<(), MetaError> {
        let conn = self.conn();
        match alerts_json {
            Some(json) => {
                let now = to_nanos(SystemTime::now(), "now")?;
                conn.execute(
                    "INSERT INTO alert_state (tenant, group_key, rule_key, alerts, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (tenant, group_key, rule_key)
                     DO UPDATE SET alerts = excluded.alerts, updated_at = excluded.updated_at",
                    params![tenant, group_key, rule_key, json, now],
                )
            }
            None => conn.execute(
                "DELETE FROM alert_state WHERE tenant = ?1 AND group_key = ?2 AND rule_key = ?3",
                params![tenant, group_key, rule_key],
            ),
        }
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The saved alerts of a group: `(rule_key, alerts JSON)` pairs.
    pub fn load_alert_state(
        &self,
        tenant: &str,
        group_key: &str,
    ) -> Result<Vec<(String, String)>, MetaError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT rule_key, alerts FROM alert_state WHERE tenant = ?1 AND group_key = ?2",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![tenant, group_key], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| self.err(e))
    }

    /// Forgets the saved alerts of a group that no longer exists.
    pub fn delete_alert_state(&self, tenant: &str, group_key: &str) -> Result<(), MetaError> {
        self.conn()
            .execute(
                "DELETE FROM alert_state WHERE tenant = ?1 AND group_key = ?2",
                params![tenant, group_key],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_groups_and_alert_state_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let store = MetaStore::open(&path).unwrap();
        store.put_rule_group("t1", "ns", "g", "name: g\n").unwrap();
        store
            .put_rule_group("t1", "ns", "g", "name: g\nrules: []\n")
            .unwrap();
        store.put_rule_group("t2", "ns", "h", "name: h\n").unwrap();
        let t1 = store.list_rule_groups(Some("t1")).unwrap();
        assert_eq!(t1.len(), 1);
        assert_eq!(t1[0].yaml, "name: g\nrules: []\n");
        assert_eq!(store.list_rule_groups(None).unwrap().len(), 2);
        store
            .save_alert_state("t1", "ns;g", "A\nup", Some("[]"))
            .unwrap();
        store
            .save_alert_state("t1", "ns;g", "A\nup", Some("[1]"))
            .unwrap();
        drop(store);
        let store = MetaStore::open(&path).unwrap();
        assert_eq!(
            store.load_alert_state("t1", "ns;g").unwrap(),
            vec![("A\nup".to_string(), "[1]".to_string())]
        );
        assert!(store.load_alert_state("t2", "ns;g").unwrap().is_empty());
        store.save_alert_state("t1", "ns;g", "A\nup", None).unwrap();
        assert!(store.load_alert_state("t1", "ns;g").unwrap().is_empty());
        assert_eq!(store.delete_rule_groups("t1", "ns", Some("g")).unwrap(), 1);
        assert_eq!(store.delete_rule_groups("t1", "ns", None).unwrap(), 0);
        assert_eq!(store.delete_rule_groups("t2", "ns", None).unwrap(), 1);
        store.delete_alert_state("t1", "ns;g").unwrap();
    }
}
