//! The command reader: walks argv (and command lines nested in it) word by
//! word, knowing which program runs, and applies the rules of `rules.rs`.
//!
//! A word is a whole argument or a range of one, so that redactions are byte
//! ranges of the original argument; `mod.rs` applies them at the end. The
//! state of one command is `Cmd`: its program (after wrappers such as `sudo`),
//! its subcommand, and what the next word is expected to be.

use super::keys;
use super::rules::{self, Given, Program, Value, Wrapper};
use super::scan::{self, Announce, Edit, Sink};
use super::shell::{self, Tok, Tokens, has_ws, is_assignment, is_c_flag, is_empty, is_flag};

/// How deep command lines nested in quotes are followed.
const MAX_DEPTH: u8 = 4;

/// One word: a whole argument, or a piece of one (a snippet word, a value).
#[derive(Debug, Clone, Copy)]
pub struct Word<'a> {
    pub arg: usize,
    /// Offset of `text` in the argument.
    pub at: usize,
    pub text: &'a str,
    /// Inside a shell snippet: quotes are shell quotes, `$X` is a reference.
    pub snippet: bool,
}

impl<'a> Word<'a> {
    fn sub(self, start: usize, end: usize) -> Self {
        Self {
            at: self.at + start,
            text: &self.text[start..end],
            ..self
        }
    }

    /// Without the quotes when the snippet word is one quoted string.
    fn view(self) -> Self {
        match shell::unquote(self.text) {
            Some((s, e)) if self.snippet => self.sub(s, e),
            _ => self,
        }
    }
}

/// What the next word of the command is.
#[derive(Debug, Clone, Copy, Default)]
enum Expect {
    #[default]
    Nothing,
    /// The value of a wrapper option: not a program, not a secret.
    Skip,
    /// A secret value; `generic`: from a generic rule (empty values carry
    /// over, booleans are kept); `path_ok`: a path is not secret (`--private-key ~/k`).
    Value {
        value: Value,
        generic: bool,
        path_ok: bool,
    },
    /// After `Authorization:`: a scheme, or the credential.
    Header,
    /// After a scheme word: the credential.
    Credential,
}

/// What the previous word was, to tell a program name from a flag's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Prev {
    #[default]
    Program,
    /// A flag that may take the next word as its value.
    Flag,
    Positional,
    /// A consumed value, or a flag that carried its own (`--x=y`).
    Value,
    /// `--`, `-exec`: the next word may name a program.
    Boundary,
}

/// The state of one command (top-level argv, or one command of a snippet).
#[derive(Debug, Default)]
pub struct Cmd<'a> {
    started: bool,
    prog: &'a str,
    base: Option<&'static Program>,
    sub: Option<&'static Program>,
    has_subs: bool,
    wrapper: Option<&'static Wrapper>,
    wrapper_left: u8,
    expect: Expect,
    prev: Prev,
    /// The previous word was `-c` (`sh -c`): the next is a command line.
    after_c: bool,
    /// The last positional word, for `ClusterLast` / `WordLast` rules.
    last: Option<Word<'a>>,
    take_last: bool,
    /// A `WordRest` rule fired: every later positional word is secret.
    rest: bool,
}

impl Cmd<'_> {
    /// The program's rules, then its subcommand's (a copy: `cmd` stays free).
    fn programs(&self) -> std::iter::Flatten<std::array::IntoIter<Option<&'static Program>, 2>> {
        [self.base, self.sub].into_iter().flatten()
    }
}

/// The rules to apply and the redactions found so far.
#[derive(Debug)]
pub struct Ctx<'s> {
    pub flags: &'s [String],
    pub keys: &'s [String],
    pub edits: Vec<Edit>,
}

impl<'a> Ctx<'_> {
    pub fn sink(&mut self, arg: usize, at: usize) -> Sink<'_> {
        Sink {
            edits: &mut self.edits,
            arg,
            at,
        }
    }

    fn redact_range(&mut self, w: Word<'a>, start: usize, end: usize) {
        self.sink(w.arg, w.at).redact(start, end);
    }

    /// Redacts the secret part of `w` as `value` describes it.
    fn redact_value(&mut self, w: Word<'a>, value: Value) {
        let t = w.text;
        if w.snippet && keys::is_var_ref(t.strip_prefix('=').unwrap_or(t)) {
            return; // `-p"$PW"` in a script: the secret is not on the command line
        }
        let range = match value {
            Value::Whole => Some(scan::whole_value(t)),
            Value::AfterSep(c) => t.bytes().position(|b| b == c).map(|i| (i + 1, t.len())),
            Value::OpensslPass => {
                if let Some(rest) = t.strip_prefix("pass:") {
                    Some((t.len() - rest.len(), t.len()))
                } else if rules::OPENSSL_REFERENCES.iter().any(|r| t.starts_with(r)) {
                    None
                } else {
                    Some(scan::whole_value(t))
                }
            }
            Value::Cookie => t.find('=').map(|i| (i + 1, t.len())),
            Value::OracleLogon => scan::oracle_logon(t),
        };
        if let Some((s, e)) = range {
            self.redact_range(w, s, e);
        }
    }

    /// Handles one word of `cmd`.
    pub fn word(&mut self, cmd: &mut Cmd<'a>, raw: Word<'a>, depth: u8) {
        let w = raw.view();
        let t = w.text;
        let after_c = std::mem::take(&mut cmd.after_c);
        match std::mem::take(&mut cmd.expect) {
            Expect::Nothing => {}
            Expect::Skip => {
                self.content(w, after_c, depth);
                cmd.prev = Prev::Value;
                return;
            }
            e @ (Expect::Value { .. } | Expect::Header | Expect::Credential) => {
                if is_empty(t) {
                    // `--password "" PW`: stay conservative, the next word may be it.
                    if !matches!(e, Expect::Value { generic: false, .. }) {
                        cmd.expect = e;
                    }
                    cmd.prev = Prev::Value;
                    return;
                }
                if !is_flag(t) {
                    self.value(cmd, raw, w, e);
                    cmd.prev = Prev::Value;
                    return;
                }
                // Never a flag as a value: `--password --verbose`.
            }
        }
        if let Some(a) = self.content(w, after_c, depth) {
            cmd.expect = match a {
                Announce::Value => Expect::Value {
                    value: Value::Whole,
                    generic: true,
                    path_ok: false,
                },
                Announce::Header => Expect::Header,
                Announce::Credential => Expect::Credential,
            };
        }
        if !cmd.started {
            if raw.snippet && is_assignment(t) {
                return; // `PGPASSWORD=… psql`: the program comes next
            }
            cmd.started = true;
            cmd.prev = Prev::Program;
            if !has_ws(t) {
                self.set_program(cmd, t);
            }
            return;
        }
        if is_flag(t) {
            self.flag(cmd, w);
        } else {
            self.positional(cmd, raw, w);
        }
    }

    /// Consumes an expected value.
    fn value(&mut self, cmd: &mut Cmd<'a>, raw: Word<'a>, w: Word<'a>, e: Expect) {
        let t = w.text;
        let reference = raw.snippet && keys::is_var_ref(t);
        match e {
            Expect::Header if keys::is_scheme(t) => cmd.expect = Expect::Credential,
            Expect::Header | Expect::Credential if !reference => {
                self.redact_value(raw, Value::Whole)
            }
            Expect::Value {
                value,
                generic,
                path_ok,
            } if !(reference || (generic && keys::benign_value(path_ok, t, raw.snippet))) => {
                self.redact_value(raw, value);
            }
            _ => {}
        }
    }

    /// The context-free rules for a word's content; returns what a trailing
    /// `key:` or scheme announces about the next word.
    fn content(&mut self, w: Word<'a>, after_c: bool, depth: u8) -> Option<Announce> {
        let t = w.text;
        if has_ws(t) {
            self.block(w, after_c, depth);
            return None;
        }
        let keys = self.keys;
        let mut sink = Sink {
            edits: &mut self.edits,
            arg: w.arg,
            at: w.at,
        };
        let a = scan::pairs(t, keys, w.snippet, false, &mut sink);
        if a.is_none()
            && rules::STANDALONE_SCHEMES
                .iter()
                .any(|s| s.eq_ignore_ascii_case(t))
        {
            return Some(Announce::Credential);
        }
        a
    }

    /// An argument (or quoted snippet word) holding whitespace: a header
    /// line, a flag or assignment with a spaced value, or a command line.
    fn block(&mut self, w: Word<'a>, after_c: bool, depth: u8) {
        let keys = self.keys;
        let mut sink = Sink {
            edits: &mut self.edits,
            arg: w.arg,
            at: w.at,
        };
        if scan::header_line(w.text, keys, w.snippet, &mut sink) {
            return;
        }
        if w.text.starts_with('-') || depth >= MAX_DEPTH {
            scan::pairs(w.text, keys, w.snippet, true, &mut sink);
            return;
        }
        if !after_c && scan::leading_assignment(w.text, keys, w.snippet, &mut sink) {
            return;
        }
        self.snippet(w, depth + 1);
    }

    /// Runs every command of a command line.
    fn snippet(&mut self, w: Word<'a>, depth: u8) {
        let mut cmd = Cmd::default();
        for tok in Tokens::new(w.text) {
            match tok {
                Tok::Sep => {
                    self.finish(&mut cmd);
                    cmd = Cmd::default();
                }
                Tok::Word {
                    start,
                    end,
                    redirect,
                } => {
                    let mut word = w.sub(start, end);
                    word.snippet = true;
                    if redirect {
                        self.content(word.view(), false, depth);
                    } else {
                        self.word(&mut cmd, word, depth);
                    }
                }
            }
        }
        self.finish(&mut cmd);
    }

    /// Ends a command: applies a pending last-positional rule.
    pub fn finish(&mut self, cmd: &mut Cmd<'a>) {
        if cmd.take_last
            && let Some(last) = cmd.last.take()
        {
            self.redact_value(last, Value::Whole);
        }
        cmd.take_last = false;
    }

    fn set_program(&mut self, cmd: &mut Cmd<'a>, t: &'a str) {
        self.finish(cmd);
        let name = t.rsplit('/').next().unwrap_or(t);
        cmd.prog = name;
        cmd.sub = None;
        cmd.rest = false;
        cmd.last = None;
        cmd.wrapper = rules::wrapper(name);
        cmd.wrapper_left = cmd.wrapper.map_or(0, |w| w.positionals);
        cmd.base = rules::program(name);
        cmd.has_subs = rules::has_subs(name);
    }

    fn flag(&mut self, cmd: &mut Cmd<'a>, w: Word<'a>) {
        let t = w.text;
        if rules::COMMAND_FLAGS.contains(&t) {
            cmd.prev = Prev::Boundary;
            return;
        }
        let (name, eq) = match t.find('=') {
            Some(i) => (&t[..i], Some(w.sub(i + 1, t.len()))),
            None => (t, None),
        };
        cmd.prev = if eq.is_some() {
            Prev::Value
        } else {
            Prev::Flag
        };
        cmd.after_c = is_c_flag(t);
        if let Some(wr) = cmd.wrapper {
            if eq.is_none() && wr.value_flags.contains(&t) {
                cmd.expect = Expect::Skip;
            }
            return;
        }
        if self.flags.iter().any(|f| f.eq_ignore_ascii_case(name)) {
            self.flag_value(cmd, eq, Value::Whole, Some(false));
            return;
        }
        // Exact program flags first, then attached values and clusters.
        for p in cmd.programs() {
            for rule in p.rules.iter().filter(|r| r.flag == name) {
                match rule.given {
                    Given::NotSecret => return,
                    Given::Next | Given::Both => {
                        self.flag_value(cmd, eq, rule.value, None);
                        return;
                    }
                    Given::Attached => {
                        if let Some(v) = eq {
                            self.redact_value(v, rule.value);
                        }
                        return;
                    }
                    _ => {}
                }
            }
        }
        for p in cmd.programs() {
            for rule in p.rules {
                if self.flag_prefix(cmd, p, rule, w) {
                    return;
                }
            }
        }
        // (`--key=value` forms of the key rules were handled by `scan::pairs`.)
        let generic = rules::GENERIC_FLAGS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
            || eq.is_none_or(|v| v.text.is_empty())
                && if name.starts_with("--") {
                    keys::key_secret(name, self.keys)
                } else {
                    name.len() >= 5
                        && name[1..].bytes().all(keys::is_key_byte)
                        && keys::key_secret_strong(name, self.keys)
                };
        if generic {
            self.flag_value(cmd, eq, Value::Whole, Some(keys::path_valued(name)));
        }
    }

    /// A secret flag's value: the `=` part, or the next word. `generic` is
    /// `Some(path_ok)` for a generic rule, `None` for a program rule.
    fn flag_value(
        &mut self,
        cmd: &mut Cmd<'a>,
        eq: Option<Word<'a>>,
        value: Value,
        generic: Option<bool>,
    ) {
        match (eq, generic) {
            (Some(v), Some(path_ok)) if keys::benign_value(path_ok, v.text, v.snippet) => {}
            (Some(v), _) if !v.text.is_empty() || generic.is_none() => self.redact_value(v, value),
            // `--password= PW`, like `--password "" PW`: the next word may be it.
            _ => {
                cmd.expect = Expect::Value {
                    value,
                    generic: generic.is_some(),
                    path_ok: generic == Some(true),
                }
            }
        }
    }

    /// `-pVALUE`, clusters (`-xwPASS`, `-bc`); true when `rule` matched.
    fn flag_prefix(
        &mut self,
        cmd: &mut Cmd<'a>,
        p: &Program,
        rule: &rules::Rule,
        w: Word<'a>,
    ) -> bool {
        let t = w.text;
        let f = rule.flag;
        match rule.given {
            Given::Attached | Given::Both
                if t.len() > f.len() && t.starts_with(f) && !f.is_empty() =>
            {
                let mut v = w.sub(f.len(), t.len());
                if let Some(rest) = v.text.strip_prefix('=') {
                    v = v.sub(v.text.len() - rest.len(), v.text.len());
                }
                if v.text != "-" {
                    self.redact_value(v, rule.value);
                }
                true
            }
            Given::Next | Given::Attached | Given::Both
                if f.len() == 2 && !p.cluster.is_empty() =>
            {
                let Some(&letter) = f.as_bytes().get(1) else {
                    return false;
                };
                let body = t.as_bytes().get(1..).unwrap_or_default();
                let Some(k) = body.iter().position(|&c| c == letter) else {
                    return false;
                };
                if k == 0 || !body[..k].iter().all(|c| p.cluster.as_bytes().contains(c)) {
                    return false;
                }
                if k + 2 == t.len() {
                    if rule.given != Given::Attached {
                        cmd.expect = Expect::Value {
                            value: rule.value,
                            generic: false,
                            path_ok: false,
                        };
                    }
                } else if rule.given != Given::Next {
                    self.redact_value(w.sub(k + 2, t.len()), rule.value);
                }
                true
            }
            Given::ClusterLast => {
                let cluster = !t.starts_with("--")
                    && t.len() > 1
                    && t[1..].bytes().all(|c| c.is_ascii_alphanumeric());
                let hit = cluster
                    && f.as_bytes()
                        .get(1)
                        .is_some_and(|l| t[1..].bytes().any(|c| c == *l));
                if hit {
                    cmd.take_last = true;
                }
                hit
            }
            _ => false,
        }
    }

    fn positional(&mut self, cmd: &mut Cmd<'a>, raw: Word<'a>, w: Word<'a>) {
        let t = w.text;
        let prev = std::mem::replace(&mut cmd.prev, Prev::Positional);
        let ws = has_ws(t);
        if cmd.wrapper.is_some() {
            if cmd.wrapper_left > 0 {
                cmd.wrapper_left -= 1;
            } else if !is_assignment(t) && !ws {
                self.set_program(cmd, t);
                cmd.prev = Prev::Program;
            }
            return;
        }
        if cmd.rest {
            self.redact_value(raw, Value::Whole);
            return;
        }
        if !ws {
            if cmd.has_subs
                && cmd.sub.is_none()
                && let Some(p) = rules::sub_program(cmd.prog, t)
            {
                cmd.sub = Some(p);
                return;
            }
            for p in cmd.programs() {
                for rule in p.rules {
                    let named = !rule.flag.is_empty() && t.eq_ignore_ascii_case(rule.flag);
                    match rule.given {
                        Given::WordLast if named => {
                            cmd.take_last = true;
                            cmd.last = None;
                            return;
                        }
                        Given::WordNext if named => {
                            cmd.expect = Expect::Value {
                                value: rule.value,
                                generic: false,
                                path_ok: false,
                            };
                            return;
                        }
                        Given::WordRest if named => {
                            cmd.rest = true;
                            return;
                        }
                        Given::KeyWord if is_key_word(t, self.keys) => {
                            cmd.expect = Expect::Value {
                                value: rule.value,
                                generic: false,
                                path_ok: false,
                            };
                            return;
                        }
                        Given::Positional => self.redact_value(raw, rule.value),
                        Given::Attached
                            if rule.flag.starts_with('/')
                                && t.len() > rule.flag.len()
                                && t.starts_with(rule.flag) =>
                        {
                            self.redact_value(w.sub(rule.flag.len(), t.len()), rule.value);
                        }
                        _ => {}
                    }
                }
            }
            // A known program run by another (`docker exec c mysql -p…`), unless
            // the word is a flag's value or the data of a pending rule.
            let name = t.rsplit('/').next().unwrap_or(t);
            if prev != Prev::Flag && !cmd.take_last && rules::is_program(name) {
                self.set_program(cmd, t);
                cmd.prev = Prev::Program;
                return;
            }
        }
        if !t.starts_with('-') {
            cmd.last = Some(raw);
        }
    }
}

/// Whether a positional word names a secret config key (`aws_secret_access_key`,
/// `//registry.npmjs.org/:_authToken`): its last key-shaped part decides.
fn is_key_word(t: &str, keys: &[String]) -> bool {
    let n = t
        .bytes()
        .rev()
        .take_while(|b| keys::is_key_byte(*b))
        .count();
    n > 0 && keys::key_secret(&t[t.len() - n..], keys)
}
