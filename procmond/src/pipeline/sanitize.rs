//! Secret redaction (docs/reference.md §6), applied before an event leaves the process.
//!
//! Command lines are where secrets leak: `--password x`, `API_KEY=…`,
//! `https://user:pass@host`, `Authorization: Bearer …`. The sanitizer rewrites
//! argv in place so that nothing downstream (WAL, bus, sinks, logs) ever holds
//! the secret. It errs towards redacting: a false positive costs a value in a
//! log, a false negative leaks a credential. Patterns come from config and
//! extend the built-in ones, never replace them.

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Flags whose next argument (or `=value`) is a secret.
const SECRET_FLAGS: &[&str] = &[
    "--password",
    "--passwd",
    "--secret",
    "--token",
    "--api-key",
    "--apikey",
    "--access-key",
    "--auth",
    "--client-secret",
    "-p",
];

/// Substrings (upper case) that make a `KEY=value` key, or a long flag, secret.
const SECRET_KEYS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "API-KEY",
    "ACCESS_KEY",
    "ACCESS-KEY",
    "PRIVATE_KEY",
    "PRIVATE-KEY",
    "AUTH",
    "CREDENTIAL",
];

/// HTTP authentication schemes: the word after one is a credential.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate"];

/// Programs whose `-pVALUE` (no space) is a password, as in `mysql -phunter2`.
const ATTACHED_P_PROGRAMS: &[&str] = &["mysql", "mariadb"];

/// Redacts secrets from argv. Cheap to clone; built once from config.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    flags: Vec<String>,
    keys: Vec<String>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

impl Sanitizer {
    /// Built-in patterns plus `extra_flags` (exact flags such as `--db-pass`)
    /// and `extra_keys` (substrings of `KEY=value` keys such as `SESSION`).
    pub fn new(extra_flags: &[String], extra_keys: &[String]) -> Self {
        let flags = SECRET_FLAGS
            .iter()
            .map(|f| f.to_string())
            .chain(extra_flags.iter().map(|f| f.to_ascii_lowercase()))
            .collect();
        let keys = SECRET_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(extra_keys.iter().map(|k| k.to_ascii_uppercase()))
            .collect();
        Self { flags, keys }
    }

    /// Rewrites secrets in `argv`; returns how many values were redacted.
    pub fn sanitize_argv(&self, argv: &mut [String]) -> usize {
        let attached_p = argv.first().is_some_and(|a0| {
            let base = a0.rsplit('/').next().unwrap_or(a0);
            ATTACHED_P_PROGRAMS.iter().any(|p| base.starts_with(p))
        });
        let mut state = WordState::default();
        let mut count = 0;
        for arg in argv.iter_mut() {
            let has_space = arg.contains(char::is_whitespace);
            let rewritten = if has_space && state.expects_value() {
                // The value of a secret flag, spaces and all.
                state = WordState::Plain;
                count += 1;
                Some(REDACTED.to_string())
            } else if has_space {
                // A shell snippet (`sh -c "…"`): apply the same rules per word.
                let mut inner = WordState::default();
                let mut out = String::with_capacity(arg.len());
                let mut changed = false;
                for piece in split_keep_whitespace(arg) {
                    if piece.starts_with(char::is_whitespace) {
                        out.push_str(piece);
                    } else if let Some(w) = self.word(piece, &mut inner, attached_p) {
                        out.push_str(&w);
                        changed = true;
                        count += 1;
                    } else {
                        out.push_str(piece);
                    }
                }
                changed.then_some(out)
            } else {
                let w = self.word(arg, &mut state, attached_p);
                count += usize::from(w.is_some());
                w
            };
            if let Some(new) = rewritten {
                *arg = new;
            }
        }
        count
    }

    /// Redacts one word given what came before it; `None` when unchanged.
    fn word(&self, word: &str, state: &mut WordState, attached_p: bool) -> Option<String> {
        match std::mem::take(state) {
            WordState::Plain => {}
            WordState::AfterFlag { port_allowed } => {
                if !(port_allowed && is_port(word)) {
                    return Some(REDACTED.to_string());
                }
            }
            WordState::AfterScheme => return Some(REDACTED.to_string()),
            WordState::AfterHeader => {
                let lower = word.to_ascii_lowercase();
                if AUTH_SCHEMES.contains(&lower.as_str()) {
                    *state = WordState::AfterScheme;
                    return None;
                }
                return Some(REDACTED.to_string());
            }
        }
        let lower = word.to_ascii_lowercase();
        if lower == "authorization:" || lower == "proxy-authorization:" {
            *state = WordState::AfterHeader;
            return None;
        }
        if AUTH_SCHEMES.contains(&lower.as_str()) {
            *state = WordState::AfterScheme;
            return None;
        }
        if self.is_secret_flag(&lower) {
            *state = WordState::AfterFlag {
                port_allowed: lower == "-p",
            };
            return None;
        }
        if attached_p && word.len() > 2 && word.starts_with("-p") && !is_port(&word[2..]) {
            return Some(format!("-p{REDACTED}"));
        }
        if let Some(i) = lower.find("authorization:") {
            let end = i + "authorization:".len();
            return Some(format!("{}{REDACTED}", &word[..end]));
        }
        if let Some((key, _)) = word.split_once('=')
            && is_key(key)
            && (self.is_secret_key(key) || self.flags.iter().any(|f| f.eq_ignore_ascii_case(key)))
        {
            return Some(format!("{key}={REDACTED}"));
        }
        redact_userinfo(word)
    }

    fn is_secret_flag(&self, lower: &str) -> bool {
        if self.flags.iter().any(|f| f == lower) {
            return true;
        }
        // `--db-password`, `--vault-token`: a long flag named after a secret.
        lower.starts_with("--") && !lower.contains('=') && {
            let upper = lower.to_ascii_uppercase();
            self.keys
                .iter()
                .filter(|k| k.as_str() != "AUTH")
                .any(|k| upper.contains(k.as_str()))
        }
    }

    fn is_secret_key(&self, key: &str) -> bool {
        let upper = key.to_ascii_uppercase();
        self.keys.iter().any(|k| upper.contains(k.as_str()))
    }
}

#[derive(Debug, Default)]
enum WordState {
    #[default]
    Plain,
    /// The previous word was a secret flag; `-p` keeps a numeric port.
    AfterFlag { port_allowed: bool },
    /// The previous word was an auth scheme such as `Bearer`.
    AfterScheme,
    /// The previous word was `Authorization:`.
    AfterHeader,
}

impl WordState {
    fn expects_value(&self) -> bool {
        !matches!(self, Self::Plain)
    }
}

/// A TCP/UDP port as in `ssh -p 22`: one to five digits.
fn is_port(s: &str) -> bool {
    (1..=5).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// An environment-style or flag-style key: `API_KEY`, `--token`, `db.password`.
fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `scheme://user:pass@host` → `scheme://user:[REDACTED]@host`; a bare
/// `scheme://token@host` loses the whole userinfo.
fn redact_userinfo(word: &str) -> Option<String> {
    let scheme_end = word.find("://")? + 3;
    let rest = &word[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let userinfo = &rest[..at];
    let kept = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_string(),
    };
    Some(format!("{}{kept}{}", &word[..scheme_end], &rest[at..]))
}

/// Splits into alternating runs of non-whitespace and whitespace.
fn split_keep_whitespace(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let ws = first.is_whitespace();
        let end = rest
            .find(|c: char| c.is_whitespace() != ws)
            .unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Sanitizer::default().sanitize_argv(&mut argv);
        argv
    }

    #[test]
    fn redacts_flag_values_in_both_forms() {
        assert_eq!(
            run(&["app", "--password", "hunter2"]),
            ["app", "--password", REDACTED]
        );
        assert_eq!(
            run(&["app", "--token=abc123"]),
            ["app", "--token=[REDACTED]"]
        );
        assert_eq!(
            run(&["app", "--Client-Secret", "s"]),
            ["app", "--Client-Secret", REDACTED]
        );
        assert_eq!(
            run(&["app", "--db-password", "x"]),
            ["app", "--db-password", REDACTED]
        );
    }

    #[test]
    fn dash_p_keeps_ports_but_not_passwords() {
        assert_eq!(
            run(&["ssh", "-p", "22", "host"]),
            ["ssh", "-p", "22", "host"]
        );
        assert_eq!(run(&["tool", "-p", "hunter2"]), ["tool", "-p", REDACTED]);
        assert_eq!(
            run(&["/usr/bin/mysql", "-phunter2"]),
            ["/usr/bin/mysql", "-p[REDACTED]"]
        );
        assert_eq!(run(&["mysql", "-p3306"]), ["mysql", "-p3306"]);
    }

    #[test]
    fn redacts_env_pairs_urls_and_auth_headers() {
        assert_eq!(
            run(&["env", "API_KEY=zzz", "PATH=/bin"]),
            ["env", "API_KEY=[REDACTED]", "PATH=/bin"]
        );
        assert_eq!(
            run(&["curl", "https://u:pw@host/x"]),
            ["curl", "https://u:[REDACTED]@host/x"]
        );
        assert_eq!(
            run(&["git", "https://ghp_x@github.invalid"]),
            ["git", "https://[REDACTED]@github.invalid"]
        );
        assert_eq!(
            run(&["curl", "-H", "Authorization: Bearer abc"]),
            ["curl", "-H", "Authorization: Bearer [REDACTED]"]
        );
        assert_eq!(
            run(&["x", "Authorization:abc"]),
            ["x", "Authorization:[REDACTED]"]
        );
        assert_eq!(run(&["x", "Bearer", "abc"]), ["x", "Bearer", REDACTED]);
    }

    #[test]
    fn redacts_inside_shell_snippets() {
        let out = run(&["sh", "-c", "mysql --password hunter2 && TOKEN=t1  run"]);
        assert_eq!(
            out[2],
            "mysql --password [REDACTED] && TOKEN=[REDACTED]  run"
        );
    }

    #[test]
    fn values_with_spaces_and_equals_forms_of_any_flag() {
        assert_eq!(
            run(&["app", "--password", "correct horse", "next"]),
            ["app", "--password", REDACTED, "next"]
        );
        assert_eq!(run(&["app", "-p=hunter2"]), ["app", "-p=[REDACTED]"]);
        let s = Sanitizer::new(&["--db-pass".into()], &[]);
        let mut argv = vec!["a".to_string(), "--db-pass=x".to_string()];
        s.sanitize_argv(&mut argv);
        assert_eq!(argv, ["a", "--db-pass=[REDACTED]"]);
    }

    #[test]
    fn extra_patterns_extend_the_builtins() {
        let s = Sanitizer::new(&["--db-pass".into()], &["SESSION".into()]);
        let mut argv: Vec<String> = ["a", "--db-pass", "x", "MY_SESSION=y", "--token", "z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(s.sanitize_argv(&mut argv), 3);
        assert_eq!(
            argv,
            [
                "a",
                "--db-pass",
                REDACTED,
                "MY_SESSION=[REDACTED]",
                "--token",
                REDACTED
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn secrets_never_survive(secret in "[a-zA-Z0-9]{8,24}", junk in proptest::collection::vec(".{0,12}", 0..6)) {
            let forms = [
                vec!["--password".to_string(), secret.clone()],
                vec![format!("--token={secret}")],
                vec![format!("MY_API_KEY={secret}")],
                vec![format!("https://user:{secret}@host/p")],
                vec!["-H".to_string(), format!("Authorization: Bearer {secret}")],
            ];
            for form in forms {
                let mut argv = vec!["prog".to_string()];
                argv.extend(junk.iter().filter(|j| !j.contains(char::is_whitespace) && !j.is_empty()).map(|j| format!("x{j}")));
                argv.extend(form);
                Sanitizer::default().sanitize_argv(&mut argv);
                proptest::prop_assert!(!argv.iter().any(|a| a.contains(&secret)), "{:?}", argv);
            }
        }
    }
}
