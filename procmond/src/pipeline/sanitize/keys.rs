//! Key classification: whether a name (`DB_PASSWORD`, `--api-key`,
//! `"token":`, `X-Auth-Token`) says its value is a secret, and which values
//! are never secret (booleans, `$VAR` references, paths for file-valued keys).
//!
//! Keys are compared in upper case with `-` and `.` read as `_`, the spelling
//! of the tables in `rules.rs`, on a stack copy (no allocation).

use super::rules;

/// Whether a key (`DB_PASSWORD`, `--api-key`, `auth.token`) names a secret.
pub fn key_secret(key: &str, extra: &[String]) -> bool {
    classify(key, extra, true).is_some()
}

/// Like `key_secret`, but the secret word must end the key (`X-Auth-Token`,
/// not `token-service`): used for unquoted `key:value`, where the text
/// before a colon is as often an image or host name.
pub fn key_secret_at_end(key: &str, extra: &[String]) -> bool {
    classify(key, extra, true) == Some(true)
}

/// Only the strong key parts (for single-dash flags such as `-password`).
pub fn key_secret_strong(key: &str, extra: &[String]) -> bool {
    classify(key, extra, false).is_some()
}

/// `None` when not secret; `Some(at_end)` when secret, `at_end` telling
/// whether the secret word ends the key.
fn classify(key: &str, extra: &[String], weak: bool) -> Option<bool> {
    let k = key.trim_start_matches('-').as_bytes();
    if k.is_empty() || starts_with_ic(k, b"no-") || starts_with_ic(k, b"no_") {
        return None;
    }
    // Upper case, `-` and `.` as `_`: the tables' spelling. Longer keys are cut
    // (a secret word past 96 bytes of key is not seen).
    let mut buf = [0u8; 96];
    let n = k.len().min(buf.len());
    for (d, s) in buf.iter_mut().zip(k) {
        *d = if is_sep(*s) {
            b'_'
        } else {
            s.to_ascii_uppercase()
        };
    }
    let k = &buf[..n];
    if let Some(e) = extra.iter().find(|e| find_bytes(k, e.as_bytes()).is_some()) {
        return Some(k.ends_with(e.as_bytes()));
    }
    if rules::SECRET_KEYS_EXACT.iter().any(|e| k == e.as_bytes()) {
        return Some(true);
    }
    if rules::BENIGN_KEY_PARTS
        .iter()
        .any(|p| find_bytes(k, p.as_bytes()).is_some())
    {
        return None;
    }
    let last = k.rsplit(|b| *b == b'_').next().unwrap_or(k);
    if rules::BENIGN_LAST_SEGMENTS
        .iter()
        .any(|s| last == s.as_bytes())
    {
        return None;
    }
    let mut found = None;
    for p in rules::SECRET_KEY_PARTS {
        if find_bytes(k, p.as_bytes()).is_some() {
            if k.ends_with(p.as_bytes()) {
                return Some(true);
            }
            found = Some(false);
        }
    }
    if found.is_some() {
        return found;
    }
    let weak_hit = weak
        && k != b"PWD"
        && rules::SECRET_LAST_SEGMENTS
            .iter()
            .any(|s| last == s.as_bytes());
    weak_hit.then_some(true)
}

fn is_sep(b: u8) -> bool {
    matches!(b, b'_' | b'-' | b'.')
}

/// Substring search for short texts (cheaper here than `str::find`'s setup).
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    (0..=last_start).find(|&i| hay[i] == first && &hay[i + 1..i + needle.len()] == rest)
}

/// Whether `key` holds one of `parts` (upper case, `_` for any separator).
fn has_key_part(key: &str, parts: &[&str]) -> bool {
    let mut buf = [0u8; 96];
    let k = key.as_bytes();
    let n = k.len().min(buf.len());
    for (d, s) in buf.iter_mut().zip(k) {
        *d = if is_sep(*s) {
            b'_'
        } else {
            s.to_ascii_uppercase()
        };
    }
    parts
        .iter()
        .any(|p| find_bytes(&buf[..n], p.as_bytes()).is_some())
}

pub fn starts_with_ic(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Bytes of a key: `[A-Za-z0-9_.-]`.
pub fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || is_sep(b)
}

pub fn is_auth_header(name: &str) -> bool {
    let n = name.strip_prefix("-H").unwrap_or(name);
    rules::AUTH_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name) || h.eq_ignore_ascii_case(n))
}

pub fn is_secret_header(name: &str, extra: &[String]) -> bool {
    let n = name.strip_prefix("-H").unwrap_or(name);
    rules::SECRET_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name) || h.eq_ignore_ascii_case(n))
        || key_secret_at_end(name, extra)
}

pub fn is_scheme(word: &str) -> bool {
    rules::AUTH_SCHEMES
        .iter()
        .any(|s| s.eq_ignore_ascii_case(word))
}

/// Values a generic rule never redacts: booleans, shell variable references
/// inside snippets, and paths when `path_ok` (see `path_valued`).
pub fn benign_value(path_ok: bool, value: &str, snippet: bool) -> bool {
    rules::BENIGN_VALUES
        .iter()
        .any(|v| v.eq_ignore_ascii_case(value))
        || (snippet && is_var_ref(value))
        || (path_ok && is_path(value))
}

/// Whether a key usually names a file (`GOOGLE_APPLICATION_CREDENTIALS`, `--private-key`).
pub fn path_valued(key: &str) -> bool {
    has_key_part(key, rules::PATH_VALUE_KEY_PARTS)
}

fn is_path(v: &str) -> bool {
    ["/", "~/", "./", "../"].iter().any(|p| v.starts_with(p))
}

/// `$NAME`, `${NAME}`, `"$NAME"`: inside a shell snippet the secret is not there.
pub fn is_var_ref(t: &str) -> bool {
    let t = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t);
    let Some(r) = t.strip_prefix('$') else {
        return false;
    };
    let r = r
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(r);
    !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
