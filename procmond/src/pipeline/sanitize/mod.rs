//! Secret redaction (docs/security.md "Secret sanitization"), applied before an
//! event leaves the process.
//!
//! Command lines are where secrets leak. The sanitizer rewrites argv in place
//! so that nothing downstream (WAL, bus, sinks, logs) ever holds the secret.
//! Which flag carries a secret depends on the program, so argv is read like a
//! shell would: the program is argv[0]'s basename (or the word after a wrapper
//! such as `sudo`, or a known program run by another one), elements holding a
//! command line are split into commands, and each word is matched against the
//! rules in `rules.rs`. It errs towards redacting, but never takes a flag for
//! a value. Config patterns extend the built-in ones, never replace them.

mod code;
mod command;
mod keys;
mod program;
mod rules;
mod scan;
mod shapes;
mod shell;

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use command::{Cmd, Ctx, Word};
use scan::Edit;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Redacts secrets from argv. Cheap to clone; built once from config.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    /// Extra flags (lower case), secret for every program.
    flags: Vec<String>,
    /// Extra key parts (upper case), like the built-in `PASSWORD`.
    keys: Vec<String>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

impl Sanitizer {
    /// Built-in rules plus `extra_flags` (exact flags such as `--db-pass`,
    /// for every program) and `extra_keys` (parts of key names such as `SESSION`).
    pub fn new(extra_flags: &[String], extra_keys: &[String]) -> Self {
        Self {
            flags: extra_flags.iter().map(|f| f.to_ascii_lowercase()).collect(),
            keys: extra_keys
                .iter()
                .map(|k| k.to_ascii_uppercase().replace(['-', '.'], "_"))
                .collect(),
        }
    }

    /// Rewrites secrets in `argv`; returns how many values were redacted.
    /// The number of arguments never changes.
    pub fn sanitize_argv(&self, argv: &mut [String]) -> usize {
        self.sanitize_argv_truncated(argv, false)
    }

    /// Like `sanitize_argv`, for an argv that was cut (`argv_truncated`): a
    /// URL cut before its `@` at the end of the last argument loses all
    /// after `://`, and a token prefix cut short still counts.
    pub fn sanitize_argv_truncated(&self, argv: &mut [String], truncated: bool) -> usize {
        let edits = {
            let args: &[String] = argv;
            let mut ctx = Ctx {
                flags: &self.flags,
                keys: &self.keys,
                edits: Vec::new(),
            };
            let mut cmd = Cmd::default();
            for (i, a) in args.iter().enumerate() {
                let word = Word {
                    arg: i,
                    at: 0,
                    text: a,
                    snippet: false,
                };
                ctx.word(&mut cmd, word, 0);
            }
            ctx.finish(&mut cmd);
            for (i, a) in args.iter().enumerate() {
                let last = truncated && i + 1 == args.len();
                scan::anywhere(a, last, &mut ctx.sink(i, 0));
            }
            ctx.edits
        };
        if edits.is_empty() {
            return 0;
        }
        apply(argv, edits)
    }
}

/// Applies the edits (merging overlaps) and returns how many ranges were redacted.
fn apply(argv: &mut [String], mut edits: Vec<Edit>) -> usize {
    edits.sort_unstable();
    let mut count = 0;
    let mut i = 0;
    while i < edits.len() {
        let arg = edits[i].arg;
        let Some(s) = argv.get(arg) else {
            break;
        };
        let mut out = String::with_capacity(s.len() + REDACTED.len());
        let mut pos = 0;
        while i < edits.len() && edits[i].arg == arg {
            let start = edits[i].start.max(pos);
            let mut end = edits[i].end;
            i += 1;
            while i < edits.len() && edits[i].arg == arg && edits[i].start <= end {
                end = end.max(edits[i].end);
                i += 1;
            }
            let start = floor_boundary(s, start.min(s.len())).max(pos);
            let end = ceil_boundary(s, end.min(s.len()));
            if start >= end {
                continue;
            }
            out.push_str(&s[pos..start]);
            out.push_str(REDACTED);
            pos = end;
            count += 1;
        }
        out.push_str(&s[pos..]);
        argv[arg] = out;
    }
    count
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}
