//! Reading a tenant: [`TsdbQuerier`] (the PromQL evaluator's view) and the label
//! listing behind the Prometheus `labels` / `label/<name>/values` endpoints.
//!
//! A querier resolves series at `series()` time into per-source ids (head id, block
//! index) remembered with the tenant's generation; `samples()` reads under the tenant's
//! state lock and uses those ids while the generation is unchanged, or finds the series
//! again by label set after a cut, compaction or head GC. The head is only truncated
//! after the block holding its data is installed, so a read never misses data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use roaring::RoaringBitmap;

use super::block::Block;
use super::head::{dedupe_tail, labels_hash};
use super::index::select;
use super::{Labels, Matcher, MetricsError, Querier, Sample, SeriesRef, TenantDb, lock};

/// A series found in one source: its labels, head id or block and index.
type Found = (Labels, Option<u32>, Option<(Arc<Block>, u32)>);

#[derive(Clone)]
struct Hint {
    generation: u64,
    head: Option<u32>,
    blocks: Vec<(Arc<Block>, u32)>,
}

/// A tenant's series for the PromQL evaluator; see [`super::Tsdb::querier`].
pub struct TsdbQuerier {
    pub(crate) tenant: Option<Arc<TenantDb>>,
    hints: std::sync::Mutex<Vec<Hint>>,
}

impl TsdbQuerier {
    pub(crate) fn new(tenant: Option<Arc<TenantDb>>) -> Self {
        TsdbQuerier {
            tenant,
            hints: std::sync::Mutex::new(Vec::new()),
        }
    }
}

fn overlaps(a: (i64, i64), start: i64, end: i64) -> bool {
    a.0 <= end && a.1 >= start
}

impl Querier for TsdbQuerier {
    fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<SeriesRef>, MetricsError> {
        let Some(t) = &self.tenant else {
            return Ok(Vec::new());
        };
        let state = t.read_state();
        let generation = t.generation.load(Ordering::Acquire);
        let mut found: Vec<Found> = Vec::new();
        {
            let idx = t.head.read();
            for id in select(&idx.postings, matchers) {
                let Some(ms) = idx.get(id) else { continue };
                let range = lock(&ms.data).time_range();
                if range.is_some_and(|r| overlaps(r, start, end)) {
                    found.push((ms.labels.to_labels(), Some(id), None));
                }
            }
        }
        for b in &state.blocks {
            if !overlaps((b.meta.min_t, b.meta.max_t), start, end) {
                continue;
            }
            for i in select(b.as_ref(), matchers) {
                if b.series_range(i)?.is_some_and(|r| overlaps(r, start, end)) {
                    found.push((b.labels(i)?, None, Some((b.clone(), i))));
                }
            }
        }
        drop(state);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hints = lock(&self.hints);
        let mut out: Vec<SeriesRef> = Vec::new();
        for (labels, head, block) in found {
            let same = out.last().is_some_and(|r| r.labels == labels);
            if !same {
                hints.push(Hint {
                    generation,
                    head: None,
                    blocks: Vec::new(),
                });
                out.push(SeriesRef {
                    labels,
                    handle: (hints.len() - 1) as u64,
                });
            }
            if let Some(h) = hints.last_mut() {
                if head.is_some() {
                    h.head = head;
                }
                if let Some(b) = block {
                    h.blocks.push(b);
                }
            }
        }
        Ok(out)
    }

    fn samples(
        &self,
        series: &SeriesRef,
        start: i64,
        end: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), MetricsError> {
        let Some(t) = &self.tenant else {
            return Ok(());
        };
        let hint = lock(&self.hints).get(series.handle as usize).cloned();
        let state = t.read_state();
        let generation = t.generation.load(Ordering::Acquire);
        let hint = match hint {
            Some(h) if h.generation == generation => h,
            _ => {
                // The tenant changed since `series()`: find the series again.
                let mut h = Hint {
                    generation,
                    head: None,
                    blocks: Vec::new(),
                };
                let idx = t.head.read();
                h.head = idx
                    .find(labels_hash(&series.labels), &series.labels)
                    .map(|(id, _)| id);
                drop(idx);
                for b in &state.blocks {
                    if overlaps((b.meta.min_t, b.meta.max_t), start, end)
                        && let Some(i) = b.find(&series.labels)?
                    {
                        h.blocks.push((b.clone(), i));
                    }
                }
                h
            }
        };
        let base = out.len();
        let mut blocks = hint.blocks;
        blocks.sort_by_key(|(b, _)| b.meta.data_seq);
        let mut sources = 0;
        let mut sorted = true;
        for (b, i) in &blocks {
            let before = out.len();
            b.samples(*i, start, end, out)?;
            if out.len() > before {
                if before > base && out[before - 1].t >= out[before].t {
                    sorted = false;
                }
                sources += 1;
            }
        }
        if let Some(id) = hint.head {
            let idx = t.head.read();
            if let Some(ms) = idx.get(id) {
                let before = out.len();
                lock(&ms.data).samples(start, end, out);
                if out.len() > before {
                    if before > base && out[before - 1].t >= out[before].t {
                        sorted = false;
                    }
                    sources += 1;
                }
            }
        }
        if sources > 1 && !sorted {
            dedupe_tail(out, base);
        }
        Ok(())
    }
}

/// Which series of one source a label listing looks at.
fn head_selection(t: &TenantDb, matchers: &[Matcher], start: i64, end: i64) -> RoaringBitmap {
    let idx = t.head.read();
    let mut ids = select(&idx.postings, matchers);
    let drop_ids: Vec<u32> = ids
        .iter()
        .filter(|id| {
            !idx.get(*id)
                .and_then(|ms| lock(&ms.data).time_range())
                .is_some_and(|r| overlaps(r, start, end))
        })
        .collect();
    for id in drop_ids {
        ids.remove(id);
    }
    ids
}

/// Label names of the series matching `matchers` with data in `[start, end]`.
pub(crate) fn label_names(
    t: &TenantDb,
    matchers: &[Matcher],
    start: i64,
    end: i64,
) -> Result<Vec<String>, MetricsError> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    let state = t.read_state();
    {
        let ids = head_selection(t, matchers, start, end);
        if !ids.is_empty() {
            let idx = t.head.read();
            for (name, values) in &idx.postings.by_name {
                if values.values().any(|b| !b.is_disjoint(&ids)) {
                    names.insert(name.to_string());
                }
            }
        }
    }
    for b in &state.blocks {
        if !overlaps((b.meta.min_t, b.meta.max_t), start, end) {
            continue;
        }
        let ids = select(b.as_ref(), matchers);
        if ids.is_empty() {
            continue;
        }
        for name in b.names() {
            if names.contains(name) {
                continue;
            }
            if matchers.is_empty() || !b.having(name).is_disjoint(&ids) {
                names.insert(name.to_owned());
            }
        }
    }
    Ok(names.into_iter().collect())
}

/// Values of label `name` among the series matching `matchers` with data in `[start, end]`.
pub(crate) fn label_values(
    t: &TenantDb,
    name: &str,
    matchers: &[Matcher],
    start: i64,
    end: i64,
) -> Result<Vec<String>, MetricsError> {
    let mut values: BTreeSet<String> = BTreeSet::new();
    let state = t.read_state();
    {
        let ids = head_selection(t, matchers, start, end);
        if !ids.is_empty() {
            let idx = t.head.read();
            if let Some(vals) = idx.postings.by_name.get(name) {
                for (v, b) in vals {
                    if !b.is_disjoint(&ids) {
                        values.insert(v.to_string());
                    }
                }
            }
        }
    }
    for b in &state.blocks {
        if !overlaps((b.meta.min_t, b.meta.max_t), start, end) {
            continue;
        }
        if matchers.is_empty() {
            values.extend(b.values_of(name).into_iter().map(str::to_owned));
            continue;
        }
        let ids = select(b.as_ref(), matchers);
        if ids.is_empty() {
            continue;
        }
        for (v, bm) in b.value_postings(name) {
            if !bm.is_disjoint(&ids) {
                values.insert(v.to_owned());
            }
        }
    }
    Ok(values.into_iter().collect())
}
