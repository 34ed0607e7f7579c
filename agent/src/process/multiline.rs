//! Multiline joining: consecutive lines that belong together (a Java stack trace, a
//! pretty-printed message) leave as one record.
//!
//! Two ways to say where a record starts, as in Fluent Bit and the OTel filelog
//! receiver: `start` (a line matching it begins a record; other lines are appended) or
//! `continue` (a line matching it is appended to the record before; others begin one).
//! A pending record is flushed when the next one starts, when it has waited `timeout`
//! for another line, when it reaches `max_lines` or `max_bytes` (counted), and when its
//! file is released.
//!
//! Checkpoints: each line carries its stream offsets; a flushed record's offset is the
//! end of its last line, and while a record is pending the file's checkpoint may not pass
//! the start of its first line ([`Assembler::pending_start`]), so a restart reads the
//! unfinished record again instead of losing or splitting it.

use std::time::{Duration, Instant};

use regex::Regex;

/// How long a pending record waits for another line: long enough for a stack trace
/// written in several `write`s, short enough that the last record of a burst is not
/// held back noticeably (Fluent Bit's `flush_timeout` is 2 s, the OTel filelog
/// receiver's `force_flush_period` 500 ms).
pub(crate) const DEFAULT_TIMEOUT: &str = "1s";
/// Lines per record: a deep Java stack trace is a few hundred lines; the OTel filelog
/// receiver's default `max_log_size` is bytes only, this bounds the other way too.
pub(crate) const DEFAULT_MAX_LINES: usize = 1000;

/// Which lines begin a record.
#[derive(Clone, Debug)]
pub(crate) enum Mode {
    /// A line matching the pattern starts a record; other lines are continuations.
    Start(Regex),
    /// A line matching the pattern continues the record before; others start one.
    Continue(Regex),
}

/// The multiline settings of one input.
#[derive(Clone, Debug)]
pub(crate) struct MultilineConfig {
    pub(crate) mode: Mode,
    pub(crate) timeout: Duration,
    pub(crate) max_lines: usize,
    pub(crate) max_bytes: usize,
}

/// A finished record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Its lines joined with `\n`.
    pub(crate) text: String,
    /// Stream offset just past its last line: what a checkpoint may record.
    pub(crate) end: u64,
    pub(crate) lines: usize,
    /// Flushed because it reached `max_lines` or `max_bytes`.
    pub(crate) full: bool,
    /// Flushed because it waited `timeout`.
    pub(crate) timed_out: bool,
}

#[derive(Debug)]
struct Pending {
    text: String,
    start: u64,
    end: u64,
    lines: usize,
    last_line_at: Instant,
}

/// The per-file assembler.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    pending: Option<Pending>,
}

impl Assembler {
    /// Offset of the first line of the record being assembled, if any: the file's
    /// checkpoint must not go past it.
    pub(crate) fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.start)
    }

    /// Takes one line spanning `start..end` of the stream; emits the records it
    /// completes.
    pub(crate) fn push(
        &mut self,
        config: &MultilineConfig,
        line: String,
        start: u64,
        end: u64,
        now: Instant,
        mut emit: impl FnMut(Record),
    ) {
        let continues = match &config.mode {
            Mode::Start(re) => !re.is_match(&line),
            Mode::Continue(re) => re.is_match(&line),
        };
        match &mut self.pending {
            Some(p) if continues => {
                if p.text.len() + 1 + line.len() > config.max_bytes {
                    // Full: what is held leaves, this line begins the next part.
                    if let Some(r) = self.take(true, false) {
                        emit(r);
                    }
                    self.begin(line, start, end, now);
                } else {
                    p.text.push('\n');
                    p.text.push_str(&line);
                    p.end = end;
                    p.lines += 1;
                    p.last_line_at = now;
                }
            }
            _ => {
                if let Some(r) = self.take(false, false) {
                    emit(r);
                }
                self.begin(line, start, end, now);
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.lines >= config.max_lines)
            && let Some(r) = self.take(true, false)
        {
            emit(r);
        }
    }

    /// Emits the pending record if it has waited `timeout` for another line.
    pub(crate) fn flush_stale(
        &mut self,
        config: &MultilineConfig,
        now: Instant,
        emit: impl FnOnce(Record),
    ) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.last_line_at) >= config.timeout)
            && let Some(r) = self.take(false, true)
        {
            emit(r);
        }
    }

    /// Emits the pending record whatever its age (its file is released).
    pub(crate) fn finish(&mut self, emit: impl FnOnce(Record)) {
        if let Some(r) = self.take(false, false) {
            emit(r);
        }
    }

    fn begin(&mut self, line: String, start: u64, end: u64, now: Instant) {
        self.pending = Some(Pending {
            text: line,
            start,
            end,
            lines: 1,
            last_line_at: now,
        });
    }

    fn take(&mut self, full: bool, timed_out: bool) -> Option<Record> {
        self.pending.take().map(|p| Record {
            text: p.text,
            end: p.end,
            lines: p.lines,
            full,
            timed_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Encoding;
    use crate::lines::Splitter;
    use proptest::prelude::*;

    fn config(mode: Mode) -> MultilineConfig {
        MultilineConfig {
            mode,
            timeout: Duration::from_secs(1),
            max_lines: 1000,
            max_bytes: 1 << 20,
        }
    }

    /// Splits `data` fed in `chunks`, assembles, finishes; returns the records.
    fn assemble(config: &MultilineConfig, data: &[u8], chunks: &[usize]) -> Vec<Record> {
        let mut splitter = Splitter::new(0, 1 << 20, Encoding::Utf8);
        let mut asm = Assembler::default();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut at = 0;
        let mut sizes = chunks.iter().copied();
        while at < data.len() {
            let n = sizes.next().unwrap_or(data.len()).clamp(1, data.len() - at);
            splitter.feed(&data[at..at + n], |p| {
                let text = String::from_utf8_lossy(p.bytes).into_owned();
                asm.push(config, text, p.start, p.end, now, |r| out.push(r));
            });
            // The checkpoint never passes a pending record's first line.
            let safe = asm.pending_start().unwrap_or(splitter.committed());
            assert!(safe <= splitter.committed());
            if let Some(last) = out.last() {
                assert!(last.end <= safe);
            }
            at += n;
        }
        asm.finish(|r| out.push(r));
        out
    }

    const TRACE: &str = "2026-11-26 ERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\n2026-11-26 INFO next\n";

    #[test]
    fn a_java_stack_trace_is_one_record_both_ways() {
        let by_start = config(Mode::Start(Regex::new(r"^\d{4}-\d\d-\d\d ").unwrap()));
        let records = assemble(&by_start, TRACE.as_bytes(), &[]);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].lines, 4);
        assert!(records[0].text.ends_with("(B.java:2)"));
        assert_eq!(
            records[0].end,
            TRACE.find("2026-11-26 INFO").unwrap() as u64
        );
        assert_eq!(records[1].end, TRACE.len() as u64);
        let by_continue = config(Mode::Continue(
            Regex::new(r"^(\s+at |java\.|Caused by:)").unwrap(),
        ));
        assert_eq!(assemble(&by_continue, TRACE.as_bytes(), &[]), records);
    }

    #[test]
    fn timeout_and_limits_flush_and_say_why() {
        let mut c = config(Mode::Start(Regex::new("^S").unwrap()));
        c.max_lines = 3;
        let t0 = Instant::now();
        let mut asm = Assembler::default();
        let mut out = Vec::new();
        for (i, line) in ["S1", "a", "b", "c", "d"].iter().enumerate() {
            let i = i as u64;
            asm.push(&c, line.to_string(), i * 3, i * 3 + 3, t0, |r| out.push(r));
        }
        assert_eq!(out.len(), 1);
        assert!(out[0].full && out[0].lines == 3);
        assert_eq!(asm.pending_start(), Some(9));
        asm.flush_stale(&c, t0 + Duration::from_millis(999), |r| out.push(r));
        assert_eq!(out.len(), 1, "not stale yet");
        asm.flush_stale(&c, t0 + Duration::from_secs(1), |r| out.push(r));
        assert_eq!(out.len(), 2);
        assert!(out[1].timed_out && out[1].text == "c\nd" && out[1].end == 15);
        assert_eq!(asm.pending_start(), None);

        let mut c = config(Mode::Start(Regex::new("^S").unwrap()));
        c.max_bytes = 8;
        let mut out = Vec::new();
        let mut asm = Assembler::default();
        for line in ["S123", "456", "789"] {
            asm.push(&c, line.to_string(), 0, 0, t0, |r| out.push(r));
        }
        asm.finish(|r| out.push(r));
        let texts: Vec<_> = out.iter().map(|r| (r.text.as_str(), r.full)).collect();
        assert_eq!(texts, vec![("S123\n456", true), ("789", false)]);
    }

    proptest! {
        /// Whatever the chunking: the same records, each ending where a line ends, the
        /// lines all there exactly once and in order.
        #[test]
        fn chunking_does_not_change_the_records(
            lines in proptest::collection::vec(prop_oneof![Just("S x"), Just("  at y"), Just("z"), Just("")], 0..40),
            chunks in proptest::collection::vec(1usize..30, 0..40),
            continue_mode in any::<bool>(),
        ) {
            let mode = if continue_mode {
                Mode::Continue(Regex::new(r"^\s").unwrap())
            } else {
                Mode::Start(Regex::new("^S").unwrap())
            };
            let c = config(mode);
            let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let whole = assemble(&c, data.as_bytes(), &[]);
            let chunked = assemble(&c, data.as_bytes(), &chunks);
            prop_assert_eq!(&whole, &chunked);
            let rejoined: Vec<String> = whole.iter().map(|r| r.text.clone()).collect();
            prop_assert_eq!(rejoined.join("\n"), lines.join("\n"));
            prop_assert_eq!(whole.iter().map(|r| r.lines).sum::<usize>(), lines.len());
            for r in &whole {
                prop_assert!(r.end == 0 || data.as_bytes()[r.end as usize - 1] == b'\n');
            }
            prop_assert_eq!(whole.last().map(|r| r.end).unwrap_or(0), data.len() as u64);
        }
    }
}
