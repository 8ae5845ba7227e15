//! Secrets inside code given on the command line: interpreter code
//! (`python -c`, `node -e`, `perl -e`, `ruby -e`, `php -r`) and SQL
//! (`psql -c`, `mysql -e`). Code is not a shell command line, and reading it
//! as one either misses its secrets or damages it, so only what is
//! recognisably a secret is redacted: a string literal assigned to a secret
//! name (`password = "PW"`, `auth=('u', 'PW')`, `{"token": "PW"}`,
//! `define('DB_PASSWORD', 'PW')`), or the literal of a SQL password clause
//! (`PASSWORD 'PW'`, `IDENTIFIED BY 'PW'`). Everything else stays as it was.

use super::keys::{benign_value, is_key_byte, is_var_ref, key_secret};
use super::scan::{self, Sink};

/// One lexical token: a string literal (the range of its content), a name,
/// or one punctuation byte. Ranges are byte offsets into the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Str(usize, usize),
    Name(usize, usize),
    Punct(u8, usize),
}

/// A tokenizer good enough for the languages above: quotes (`'` `"` `` ` ``)
/// with `\` escapes, or, for SQL, with doubled quotes; it never fails.
struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    sql: bool,
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'$' | b'@')
}

impl Iterator for Lexer<'_> {
    type Item = Lex;

    fn next(&mut self) -> Option<Lex> {
        let b = self.b;
        while self.i < b.len() && b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
        let start = self.i;
        let c = *b.get(start)?;
        if matches!(c, b'\'' | b'"' | b'`') {
            let mut j = start + 1;
            while j < b.len() {
                let escaped = if self.sql {
                    b[j] == c && b.get(j + 1) == Some(&c)
                } else {
                    b[j] == b'\\'
                };
                if escaped {
                    j += 2;
                } else if b[j] == c {
                    break;
                } else {
                    j += 1;
                }
            }
            let end = j.min(b.len());
            self.i = (end + 1).min(b.len());
            return Some(Lex::Str(start + 1, end));
        }
        if is_name_byte(c) {
            let n = b[start..].iter().take_while(|c| is_name_byte(**c)).count();
            self.i = start + n;
            return Some(Lex::Name(start, start + n));
        }
        self.i += 1;
        Some(Lex::Punct(c, start))
    }
}

/// Redacts the secrets of interpreter code (`sql` false) or SQL (`sql` true).
pub fn scan(t: &str, sql: bool, extra: &[String], out: &mut Sink) {
    if sql {
        scan_sql(t, out);
        scan::pairs(t, extra, false, false, out);
    } else {
        scan_code(t, extra, out);
    }
}

/// The content ranges of the string literals of interpreter code.
pub fn literals(t: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let lexer = Lexer {
        b: t.as_bytes(),
        i: 0,
        sql: false,
    };
    lexer.filter_map(|tok| match tok {
        Lex::Str(s, e) => Some((s, e)),
        _ => None,
    })
}

/// Redacts a literal unless it is empty, a `$VAR` or a boolean.
fn redact_literal(t: &str, s: usize, e: usize, out: &mut Sink) {
    let v = &t[s..e];
    if !(v.is_empty() || is_var_ref(v) || benign_value(false, v, false)) {
        out.redact(s, e);
    }
}

/// Where the code reader is.
#[derive(Debug, Clone, Copy)]
enum St {
    Idle,
    /// After a secret name; `quoted`: the name was a string literal.
    Key {
        quoted: bool,
    },
    /// After `=`, `:`, `=>` (or `,` after a quoted key): the value comes.
    Op {
        end: usize,
    },
    /// Inside `(`/`[` after the operator: the first literal (kept when a
    /// second one follows: `auth=('user', 'PW')`) and how many were redacted.
    Tuple {
        first: Option<(usize, usize)>,
        redacted: u8,
    },
}

/// The name a token gives as a key: a name without its sigils (`$pass`,
/// `:password`), or a string literal shaped like a key (`"DB_PASSWORD"`).
fn key_of(t: &str, tok: Lex) -> Option<(&str, bool)> {
    match tok {
        Lex::Name(s, e) => Some((t[s..e].trim_start_matches(['$', '@']), false)),
        Lex::Str(s, e) if e > s && t.as_bytes()[s..e].iter().all(|c| is_key_byte(*c)) => {
            Some((&t[s..e], true))
        }
        _ => None,
    }
}

fn scan_code(t: &str, extra: &[String], out: &mut Sink) {
    let b = t.as_bytes();
    let mut st = St::Idle;
    for tok in (Lexer {
        b,
        i: 0,
        sql: false,
    }) {
        st = match (st, tok) {
            (St::Key { .. }, Lex::Punct(b']' | b'}', _)) => st,
            (St::Key { quoted }, Lex::Punct(c @ (b'=' | b':' | b','), i)) => {
                let next = b.get(i + 1).copied();
                let op = match c {
                    b'=' => !matches!(next, Some(b'=' | b'~')),
                    b':' => next != Some(b':'),
                    _ => quoted,
                };
                if op { St::Op { end: i + 1 } } else { St::Idle }
            }
            (St::Op { end }, Lex::Punct(b'=' | b'>', i)) if i == end => St::Op { end: i + 1 },
            (St::Op { .. }, Lex::Punct(b'(' | b'[', _)) => St::Tuple {
                first: None,
                redacted: 0,
            },
            // String prefixes: b"…", r'…', f"…".
            (St::Op { .. }, Lex::Name(s, e))
                if e - s <= 2
                    && b[s..e].iter().all(|c| b"bBrRfFuU".contains(c))
                    && b.get(e).is_some_and(|c| matches!(c, b'\'' | b'"')) =>
            {
                St::Op { end: e }
            }
            (St::Op { .. }, Lex::Str(s, e)) => {
                redact_literal(t, s, e, out);
                St::Idle
            }
            (St::Tuple { first: None, .. }, Lex::Str(s, e)) => St::Tuple {
                first: Some((s, e)),
                redacted: 0,
            },
            (St::Tuple { first, redacted }, Lex::Str(s, e)) => {
                redact_literal(t, s, e, out);
                St::Tuple {
                    first,
                    redacted: redacted.saturating_add(1),
                }
            }
            (St::Tuple { first, redacted }, Lex::Punct(b')' | b']', _)) => {
                if let (Some((s, e)), 0) = (first, redacted) {
                    redact_literal(t, s, e, out);
                }
                St::Idle
            }
            // A call inside the tuple (`(user, getpass('Password: '))`): not literals.
            (St::Tuple { .. }, Lex::Punct(b'(' | b'[' | b';', _)) => St::Idle,
            (St::Tuple { .. }, _) => st,
            (_, tok) => match key_of(t, tok) {
                Some((k, quoted)) if key_secret(k, extra) => St::Key { quoted },
                _ => St::Idle,
            },
        };
    }
}

/// Where the SQL reader is.
#[derive(Debug, Clone, Copy)]
enum Sql {
    Idle,
    /// After `PASSWORD` (`= `, `(` and `PASSWORD(` may come first).
    Password,
    /// After `IDENTIFIED`, looking for `BY`/`AS` within a few words.
    Identified(u8),
    /// After `IDENTIFIED … BY`: a literal, or Oracle's bare password.
    By,
}

fn scan_sql(t: &str, out: &mut Sink) {
    let b = t.as_bytes();
    let word = |s: usize, e: usize, w: &str| t[s..e].eq_ignore_ascii_case(w);
    let mut st = Sql::Idle;
    for tok in (Lexer { b, i: 0, sql: true }) {
        st = match (st, tok) {
            (Sql::Password, Lex::Punct(b'=' | b'(', _)) => st,
            (Sql::Password | Sql::By, Lex::Name(s, e)) if word(s, e, "PASSWORD") => st,
            (Sql::Password | Sql::By, Lex::Str(s, e)) => {
                redact_literal(t, s, e, out);
                Sql::Idle
            }
            (Sql::Identified(_), Lex::Name(s, e)) if word(s, e, "BY") || word(s, e, "AS") => {
                Sql::By
            }
            (Sql::Identified(_), Lex::Name(s, e)) if word(s, e, "USING") => Sql::Password,
            (Sql::Identified(n), Lex::Name(..)) if n < 3 => Sql::Identified(n + 1),
            (Sql::By, Lex::Name(s, e)) if word(s, e, "VALUES") => st,
            (Sql::By, Lex::Name(s, e)) => {
                out.redact(s, e);
                Sql::Idle
            }
            (_, Lex::Name(s, e)) if word(s, e, "PASSWORD") => Sql::Password,
            (_, Lex::Name(s, e)) if word(s, e, "IDENTIFIED") => Sql::Identified(0),
            _ => Sql::Idle,
        };
    }
}
