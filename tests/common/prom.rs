//! A strict reader of the Prometheus text format (0.0.4) and a plain HTTP/1.1
//! GET, for testing the agent's `/metrics` from outside, as a scraper would.
//!
//! Strict means: every sample belongs to a family declared with HELP and
//! TYPE before it, a family's samples are contiguous, names and labels
//! follow the grammar, label values use only the allowed escapes, values
//! parse as floats, counters are not negative, no series appears twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Family {
    pub help: String,
    pub kind: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Families by name.
pub type Exposition = HashMap<String, Family>;

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// `{a="1",b="x\"y"}` → labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label {name}")),
                },
                Some((_, '\n')) | None => return Err(format!("unterminated label {name}")),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// Parses a whole exposition; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: Exposition = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (word, name, rest) = (parts.next(), parts.next(), parts.next());
            if !matches!(word, Some("HELP" | "TYPE")) {
                continue; // a plain comment
            }
            let name = name.ok_or_else(|| at("no metric name".into()))?;
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                if finished.contains(name) {
                    return Err(at(format!("{name} declared again after another family")));
                }
                current = Some(name.to_string());
            }
            let f = families.entry(name.to_string()).or_default();
            let rest = rest.unwrap_or("");
            if word == Some("HELP") {
                if !f.help.is_empty() {
                    return Err(at("HELP twice".into()));
                }
                let mut chars = rest.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                        return Err(at("bad escape in HELP".into()));
                    }
                }
                f.help = rest.to_string();
                if f.help.is_empty() {
                    return Err(at("empty HELP".into()));
                }
            } else {
                if !f.kind.is_empty() {
                    return Err(at("TYPE twice".into()));
                }
                if !f.samples.is_empty() {
                    return Err(at("TYPE after samples".into()));
                }
                if !matches!(
                    rest,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                f.kind = rest.to_string();
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        if current.as_deref() != Some(name) {
            return Err(at(format!(
                "sample of {name} outside its family (HELP/TYPE first, samples together)"
            )));
        }
        let f = families
            .get_mut(name)
            .ok_or_else(|| at("no family".into()))?;
        if f.help.is_empty() || f.kind.is_empty() {
            return Err(at(format!("{name} has no HELP or no TYPE")));
        }
        if f.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a counter must be a non-negative number".into()));
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("series twice".into()));
        }
        f.samples.push(Sample { labels, value });
    }
    Ok(families)
}

/// The value of `family` whose labels include all of `want`.
pub fn value(e: &Exposition, family: &str, want: &[(&str, &str)]) -> Option<f64> {
    e.get(family)?
        .samples
        .iter()
        .find(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// A plain HTTP/1.1 request: status code, headers (lower-cased names), body.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
        .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a blank line ends the head");
    let mut lines = head.split("\r\n");
    let status = lines.next().expect("status line");
    let code = status
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status:?}"));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(body.len()),
            "Content-Length matches the body"
        );
    }
    (code, headers, body.to_string())
}
