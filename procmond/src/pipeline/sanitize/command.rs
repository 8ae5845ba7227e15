//! The command reader: walks argv (and command lines nested in it) word by
//! word, knowing which program runs, and applies the rules of `rules.rs`.
//!
//! A word is a whole argument or a range of one, so that redactions are byte
//! ranges of the original argument; `mod.rs` applies them at the end. The
//! state of one command is `Cmd`: its program (after wrappers such as `sudo`),
//! its subcommand, and what the next word is expected to be.

use super::code;
use super::keys;
use super::rules::{self, Given, Program, Value, Wrapper};
use super::scan::{self, Announce, Edit, Sink};
use super::shell::{self, Tok, Tokens, dash_value, has_ws, is_assignment, is_empty, is_flag};

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
    pub(super) fn sub(self, start: usize, end: usize) -> Self {
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
pub(super) enum Expect {
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
pub(super) enum Prev {
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
    pub(super) started: bool,
    pub(super) prog: &'a str,
    pub(super) base: Option<&'static Program>,
    pub(super) sub: Option<&'static Program>,
    pub(super) has_subs: bool,
    pub(super) wrapper: Option<&'static Wrapper>,
    pub(super) wrapper_left: u8,
    pub(super) expect: Expect,
    pub(super) prev: Prev,
    /// The previous word was `-c` (`sh -c`): the next is a command line.
    pub(super) after_c: bool,
    /// The last positional word, for `ClusterLast` / `WordLast` rules.
    pub(super) last: Option<Word<'a>>,
    pub(super) take_last: bool,
    /// A `WordRest` rule fired: every later positional word is secret.
    pub(super) rest: bool,
    /// Positional words so far (for `Nth` rules).
    pub(super) npos: u8,
    /// A `Stdin` rule fired: what `echo` pipes into this command is secret.
    pub(super) stdin: Option<Value>,
}

impl Cmd<'_> {
    /// The program's rules, then its subcommand's (a copy: `cmd` stays free).
    pub(super) fn programs(
        &self,
    ) -> std::iter::Flatten<std::array::IntoIter<Option<&'static Program>, 2>> {
        [self.base, self.sub].into_iter().flatten()
    }
}

/// The arguments of an `echo`/`printf` (a range of the snippet).
#[derive(Debug, Clone, Copy)]
struct Source {
    start: usize,
    end: usize,
    printf: bool,
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
    pub(super) fn redact_value(&mut self, w: Word<'a>, value: Value) {
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
            Value::Code | Value::Sql => {
                let v = w.view();
                let keys = self.keys;
                code::scan(
                    v.text,
                    value == Value::Sql,
                    keys,
                    &mut self.sink(v.arg, v.at),
                );
                if value == Value::Code {
                    self.code_commands(v);
                }
                None
            }
        };
        if let Some((s, e)) = range {
            self.redact_range(w, s, e);
        }
    }

    /// Command lines in the string literals of code (`os.system('mysql
    /// -pPW db')`), when their first word names a program of the rules or a
    /// wrapper: other literals are not read as commands (`"--password is
    /// required"` stays).
    fn code_commands(&mut self, v: Word<'a>) {
        for (s, e) in code::literals(v.text) {
            let lit = v.sub(s, e);
            let first = lit.text.split_ascii_whitespace().next().unwrap_or_default();
            let name = first.rsplit('/').next().unwrap_or(first);
            if has_ws(lit.text) && (rules::is_program(name) || rules::wrapper(name).is_some()) {
                self.snippet(lit, MAX_DEPTH - 1);
            }
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
                if !is_flag(t) || dash_value(t) {
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

    /// Runs every command of a command line. What `echo`/`printf` pipes
    /// into a command with a `Stdin` rule is that command's secret.
    fn snippet(&mut self, w: Word<'a>, depth: u8) {
        let mut cmd = Cmd::default();
        // The arguments of this command when it is an echo, and those piped in.
        let (mut echo, mut piped): (Option<Source>, Option<Source>) = (None, None);
        for tok in Tokens::new(w.text) {
            match tok {
                Tok::Sep { pipe } => {
                    self.end_piped(&mut cmd, w, piped.take());
                    piped = if pipe { echo.take() } else { None };
                    echo = None;
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
                        continue;
                    }
                    let source = cmd.started && rules::PIPE_SOURCES.contains(&cmd.prog);
                    self.word(&mut cmd, word, depth);
                    if source {
                        echo = Some(Source {
                            start: echo.map_or(start, |e| e.start),
                            end,
                            printf: cmd.prog == "printf",
                        });
                    }
                }
            }
        }
        self.end_piped(&mut cmd, w, piped);
    }

    /// Ends a command of a snippet; when it reads a secret from stdin, the
    /// words echoed into it are redacted (not flags, `$VAR`s or a printf format).
    fn end_piped(&mut self, cmd: &mut Cmd<'a>, w: Word<'a>, piped: Option<Source>) {
        self.finish(cmd);
        let (Some(value), Some(src)) = (cmd.stdin, piped) else {
            return;
        };
        let mut args = w.sub(src.start, src.end);
        args.snippet = true;
        let words = || {
            Tokens::new(args.text).filter_map(move |t| match t {
                Tok::Word { start, end, .. } => Some(args.sub(start, end).view()),
                Tok::Sep { .. } => None,
            })
        };
        let skip_flags = |ws: &Word<'a>| is_flag(ws.text);
        let count = words().skip_while(skip_flags).count();
        let skip = usize::from(src.printf && count > 1);
        for word in words().skip_while(skip_flags).skip(skip) {
            self.redact_value(word, value);
        }
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

    pub(super) fn set_program(&mut self, cmd: &mut Cmd<'a>, t: &'a str) {
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
        cmd.npos = 0;
        // Kept from a wrapper (`sudo -S`): the command still reads stdin.
        cmd.stdin = cmd.stdin.or_else(|| {
            cmd.base.and_then(|p| {
                p.rules
                    .iter()
                    .find(|r| r.given == Given::Stdin && r.flag.is_empty())
                    .map(|r| r.value)
            })
        });
    }
}
