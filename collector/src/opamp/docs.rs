//! What a tenant's agents are given, computed once per change instead of once per
//! message: the active documents and every body an agent may receive (current version
//! and roll-out candidate) with the tenant's `${secret:NAME}` references expanded.
//!
//! A thousand agents heartbeating every 10 s are 100 messages a second; each one used
//! to expand every matching body again. Now a message only matches selectors, looks
//! bodies up and hashes them. The cache of a tenant is dropped when one of its
//! documents or secrets changes ([`DocCache::invalidate`]); a load that began before
//! such a change never replaces the newer state (a generation counter).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use vantage_storage::meta::{ActiveConfig, MetaError, MetaStore};

use crate::secrets::Secrets;

/// A tenant's active documents and their expanded bodies.
#[derive(Debug)]
pub(super) struct TenantDocs {
    /// The documents, as the store has them (bodies unexpanded).
    pub(super) docs: Vec<ActiveConfig>,
    /// (document, version) -> the body agents receive, or why it cannot be expanded.
    bodies: HashMap<(String, u32), Result<String, String>>,
    /// (document, version) whose body changed when expanded: it holds a secret's value.
    with_secrets: HashSet<(String, u32)>,
}

impl TenantDocs {
    /// Reads the tenant's documents and expands each body that an agent may be given.
    /// Blocking (store reads; a secret not yet decrypted is read and decrypted): call
    /// from `spawn_blocking`.
    pub(super) fn load(
        store: &MetaStore,
        secrets: Option<&Secrets>,
        tenant: &str,
    ) -> Result<TenantDocs, MetaError> {
        let docs = store.active_configs(tenant)?;
        let mut bodies = HashMap::new();
        let mut with_secrets = HashSet::new();
        for doc in &docs {
            let candidates =
                std::iter::once(&doc.current).chain(doc.rollout.as_ref().map(|(_, v)| v));
            for version in candidates {
                bodies
                    .entry((doc.name.clone(), version.version))
                    .or_insert_with(|| {
                        let expanded = super::expand_for_agent(secrets, tenant, &version.body);
                        if let Err(e) = &expanded {
                            tracing::warn!(
                                tenant = %tenant,
                                config = %doc.name,
                                version = version.version,
                                error = %e,
                                "cannot expand configuration for agents; they keep what they run"
                            );
                        }
                        if expanded.as_ref().is_ok_and(|b| *b != version.body) {
                            with_secrets.insert((doc.name.clone(), version.version));
                        }
                        expanded
                    });
            }
        }
        Ok(TenantDocs {
            docs,
            bodies,
            with_secrets,
        })
    }

    /// Whether the body agents get of `doc` at `version` holds a secret's value.
    pub(super) fn has_secrets(&self, doc: &str, version: u32) -> bool {
        self.with_secrets.contains(&(doc.to_string(), version))
    }

    /// The expanded body of `doc` at `version`: `None` when it was not loaded, the
    /// expansion error when a secret is missing or unreadable.
    pub(super) fn body(&self, doc: &str, version: u32) -> Option<&Result<String, String>> {
        self.bodies.get(&(doc.to_string(), version))
    }

    /// Documents without any body (tests).
    #[cfg(test)]
    pub(super) fn from_parts(
        docs: Vec<ActiveConfig>,
        bodies: HashMap<(String, u32), Result<String, String>>,
    ) -> TenantDocs {
        TenantDocs {
            docs,
            bodies,
            with_secrets: HashSet::new(),
        }
    }
}

#[derive(Default)]
struct CacheInner {
    /// Bumped by every invalidation.
    generation: u64,
    tenants: HashMap<String, Arc<TenantDocs>>,
}

/// Tenant -> [`TenantDocs`].
#[derive(Default)]
pub(super) struct DocCache {
    inner: Mutex<CacheInner>,
}

impl DocCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached documents, or the generation a load must present to
    /// [`DocCache::insert`].
    pub(super) fn get(&self, tenant: &str) -> Result<Arc<TenantDocs>, u64> {
        let inner = self.lock();
        inner.tenants.get(tenant).cloned().ok_or(inner.generation)
    }

    /// Keeps `docs` unless something was invalidated since the load began.
    pub(super) fn insert(&self, tenant: &str, generation: u64, docs: Arc<TenantDocs>) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.tenants.insert(tenant.to_string(), docs);
        }
    }

    /// A document or secret of `tenant` changed.
    pub(super) fn invalidate(&self, tenant: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.tenants.remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_began_before_a_change_is_not_kept() {
        let cache = DocCache::default();
        let empty = || Arc::new(TenantDocs::from_parts(Vec::new(), HashMap::new()));
        let generation = cache.get("t").unwrap_err();
        cache.invalidate("t");
        cache.insert("t", generation, empty());
        let generation = cache.get("t").expect_err("the stale load was dropped");
        cache.insert("t", generation, empty());
        assert!(cache.get("t").is_ok());
        cache.invalidate("t");
        assert!(cache.get("t").is_err());
    }
}
