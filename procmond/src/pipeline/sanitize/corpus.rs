//! The real-world corpus test: every command line in `corpus.txt` is either
//! benign (must come out unchanged, with no redaction counted) or a secret
//! case (its marked secrets must not survive, and the output must be the
//! expected one). It reports every failure at once, then a summary.
//!
//! Format of `corpus.txt`, one case per line, fields separated by TAB:
//! - `#` starts a comment line; blank lines are ignored.
//! - `B` then the argv: a benign command. `BT`: the same for an argv that
//!   was truncated (`argv_truncated`).
//! - `S` then the argv, each secret marked `{{like this}}`: a secret case.
//!   The expected output is the argv with every mark replaced by
//!   `[REDACTED]`, unless the next line gives it: `=` then the expected argv.
//!   `ST`: the same for a truncated argv.
//! - In a field, `\n` stands for a newline and `\t` for a tab.

use super::{REDACTED, Sanitizer};

const CORPUS: &str = include_str!("corpus.txt");

fn fields(line: &str) -> Vec<String> {
    line.split('\t')
        .skip(1)
        .map(|f| f.replace("\\n", "\n").replace("\\t", "\t"))
        .collect()
}

/// Removes the `{{…}}` marks: (input, expected by default, secrets).
fn unmark(field: &str) -> Result<(String, String, Vec<String>), String> {
    let (mut input, mut expected, mut secrets) = (String::new(), String::new(), Vec::new());
    let mut rest = field;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..]
            .find("}}")
            .map(|c| open + c)
            .ok_or_else(|| format!("unclosed mark in {field:?}"))?;
        let secret = &rest[open + 2..close];
        input.push_str(&rest[..open]);
        input.push_str(secret);
        expected.push_str(&rest[..open]);
        expected.push_str(REDACTED);
        secrets.push(secret.to_string());
        rest = &rest[close + 2..];
    }
    input.push_str(rest);
    expected.push_str(rest);
    Ok((input, expected, secrets))
}

#[test]
fn corpus_has_no_leaks_and_no_benign_changes() {
    let sanitizer = Sanitizer::default();
    let mut failures = Vec::new();
    let (mut secret_cases, mut secret_values, mut benign) = (0, 0, 0);
    let mut lines = CORPUS.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let no = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let kind = line.split('\t').next().unwrap_or_default();
        let truncated = kind.ends_with('T');
        match kind {
            "B" | "BT" => {
                benign += 1;
                let argv = fields(line);
                let mut out = argv.clone();
                let n = sanitizer.sanitize_argv_truncated(&mut out, truncated);
                if out != argv || n != 0 {
                    failures.push(format!("line {no}: benign command changed ({n} redactions):\n  in:  {argv:?}\n  out: {out:?}"));
                }
            }
            "S" | "ST" => {
                secret_cases += 1;
                let (mut argv, mut expected, mut secrets) = (Vec::new(), Vec::new(), Vec::new());
                for f in fields(line) {
                    match unmark(&f) {
                        Ok((i, e, s)) => {
                            argv.push(i);
                            expected.push(e);
                            secrets.extend(s);
                        }
                        Err(e) => failures.push(format!("line {no}: {e}")),
                    }
                }
                if let Some((_, next)) = lines.peek()
                    && next.starts_with("=\t")
                {
                    expected = fields(next);
                    lines.next();
                }
                secret_values += secrets.len();
                if secrets.is_empty() {
                    failures.push(format!("line {no}: a secret case marks no secret"));
                }
                let mut out = argv.clone();
                sanitizer.sanitize_argv_truncated(&mut out, truncated);
                for s in &secrets {
                    if out.iter().any(|a| a.contains(s.as_str())) {
                        failures.push(format!("line {no}: LEAK of {s:?}:\n  out: {out:?}"));
                    }
                    if expected.iter().any(|a| a.contains(s.as_str())) {
                        failures.push(format!(
                            "line {no}: the expected output holds the secret {s:?}"
                        ));
                    }
                }
                if out != expected {
                    failures.push(format!("line {no}: unexpected output:\n  in:   {argv:?}\n  out:  {out:?}\n  want: {expected:?}"));
                }
                if out.len() != argv.len() {
                    failures.push(format!("line {no}: argument count changed"));
                }
            }
            other => failures.push(format!("line {no}: unknown kind {other:?}")),
        }
    }
    println!(
        "sanitizer corpus: {secret_cases} secret cases ({secret_values} secret values), {benign} benign commands, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        secret_cases + benign >= 150,
        "the corpus must hold at least 150 command lines"
    );
}
