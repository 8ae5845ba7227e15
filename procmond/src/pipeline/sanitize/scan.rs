//! Context-free scanners: what is secret whatever program runs.
//!
//! Pairs inside a word (`KEY=v`, JSON, `a=b,password=c`, query strings),
//! header lines, URL userinfo, token shapes, PEM private keys and the cut URL
//! at the end of a truncated argv. Key names are judged by `keys.rs`.
//! All of them work on bytes and cut only next to ASCII delimiters, so every
//! range they report lies on char boundaries.

use super::keys::{
    benign_value, find_bytes, is_auth_header, is_key_byte, is_scheme, is_secret_header, is_var_ref,
    key_secret, path_valued, starts_with_ic,
};
use super::rules::{self, Body};

/// Where redactions of one piece of text go.
#[derive(Debug)]
pub struct Sink<'e> {
    pub edits: &'e mut Vec<Edit>,
    pub arg: usize,
    pub at: usize,
}

/// A byte range of one argument to replace with `[REDACTED]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edit {
    pub arg: usize,
    pub start: usize,
    pub end: usize,
}

impl Sink<'_> {
    /// Redacts `start..end` of the text this sink was made for.
    pub fn redact(&mut self, start: usize, end: usize) {
        if start < end {
            self.edits.push(Edit {
                arg: self.arg,
                start: self.at + start,
                end: self.at + end,
            });
        }
    }
}

/// What a word announces about the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// A secret `key:` ends the word: the next word is its value.
    Value,
    /// `Authorization:` ends the word: a scheme or the credential follows.
    Header,
    /// An auth scheme ends the word: the credential follows.
    Credential,
}

// ---------------------------------------------------------------- values

/// The range of a whole value: inside its quotes when it is one quoted
/// string followed only by punctuation (`"pw"},`), else all of it.
pub fn whole_value(t: &str) -> (usize, usize) {
    let b = t.as_bytes();
    if let Some(&q) = b.first()
        && (q == b'"' || q == b'\'')
        && let Some(close) = closing_quote(b, 1, q)
        && !b[close + 1..].iter().any(u8::is_ascii_alphanumeric)
    {
        return (1, close);
    }
    (0, t.len())
}

/// Index of the quote closing one opened before `from` (`\` escapes in `"`).
fn closing_quote(b: &[u8], from: usize, q: u8) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        if b[i] == b'\\' && q == b'"' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Oracle logon `user/PASS[@connect]` → the range of PASS.
pub fn oracle_logon(t: &str) -> Option<(usize, usize)> {
    let b = t.as_bytes();
    let slash = b.iter().position(|&c| c == b'/')?;
    let user_ok = slash > 0
        && b[..slash]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'#' | b'"'));
    if !user_ok {
        return None;
    }
    let end = b
        .iter()
        .rposition(|&c| c == b'@')
        .filter(|&a| a > slash)
        .unwrap_or(b.len());
    Some((slash + 1, end))
}

// ---------------------------------------------------------------- pairs

/// Redacts the values of secret pairs inside one word: `KEY=v`,
/// `--flag=v`, `a=1,password=v`, `?token=v&x=1`, `{"password":"v"}`,
/// `token:v`, `Authorization:v`. `block` is set for a flag word holding
/// spaces (`--password=correct horse`): values may then contain spaces and
/// follow `key: `. Returns what a trailing `key:` announces.
pub fn pairs(
    t: &str,
    extra: &[String],
    snippet: bool,
    block: bool,
    out: &mut Sink,
) -> Option<Announce> {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let sep = b[i];
        if sep != b'=' && sep != b':' {
            i += 1;
            continue;
        }
        let Some((kstart, kend, quote)) = key_before(b, i) else {
            i += 1;
            continue;
        };
        let key = &t[kstart..kend];
        let (secret, header) = classify(b, i, kstart, quote, key, extra);
        if !secret {
            i += 1;
            continue;
        }
        let mut v = i + 1;
        if block && sep == b':' {
            while v < b.len() && b[v] == b' ' {
                v += 1;
            }
        }
        if v >= b.len() {
            return match (sep, header) {
                (b':', true) => Some(Announce::Header),
                (b':', false) => Some(Announce::Value),
                _ => None,
            };
        }
        let (vs, ve, next) = value_span(b, v, block);
        let value = &t[vs..ve];
        if header {
            if ve == b.len() && is_scheme(value) {
                return Some(Announce::Credential);
            }
            let skip = auth_skip(value);
            if !(snippet && is_var_ref(&value[skip..])) {
                out.redact(vs + skip, ve);
            }
        } else if !(benign_value(path_valued(key), value, snippet)
            || (sep == b':' && quote.is_none() && value.starts_with('/')))
        {
            out.redact(vs, ve);
        }
        i = next.max(i + 1);
    }
    None
}

/// The key ending at separator `i`: `(start, end, quote)`, the quote
/// being the one around it (`"key":`), if any and matched.
fn key_before(b: &[u8], i: usize) -> Option<(usize, usize, Option<u8>)> {
    let quote = (i > 0 && matches!(b[i - 1], b'"' | b'\'')).then(|| b[i - 1]);
    let kend = if quote.is_some() { i - 1 } else { i };
    let mut kstart = kend;
    while kstart > 0 && is_key_byte(b[kstart - 1]) {
        kstart -= 1;
    }
    let quoted_ok = match quote {
        Some(q) => kstart > 0 && b[kstart - 1] == q,
        None => true,
    };
    (kstart != kend && quoted_ok).then_some((kstart, kend, quote))
}

/// Whether `key` before separator `i` names a secret, and whether it is an
/// authorization header (whose value may start with a scheme). `key=` is
/// judged by the key; `key:` only where a key can start (after `{`, `,`,
/// … or quoted), and never as `scheme://`.
fn classify(
    b: &[u8],
    i: usize,
    kstart: usize,
    quote: Option<u8>,
    key: &str,
    extra: &[String],
) -> (bool, bool) {
    if b[i] == b'=' {
        return (key_secret(key, extra), false);
    }
    let bounded = quote.is_some()
        || kstart == 0
        || matches!(
            b[kstart - 1],
            b'{' | b',' | b';' | b'&' | b'?' | b'(' | b'[' | b'=' | b' '
        );
    if !bounded || b.get(i + 1) == Some(&b'/') {
        (false, false)
    } else if is_auth_header(key) {
        (true, true)
    } else {
        let s = is_secret_header(key, extra) || (quote.is_some() && key_secret(key, extra));
        (s, false)
    }
}

/// `(start, end, resume)` of a value starting at `v`. Quoted: up to the
/// closing quote. Else up to the end of the word, or to a `,` `&` `;` that
/// starts another `key=`/`key:` pair (mount options, query strings).
fn value_span(b: &[u8], v: usize, block: bool) -> (usize, usize, usize) {
    let q = b[v];
    if q == b'"' || q == b'\'' {
        return match closing_quote(b, v + 1, q) {
            Some(c) => (v + 1, c, c + 1),
            None => (v + 1, b.len(), b.len()),
        };
    }
    let mut j = v;
    while j < b.len() {
        if matches!(b[j], b',' | b'&' | b';') && starts_pair(&b[j + 1..]) {
            return (v, j, j);
        }
        if !block && b[j] == b' ' {
            break;
        }
        j += 1;
    }
    (v, j, j)
}

/// Whether `b` starts with `key=`, `key:` or a quote.
fn starts_pair(b: &[u8]) -> bool {
    let b = b.strip_prefix(b" ").unwrap_or(b);
    if matches!(b.first(), Some(b'"' | b'\'')) {
        return true;
    }
    let n = b.iter().take_while(|c| is_key_byte(**c)).count();
    n > 0 && matches!(b.get(n), Some(b'=' | b':'))
}

/// Offset of the credential in an Authorization value (`Bearer abc` → 7);
/// the whole length when only a scheme is left.
fn auth_skip(value: &str) -> usize {
    let b = value.as_bytes();
    let n = b
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(b.len());
    if !is_scheme(&value[..n]) {
        return 0;
    }
    n + b[n..]
        .iter()
        .take_while(|c| c.is_ascii_whitespace())
        .count()
}

/// A text that is one header line, `Name: value` (as given to `curl -H`):
/// redacts the value of a secret header, keeping an Authorization scheme.
/// Returns whether the text was a secret header line.
pub fn header_line(t: &str, extra: &[String], snippet: bool, out: &mut Sink) -> bool {
    let s = t.trim_start();
    let off = t.len() - s.len();
    let b = s.as_bytes();
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
        .count();
    if n == 0 || b.get(n) != Some(&b':') {
        return false;
    }
    let name = &s[..n];
    let auth = is_auth_header(name);
    if !auth && !is_secret_header(name, extra) {
        return false;
    }
    let v = n
        + 1
        + b[n + 1..]
            .iter()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
    let value = &s[v..];
    let start = if auth { v + auth_skip(value) } else { v };
    if !(snippet && is_var_ref(s[start..].trim_end())) {
        out.redact(off + start, t.len());
    }
    true
}

/// A text starting with a secret `KEY=` (`PASSWORD=correct horse` as one
/// argument): the value is all the rest. Returns whether it applied.
pub fn leading_assignment(t: &str, extra: &[String], snippet: bool, out: &mut Sink) -> bool {
    let n = t.bytes().take_while(|c| is_key_byte(*c)).count();
    if n == 0 || t.as_bytes().get(n) != Some(&b'=') || !key_secret(&t[..n], extra) {
        return false;
    }
    let value = &t[n + 1..];
    if !benign_value(path_valued(&t[..n]), value, snippet) {
        let (s, e) = whole_value(value);
        out.redact(n + 1 + s, n + 1 + e);
    }
    true
}

// ---------------------------------------------------------------- anywhere

/// Scans a whole argument for what is secret wherever it appears: URL
/// userinfo, `user:pass@host`, token shapes and PEM private keys; and, for the
/// last argument of a truncated argv, a URL cut before its `@`.
pub fn anywhere(t: &str, truncated_last: bool, out: &mut Sink) {
    let b = t.as_bytes();
    if b.contains(&b'@') {
        url_userinfo(t, out);
        bare_userinfo(b, out);
    }
    if b.len() > 12 && b.contains(&b'/') {
        path_secrets(b, out);
    }
    tokens(b, truncated_last, out);
    if b.len() > 16 && b.contains(&b'-') {
        private_keys(t, out);
    }
    if truncated_last && let Some(p) = t.rfind("://") {
        let rest = &b[p + 3..];
        let cut = !rest
            .iter()
            .any(|&c| matches!(c, b'/' | b'@' | b'"' | b'\'') || c.is_ascii_whitespace());
        if cut {
            out.redact(p + 3, b.len());
        }
    }
}

/// `scheme://user:pass@host` → `user:[REDACTED]@`; `scheme://token@host` → `[REDACTED]@`.
fn url_userinfo(t: &str, out: &mut Sink) {
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(p) = find_bytes(&b[from..], b"://") {
        let a = from + p + 3;
        let end = b[a..]
            .iter()
            .position(|&c| {
                matches!(
                    c,
                    b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\' | b'|'
                ) || c.is_ascii_whitespace()
            })
            .map_or(b.len(), |n| a + n);
        if let Some(at) = b[a..end].iter().rposition(|&c| c == b'@') {
            let at = a + at;
            match b[a..at].iter().position(|&c| c == b':') {
                Some(c) => out.redact(a + c + 1, at),
                None => out.redact(a, at),
            }
        }
        from = end.max(a);
    }
}

/// Whether `c` ends a URL (or its host, with `/`).
fn ends_url(c: u8) -> bool {
    matches!(
        c,
        b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\' | b'|'
    ) || c.is_ascii_whitespace()
}

/// Webhook URLs holding their credential in the path (`rules::PATH_SECRETS`).
fn path_secrets(b: &[u8], out: &mut Sink) {
    let mut from = 0;
    while let Some(p) = find_bytes(&b[from..], b"://") {
        let a = from + p + 3;
        let hend = b[a..]
            .iter()
            .position(|&c| c == b'/' || ends_url(c))
            .map_or(b.len(), |n| a + n);
        from = hend.max(a);
        let host = &b[a..hend];
        let host = host
            .iter()
            .rposition(|&c| c == b'@')
            .map_or(host, |at| &host[at + 1..]);
        let host = host
            .iter()
            .position(|&c| c == b':')
            .map_or(host, |c| &host[..c]);
        let path = &b[hend..];
        for ps in rules::PATH_SECRETS {
            let host_ok = ps.hosts.iter().any(|h| {
                let h = h.as_bytes();
                host.len() >= h.len()
                    && host[host.len() - h.len()..].eq_ignore_ascii_case(h)
                    && (host.len() == h.len() || host[host.len() - h.len() - 1] == b'.')
            });
            if !host_ok || !path.starts_with(ps.prefix.as_bytes()) {
                continue;
            }
            let mut s = hend + ps.prefix.len();
            let mut left = ps.keep;
            let seg_end = |s: usize| {
                b[s..]
                    .iter()
                    .position(|&c| c == b'/' || ends_url(c))
                    .map_or(b.len(), |n| s + n)
            };
            while left > 0 {
                let e = seg_end(s);
                if b.get(e) != Some(&b'/') {
                    break;
                }
                s = e + 1;
                left -= 1;
            }
            if left > 0 {
                break;
            }
            let e = seg_end(s);
            if let Some(c) = ps.after {
                s = b[s..e]
                    .iter()
                    .position(|&x| x == c)
                    .map_or(e, |i| s + i + 1);
            }
            out.redact(s, e);
            break;
        }
    }
}

/// `user:pass@host` without a scheme (`HTTP_PROXY=user:pass@proxy:3128`).
fn bare_userinfo(b: &[u8], out: &mut Sink) {
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let start = b[..at]
            .iter()
            .rposition(|&c| {
                c.is_ascii_whitespace()
                    || matches!(
                        c,
                        b'"' | b'\'' | b'=' | b',' | b';' | b'(' | b'<' | b'>' | b'|' | b'&'
                    )
            })
            .map_or(0, |p| p + 1);
        let span = &b[start..at];
        let Some(colon) = span.iter().position(|&c| c == b':') else {
            continue;
        };
        let user = &span[..colon];
        let after = &b[at + 1..];
        let plausible = !span.contains(&b'/')
            && !user.is_empty()
            && user.iter().all(|&c| {
                c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
            })
            && !rules::NOT_USERINFO
                .iter()
                .any(|s| user.eq_ignore_ascii_case(s.as_bytes()))
            && after
                .first()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'[')
            && !rules::DIGEST_PREFIXES
                .iter()
                .any(|p| starts_with_ic(after, p.as_bytes()));
        if plausible {
            out.redact(start + colon + 1, at);
        }
    }
}

fn in_body(body: Body, c: u8) -> bool {
    match body {
        Body::UpperAlnum => c.is_ascii_uppercase() || c.is_ascii_digit(),
        Body::Alnum => c.is_ascii_alphanumeric(),
        Body::Word => c.is_ascii_alphanumeric() || c == b'_',
        Body::Dashed => c.is_ascii_alphanumeric() || c == b'-',
        Body::Base64Url => c.is_ascii_alphanumeric() || c == b'-' || c == b'_',
    }
}

fn run(b: &[u8], from: usize, body: Body) -> usize {
    b.get(from..)
        .map_or(0, |s| s.iter().take_while(|c| in_body(body, **c)).count())
}

/// Token shapes (`rules::TOKEN_SHAPES`) and JWTs, at word boundaries. In the
/// last argument of a truncated argv a prefix cut short still counts.
fn tokens(b: &[u8], truncated_last: bool, out: &mut Sink) {
    let mut i = 0;
    'scan: while i < b.len() {
        if !rules::TOKEN_FIRST_BYTES[usize::from(b[i])]
            || (i > 0 && b[i - 1].is_ascii_alphanumeric())
        {
            i += 1;
            continue;
        }
        for shape in rules::TOKEN_SHAPES {
            if !b[i..].starts_with(shape.prefix.as_bytes()) {
                continue;
            }
            let s = i + shape.prefix.len();
            let n = run(b, s, shape.body);
            let bounded_ok = shape.max == 0
                || (n <= shape.max && !b.get(s + n).is_some_and(u8::is_ascii_alphanumeric));
            let cut = truncated_last && n > 0 && s + n == b.len();
            if (n >= shape.min && bounded_ok) || cut {
                out.redact(s, s + n);
                i = s + n;
                continue 'scan;
            }
        }
        if b[i..].starts_with(b"eyJ") {
            let j1 = i + run(b, i, Body::Base64Url);
            if j1 - i >= 10 && b.get(j1) == Some(&b'.') && b[j1 + 1..].starts_with(b"eyJ") {
                let j2 = j1 + 1 + run(b, j1 + 1, Body::Base64Url);
                if j2 - j1 > 10 && b.get(j2) == Some(&b'.') {
                    let j3 = j2 + 1 + run(b, j2 + 1, Body::Base64Url);
                    out.redact(i + 3, j3);
                    i = j3;
                    continue;
                }
            }
        }
        i += 1;
    }
}

/// `-----BEGIN … PRIVATE KEY-----` → the body, up to `-----END` or the end.
fn private_keys(t: &str, out: &mut Sink) {
    for marker in rules::PRIVATE_KEY_MARKERS {
        let b = t.as_bytes();
        let mut from = 0;
        while let Some(p) = find_bytes(&b[from..], marker.as_bytes()) {
            let s = from + p + marker.len();
            let e = find_bytes(&b[s..], b"-----END").map_or(b.len(), |q| s + q);
            out.redact(s, e);
            from = e.max(s);
        }
    }
}
