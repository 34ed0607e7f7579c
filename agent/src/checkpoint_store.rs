//! The checkpoint file plus a journal of changed positions, so that a batch from a few
//! active files among thousands of quiet ones costs one small append and one
//! `fdatasync`, not a rewrite of every position (1 MB and two fsyncs at 10,000 files).
//!
//! On disk, next to the snapshot (the `checkpoints` file, [`crate::checkpoint`]'s
//! format, unchanged, so an older agent still reads it):
//!
//! ```text
//! journal = "VAGTCKJ1" | base[16] | record*
//! base    = first 16 bytes of SHA-256 of the snapshot file the journal extends
//! record  = u32 body_len | u32 crc32(body) | body
//! body    = positions (changed or new) | u32 removed | (u64 dev | u64 ino)*
//! ```
//!
//! Loading reads the snapshot, then applies the journal's records in order while they
//! are whole and their CRC matches: a torn last append loses only that append, never an
//! older position. A journal whose `base` is not the snapshot's hash is stale (a crash
//! between a compaction's two renames) and is ignored: the snapshot already holds it.
//!
//! Compaction (the first save after start, after a failed append, and when the journal
//! outgrows the snapshot) writes a new snapshot atomically, then a new empty journal
//! atomically. Every write is durable before `save` returns, and `save` is called only
//! after the queue holds the lines, so a position on disk never runs ahead of the queue.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::checkpoint::{self, CheckpointError, Position};

const JOURNAL_MAGIC: &[u8; 8] = b"VAGTCKJ1";
const JOURNAL_HEADER: usize = 8 + 16;
/// The journal is folded into the snapshot once it is larger than the snapshot and at
/// least this big (so a handful of files do not compact every few batches).
const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// A record longer than this is not believed (a torn length field, not a reason to
/// allocate): far above 10,000 positions with full-length paths changing at once.
const MAX_RECORD_BYTES: usize = 256 << 20;

type Key = (u64, u64);

/// One file's position as the tailer holds it, borrowed: compared with what is on disk
/// without cloning a path per file per batch.
pub(crate) struct PositionRef<'a> {
    pub(crate) path: &'a Path,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) offset: u64,
    pub(crate) fp_len: u32,
    pub(crate) fp_hash: u64,
}

impl PositionRef<'_> {
    fn same_as(&self, p: &Position) -> bool {
        p.offset == self.offset
            && p.fp_len == self.fp_len
            && p.fp_hash == self.fp_hash
            // Bytes, not `Path`'s component-wise equality (most of a save's time at
            // 10,000 files, per perf).
            && p.path.as_os_str() == self.path.as_os_str()
    }

    fn to_owned(&self) -> Position {
        Position {
            path: self.path.to_path_buf(),
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            fp_len: self.fp_len,
            fp_hash: self.fp_hash,
        }
    }
}

/// The positions on disk and the open journal.
pub(crate) struct CheckpointStore {
    snapshot_path: PathBuf,
    journal_path: PathBuf,
    /// What snapshot + journal say, with the save round that last saw each file.
    persisted: HashMap<Key, (Position, u64)>,
    /// Open for appending; `None`: the next save compacts.
    journal: Option<File>,
    journal_bytes: u64,
    snapshot_bytes: u64,
    round: u64,
}

/// The journal's path for a snapshot path (`checkpoints` → `checkpoints-journal`; not an
/// extension, which `write_atomic`'s temp file would share with the snapshot's).
fn journal_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_os_string();
    name.push("-journal");
    PathBuf::from(name)
}

fn snapshot_id(snapshot: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(snapshot);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The body of one journal record.
fn encode_record(changed: &[Position], removed: &[Key]) -> Vec<u8> {
    let mut body = Vec::new();
    checkpoint::encode_positions(changed, &mut body);
    body.extend_from_slice(&(removed.len() as u32).to_le_bytes());
    for (dev, ino) in removed {
        body.extend_from_slice(&dev.to_le_bytes());
        body.extend_from_slice(&ino.to_le_bytes());
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// One record's changes, or `None` when the body is not a record.
fn decode_record(body: &[u8]) -> Option<(Vec<Position>, Vec<Key>)> {
    let (changed, used) = checkpoint::decode_positions(body).ok()?;
    let rest = &body[used..];
    let count = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let keys = &rest[4..];
    if keys.len() != count.checked_mul(16)? {
        return None;
    }
    let removed = keys
        .chunks_exact(16)
        .map(|c| {
            let mut dev = [0u8; 8];
            let mut ino = [0u8; 8];
            dev.copy_from_slice(&c[..8]);
            ino.copy_from_slice(&c[8..]);
            (u64::from_le_bytes(dev), u64::from_le_bytes(ino))
        })
        .collect();
    Some((changed, removed))
}

/// Applies the journal's whole, valid records to `positions`; returns how many were
/// applied and whether the journal ended cleanly (no torn or corrupt tail).
fn apply_journal(
    journal: &[u8],
    snapshot: &[u8],
    positions: &mut HashMap<Key, Position>,
) -> (usize, bool) {
    if journal.len() < JOURNAL_HEADER
        || &journal[..8] != JOURNAL_MAGIC
        || journal[8..JOURNAL_HEADER] != snapshot_id(snapshot)
    {
        return (0, false);
    }
    let mut at = JOURNAL_HEADER;
    let mut applied = 0;
    while at < journal.len() {
        let Some(head) = journal.get(at..at + 8) else {
            return (applied, false);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD_BYTES {
            return (applied, false);
        }
        let Some(body) = journal.get(at + 8..at + 8 + len) else {
            return (applied, false);
        };
        if crc32fast::hash(body) != crc {
            return (applied, false);
        }
        let Some((changed, removed)) = decode_record(body) else {
            return (applied, false);
        };
        for p in changed {
            positions.insert((p.dev, p.ino), p);
        }
        for key in removed {
            positions.remove(&key);
        }
        applied += 1;
        at += 8 + len;
    }
    (applied, true)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CheckpointError> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl CheckpointStore {
    /// Reads the snapshot at `path` and its journal. An unreadable snapshot is an error
    /// (the caller starts files per `start_at`) and leaves a store that compacts on its
    /// first save; a missing one is empty.
    pub(crate) fn open(path: &Path) -> (CheckpointStore, Result<Vec<Position>, CheckpointError>) {
        let mut store = CheckpointStore {
            snapshot_path: path.to_path_buf(),
            journal_path: journal_path(path),
            persisted: HashMap::new(),
            journal: None,
            journal_bytes: 0,
            snapshot_bytes: 0,
            round: 0,
        };
        let loaded = store.load();
        if let Ok(positions) = &loaded {
            store.persisted = positions
                .iter()
                .map(|p| ((p.dev, p.ino), (p.clone(), 0)))
                .collect();
        }
        (store, loaded)
    }

    fn load(&self) -> Result<Vec<Position>, CheckpointError> {
        let Some(snapshot) = read_optional(&self.snapshot_path)? else {
            return Ok(Vec::new());
        };
        let mut positions: HashMap<Key, Position> = checkpoint::decode_file(&snapshot)?
            .into_iter()
            .map(|p| ((p.dev, p.ino), p))
            .collect();
        // A journal that cannot be read only costs its newer positions: the snapshot
        // and the queue's batch headers still say where every file was.
        match read_optional(&self.journal_path) {
            Ok(Some(journal)) => {
                let (records, clean) = apply_journal(&journal, &snapshot, &mut positions);
                if !clean {
                    tracing::warn!(
                        path = %self.journal_path.display(),
                        records,
                        "checkpoint journal stale or torn; kept the whole records before the damage"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint journal unreadable; using the snapshot")
            }
        }
        Ok(positions.into_values().collect())
    }

    /// Makes `current` (every tracked file) what the disk says: appends the positions
    /// that changed and the files no longer tracked to the journal (one `fdatasync`), or
    /// compacts. Nothing is written when nothing changed. Blocking.
    pub(crate) fn save<'a>(
        &mut self,
        current: impl Iterator<Item = PositionRef<'a>>,
    ) -> Result<(), CheckpointError> {
        self.round = self.round.wrapping_add(1);
        let round = self.round;
        let mut changed = Vec::new();
        let mut kept = 0usize;
        for p in current {
            let (differs, seen_before) = self.upsert(p, round);
            if seen_before != Some(round) {
                kept += 1;
            }
            changed.extend(differs);
        }
        let mut removed = Vec::new();
        if kept < self.persisted.len() {
            self.persisted.retain(|key, (_, seen)| {
                let keep = *seen == round;
                if !keep {
                    removed.push(*key);
                }
                keep
            });
        }
        self.write(changed, removed)
    }

    /// Like [`CheckpointStore::save`], but told what changed instead of shown every
    /// file: `changed` are the files whose position may differ from the last save (new
    /// ones included; unchanged ones are skipped), `removed` the files no longer
    /// tracked. Costs what changed, not what is tracked (10,000 quiet files cost nothing
    /// per batch). The caller owes a full [`CheckpointStore::save`] first (positions
    /// loaded from the last run and no longer tracked are only dropped by one). A key
    /// both removed and changed (an inode reused by a new file) ends with its new
    /// position. Blocking.
    pub(crate) fn save_changes<'a>(
        &mut self,
        changed: impl Iterator<Item = PositionRef<'a>>,
        removed: &[Key],
    ) -> Result<(), CheckpointError> {
        let mut gone: Vec<Key> = removed
            .iter()
            .filter(|k| self.persisted.remove(k).is_some())
            .copied()
            .collect();
        let round = self.round;
        let mut written = Vec::new();
        for p in changed {
            written.extend(self.upsert(p, round).0);
        }
        // A record applies its positions before its removals: a key back in the map
        // must not be removed after its new position.
        gone.retain(|k| !self.persisted.contains_key(k));
        self.write(written, gone)
    }

    /// Makes `p` the persisted position of its file, stamped as seen in `round`: the
    /// position to write when it differs from the persisted one (or is new), and the
    /// round that had last seen the file (`None`: not tracked before).
    fn upsert(&mut self, p: PositionRef<'_>, round: u64) -> (Option<Position>, Option<u64>) {
        match self.persisted.get_mut(&(p.dev, p.ino)) {
            Some((old, seen)) => {
                let before = std::mem::replace(seen, round);
                if p.same_as(old) {
                    (None, Some(before))
                } else {
                    *old = p.to_owned();
                    (Some(old.clone()), Some(before))
                }
            }
            None => {
                let owned = p.to_owned();
                self.persisted
                    .insert((p.dev, p.ino), (owned.clone(), round));
                (Some(owned), None)
            }
        }
    }

    /// Puts a save's outcome on disk: one journal record, or a compaction.
    fn write(&mut self, changed: Vec<Position>, removed: Vec<Key>) -> Result<(), CheckpointError> {
        // From here the in-memory state is ahead of the disk until the write succeeds;
        // a failed append drops the journal so the next save rewrites everything.
        let compact = self.journal.is_none()
            || self.journal_bytes > COMPACT_MIN_BYTES.max(self.snapshot_bytes);
        if compact {
            return self.compact();
        }
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let record = encode_record(&changed, &removed);
        let result = self.journal.as_mut().map_or(Ok(()), |f| {
            f.write_all(&record).and_then(|()| f.sync_data())
        });
        match result {
            Ok(()) => {
                self.journal_bytes += record.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.journal = None;
                Err(CheckpointError::Io {
                    path: self.journal_path.clone(),
                    source,
                })
            }
        }
    }

    /// Writes every position as a new snapshot, then a new empty journal extending it.
    fn compact(&mut self) -> Result<(), CheckpointError> {
        self.journal = None;
        let positions: Vec<Position> = self.persisted.values().map(|(p, _)| p.clone()).collect();
        let snapshot = checkpoint::encode_file(&positions);
        checkpoint::write_atomic(&self.snapshot_path, &snapshot)?;
        let mut header = Vec::with_capacity(JOURNAL_HEADER);
        header.extend_from_slice(JOURNAL_MAGIC);
        header.extend_from_slice(&snapshot_id(&snapshot));
        checkpoint::write_atomic(&self.journal_path, &header)?;
        let journal = OpenOptions::new()
            .append(true)
            .open(&self.journal_path)
            .map_err(|source| CheckpointError::Io {
                path: self.journal_path.clone(),
                source,
            })?;
        self.journal = Some(journal);
        self.journal_bytes = header.len() as u64;
        self.snapshot_bytes = snapshot.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(ino: u64, offset: u64) -> Position {
        Position {
            path: PathBuf::from(format!("/var/log/app-{ino}.log")),
            dev: 1,
            ino,
            offset,
            fp_len: 8,
            fp_hash: ino * 31,
        }
    }

    fn refs(positions: &[Position]) -> impl Iterator<Item = PositionRef<'_>> {
        positions.iter().map(|p| PositionRef {
            path: &p.path,
            dev: p.dev,
            ino: p.ino,
            offset: p.offset,
            fp_len: p.fp_len,
            fp_hash: p.fp_hash,
        })
    }

    fn sorted(mut v: Vec<Position>) -> Vec<Position> {
        v.sort_by_key(|p| (p.dev, p.ino));
        v
    }

    fn load(path: &Path) -> Vec<Position> {
        sorted(CheckpointStore::open(path).1.unwrap())
    }

    #[test]
    fn a_save_after_the_first_appends_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let (mut store, loaded) = CheckpointStore::open(&path);
        assert!(loaded.unwrap().is_empty());
        let mut files: Vec<Position> = (1..=1000).map(|i| pos(i, 0)).collect();
        store.save(refs(&files)).unwrap();
        let snapshot_len = std::fs::metadata(&path).unwrap().len();
        let journal = journal_path(&path);
        assert_eq!(
            std::fs::metadata(&journal).unwrap().len(),
            JOURNAL_HEADER as u64
        );
        files[3].offset = 500;
        files[7].offset = 900;
        store.save(refs(&files)).unwrap();
        let appended = std::fs::metadata(&journal).unwrap().len() - JOURNAL_HEADER as u64;
        assert!(appended < 200, "two positions took {appended} bytes");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), snapshot_len);
        // Nothing changed: nothing written.
        store.save(refs(&files)).unwrap();
        assert_eq!(
            std::fs::metadata(&journal).unwrap().len() - JOURNAL_HEADER as u64,
            appended
        );
        // A released file is removed.
        let gone = files.remove(0);
        store.save(refs(&files)).unwrap();
        let on_disk = load(&path);
        assert_eq!(on_disk, sorted(files.clone()));
        assert!(!on_disk.iter().any(|p| p.ino == gone.ino));
    }

    #[test]
    fn a_torn_append_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let (mut store, _) = CheckpointStore::open(&path);
        let mut files: Vec<Position> = (1..=5).map(|i| pos(i, 0)).collect();
        store.save(refs(&files)).unwrap();
        files[0].offset = 10;
        store.save(refs(&files)).unwrap();
        let journal = journal_path(&path);
        let good = std::fs::read(&journal).unwrap();
        let after_first = sorted(files.clone());
        files[0].offset = 20;
        files[1].offset = 30;
        store.save(refs(&files)).unwrap();
        let full = std::fs::read(&journal).unwrap();
        assert_eq!(load(&path), sorted(files.clone()));
        // Every cut inside the last record keeps the record before it.
        for cut in good.len()..full.len() {
            std::fs::write(&journal, &full[..cut]).unwrap();
            assert_eq!(load(&path), after_first, "cut at {cut}");
        }
        // A flipped bit in the last record: the same.
        let mut bad = full.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x10;
        std::fs::write(&journal, &bad).unwrap();
        assert_eq!(load(&path), after_first);
        // A store opened on a torn journal compacts first, so new appends are not
        // written after the garbage.
        std::fs::write(&journal, &full[..full.len() - 1]).unwrap();
        let (mut store, _) = CheckpointStore::open(&path);
        files[2].offset = 40;
        store.save(refs(&files)).unwrap();
        files[3].offset = 50;
        store.save(refs(&files)).unwrap();
        assert_eq!(load(&path), sorted(files));
    }

    #[test]
    fn a_journal_of_an_older_snapshot_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let (mut store, _) = CheckpointStore::open(&path);
        let mut files = vec![pos(1, 0), pos(2, 0)];
        store.save(refs(&files)).unwrap();
        files[0].offset = 5;
        store.save(refs(&files)).unwrap();
        let old_journal = std::fs::read(journal_path(&path)).unwrap();
        // A compaction whose journal rename was lost in a crash: the new snapshot
        // (file 1 released, file 2 moved on) with the old journal beside it.
        let newer = vec![pos(2, 7)];
        checkpoint::write_atomic(&path, &checkpoint::encode_file(&newer)).unwrap();
        std::fs::write(journal_path(&path), &old_journal).unwrap();
        assert_eq!(load(&path), newer);
    }

    #[test]
    fn an_old_agents_checkpoint_file_loads_and_is_kept_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let old = vec![pos(1, 100), pos(2, 200)];
        // What the agent wrote before the journal: the snapshot format alone.
        std::fs::write(&path, checkpoint::encode_file(&old)).unwrap();
        assert_eq!(load(&path), old);
        let (mut store, _) = CheckpointStore::open(&path);
        let mut files = old.clone();
        files[1].offset = 300;
        store.save(refs(&files)).unwrap();
        // The first save compacts: the snapshot alone is current, for an older agent.
        assert_eq!(sorted(checkpoint::load(&path).unwrap()), sorted(files));
    }

    #[test]
    fn the_journal_is_compacted_when_it_outgrows_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let (mut store, _) = CheckpointStore::open(&path);
        let mut files = vec![pos(1, 0), pos(2, 0)];
        for offset in 1..5000 {
            files[0].offset = offset;
            store.save(refs(&files)).unwrap();
        }
        let journal = std::fs::metadata(journal_path(&path)).unwrap().len();
        assert!(
            journal <= COMPACT_MIN_BYTES + 200,
            "journal {journal} bytes"
        );
        assert_eq!(load(&path), sorted(files.clone()));
        assert_eq!(
            sorted(checkpoint::load(&path).unwrap())[1],
            files[1],
            "compactions keep the quiet files"
        );
    }

    #[test]
    fn garbage_journals_never_panic_and_never_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let files = vec![pos(1, 9)];
        std::fs::write(&path, checkpoint::encode_file(&files)).unwrap();
        let snapshot = std::fs::read(&path).unwrap();
        let mut journal = JOURNAL_MAGIC.to_vec();
        journal.extend_from_slice(&snapshot_id(&snapshot));
        // A length beyond anything believable, then one beyond the file.
        for len in [u32::MAX, 1000] {
            let mut j = journal.clone();
            j.extend_from_slice(&len.to_le_bytes());
            j.extend_from_slice(&[0u8; 12]);
            std::fs::write(journal_path(&path), &j).unwrap();
            assert_eq!(load(&path), files);
        }
    }

    #[test]
    fn a_change_save_writes_only_what_it_is_told_and_a_reused_inode_keeps_its_new_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let (mut store, _) = CheckpointStore::open(&path);
        let mut files: Vec<Position> = (1..=1000).map(|i| pos(i, 0)).collect();
        store.save(refs(&files)).unwrap();
        let journal = journal_path(&path);
        files[3].offset = 500;
        store.save_changes(refs(&files[3..4]), &[]).unwrap();
        let appended = std::fs::metadata(&journal).unwrap().len() - JOURNAL_HEADER as u64;
        assert!(appended < 100, "one position took {appended} bytes");
        assert_eq!(load(&path), sorted(files.clone()));
        // Told about an unchanged file: nothing written.
        store.save_changes(refs(&files[5..6]), &[]).unwrap();
        assert_eq!(
            std::fs::metadata(&journal).unwrap().len() - JOURNAL_HEADER as u64,
            appended
        );
        // Released, and its inode taken by a new file in the same save.
        let mut reused = pos(files[9].ino, 77);
        reused.path = PathBuf::from("/var/log/new.log");
        let removed = [(files[9].dev, files[9].ino), (files[10].dev, files[10].ino)];
        files[9] = reused;
        files.remove(10);
        store.save_changes(refs(&files[9..10]), &removed).unwrap();
        assert_eq!(load(&path), sorted(files.clone()));
        // Removing what is not there is nothing.
        store.save_changes(refs(&[]), &[(9, 9)]).unwrap();
        assert_eq!(load(&path), sorted(files));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(u64, u64),
        Drop(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..12, 0u64..1000).prop_map(|(i, o)| Op::Set(i, o)),
            (0u64..12).prop_map(Op::Drop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of saves, reopened at any point (a restart), loads exactly the
        /// last saved state; cutting the journal anywhere loads the state of some
        /// earlier save (never a mix, never a loss of what the snapshot held).
        #[test]
        fn saves_reload_exactly_and_cuts_load_an_earlier_save(
            rounds in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..20),
            reopen_at in 0usize..20,
            cut in any::<prop::sample::Index>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("checkpoints");
            let (mut store, _) = CheckpointStore::open(&path);
            let mut model: HashMap<u64, Position> = HashMap::new();
            let mut states = Vec::new();
            for (i, ops) in rounds.iter().enumerate() {
                if i == reopen_at {
                    store = CheckpointStore::open(&path).0;
                    states.clear();
                }
                for op in ops {
                    match op {
                        Op::Set(ino, o) => { model.insert(*ino, pos(*ino, *o)); }
                        Op::Drop(ino) => { model.remove(ino); }
                    }
                }
                let current: Vec<Position> = model.values().cloned().collect();
                store.save(refs(&current)).unwrap();
                states.push(sorted(current));
                prop_assert_eq!(&load(&path), states.last().unwrap());
            }
            let journal = journal_path(&path);
            let full = std::fs::read(&journal).unwrap();
            let at = JOURNAL_HEADER + cut.index(full.len() - JOURNAL_HEADER + 1);
            std::fs::write(&journal, &full[..at]).unwrap();
            let cut_state = load(&path);
            prop_assert!(states.contains(&cut_state), "cut at {} loaded {:?}", at, cut_state);
        }

        /// Saves told only what changed (after a first full save) load exactly what a
        /// full save of the same state would, across reopenings and compactions.
        #[test]
        fn change_saves_reload_exactly(
            rounds in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..40),
            reopen_at in 0usize..40,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("checkpoints");
            let (mut store, _) = CheckpointStore::open(&path);
            store.save(refs(&[])).unwrap();
            let mut model: HashMap<u64, Position> = HashMap::new();
            for (i, ops) in rounds.iter().enumerate() {
                if i == reopen_at {
                    store = CheckpointStore::open(&path).0;
                    let current: Vec<Position> = model.values().cloned().collect();
                    store.save(refs(&current)).unwrap();
                }
                let mut changed: Vec<u64> = Vec::new();
                let mut removed: Vec<Key> = Vec::new();
                for op in ops {
                    match op {
                        Op::Set(ino, o) => {
                            model.insert(*ino, pos(*ino, *o));
                            changed.push(*ino);
                        }
                        Op::Drop(ino) => {
                            if model.remove(ino).is_some() {
                                removed.push((1, *ino));
                            }
                            changed.retain(|c| c != ino);
                        }
                    }
                }
                let told: Vec<Position> =
                    changed.iter().filter_map(|i| model.get(i).cloned()).collect();
                store.save_changes(refs(&told), &removed).unwrap();
                let current: Vec<Position> = model.values().cloned().collect();
                prop_assert_eq!(load(&path), sorted(current));
            }
        }

        #[test]
        fn record_bodies_roundtrip(
            inos in proptest::collection::vec(0u64..100, 0..10),
            removed in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..10),
        ) {
            let changed: Vec<Position> = inos.iter().map(|i| pos(*i, *i)).collect();
            let record = encode_record(&changed, &removed);
            let (c, r) = decode_record(&record[8..]).unwrap();
            prop_assert_eq!(c, changed);
            prop_assert_eq!(r, removed);
        }

        #[test]
        fn garbage_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&data);
            let mut positions = HashMap::new();
            let _ = apply_journal(&data, b"", &mut positions);
        }
    }
}
