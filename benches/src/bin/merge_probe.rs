//! `vantage-merge-probe`: what one Tantivy merge costs per document, by how many
//! segments it joins and how large they are.
//!
//! Merges are a fifth of the collector's CPU under sustained ingest, and a merge policy
//! decides both numbers. For each group size the probe builds the same segments with
//! raw Tantivy (the ceiling's fields with positions on the body, but no doc store: a
//! merge without deletes copies the store's compressed blocks as they are; no merge
//! policy, one commit per segment; indexing is not timed), then merges them `group` at a time, one merge
//! after the other, and reports the merge CPU per document. Nothing else runs in the
//! process meanwhile, so its CPU time is the merges'.

use std::time::Instant;

use clap::Parser;
use serde_json::json;
use tantivy::indexer::NoMergePolicy;
use tantivy::{Index, IndexWriter};
use vantage_benches::ceiling::CeilingFields;
use vantage_benches::log_batch;
use vantage_benches::procfs::cpu_seconds;
use vantage_proto::logs::records;

#[derive(Parser, Debug)]
#[command(about = "Tantivy merge CPU per document by merge size (see RESULTS.md)")]
struct Args {
    /// Segments built for each group size.
    #[arg(long, default_value_t = 16)]
    segments: usize,
    /// Batches of 1,000 records per segment (277 is what a 96 MiB indexing heap holds of
    /// the collector's documents).
    #[arg(long, default_value_t = 277)]
    segment_batches: u64,
    /// Segments per merge; one full build and merge run per value.
    #[arg(long, value_delimiter = ',', default_value = "16,8,4,2")]
    groups: Vec<usize>,
    /// Cycle this many distinct batches, as the load generator's pool does (the same
    /// terms then recur in every segment); 0 makes every batch fresh.
    #[arg(long, default_value_t = 0)]
    pool_batches: u64,
    /// Body bytes per record.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Where the index is built (deleted after each run).
    #[arg(long, default_value = "target/merge-probe")]
    work_dir: std::path::PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.groups.iter().all(|&g| g >= 2),
        "--groups: a merge joins at least 2 segments"
    );
    for &group in &args.groups {
        let figures = run(&args, group)?;
        println!("{figures}");
    }
    Ok(())
}

/// Builds `args.segments` segments and merges them `group` at a time.
fn run(args: &Args, group: usize) -> anyhow::Result<serde_json::Value> {
    let fields = CeilingFields::new(false);
    let dir = args.work_dir.join(format!("group-{group}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let index = Index::create_in_dir(&dir, fields.schema.clone())?;
    // A heap no segment fills: each commit makes exactly one segment.
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 1 << 30)?;
    writer.set_merge_policy(Box::new(NoMergePolicy));
    let mut docs = 0u64;
    for segment in 0..args.segments as u64 {
        for i in 0..args.segment_batches {
            let mut n = segment * args.segment_batches + i;
            if args.pool_batches > 0 {
                n %= args.pool_batches;
            }
            let batch = log_batch(
                1,
                n * 1000,
                1000,
                args.body_bytes,
                1_800_000_000_000_000_000,
            );
            for view in records(&batch) {
                let doc = fields.document(&view, 0);
                writer.add_document(doc)?;
                docs += 1;
            }
        }
        writer.commit()?;
    }
    let ids: Vec<_> = index.searchable_segment_ids()?;
    anyhow::ensure!(ids.len() == args.segments, "built {} segments", ids.len());
    let me = std::process::id().to_string();
    let cpu0 = cpu_seconds(&me)?;
    let t0 = Instant::now();
    for chunk in ids.chunks(group) {
        if chunk.len() >= 2 {
            writer.merge(chunk).wait()?;
        }
    }
    let cpu = cpu_seconds(&me)? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    drop(writer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "group": group, "segments": args.segments, "docs": docs,
        "segment_docs": docs / args.segments as u64,
        "merged_docs_each": docs / args.segments as u64 * group as u64,
        "pool_batches": args.pool_batches,
        "merge_cpu_s": cpu, "merge_wall_s": wall,
        "merge_cpu_us_per_doc": cpu * 1e6 / docs as f64,
    }))
}
