//! A program's rules applied to one word of its command: a flag (exact,
//! attached `-pPASS`, in a cluster `-xwPASS`, `--flag=value`, generic secret
//! flags) or a positional word (subcommands, keywords, config keys, the n-th
//! argument, a program run by the program). Split from `command.rs`, which
//! reads the words and keeps the state of the command.

use super::command::{Cmd, Ctx, Expect, Prev, Word};
use super::keys;
use super::rules::{self, Given, Program, Value};
use super::shell::{has_ws, is_assignment, is_c_flag};

impl<'a> Ctx<'_> {
    pub(super) fn flag(&mut self, cmd: &mut Cmd<'a>, w: Word<'a>) {
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
            if rules::WRAPPER_STDIN_FLAGS
                .iter()
                .any(|(n, f)| wr.names.contains(n) && *f == t)
            {
                cmd.stdin = Some(Value::Whole);
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
                if self.exact_flag(cmd, rule, eq) {
                    return;
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

    /// Applies a rule whose flag is the word (`eq`: its `=value`); true when it applied.
    fn exact_flag(&mut self, cmd: &mut Cmd<'a>, rule: &rules::Rule, eq: Option<Word<'a>>) -> bool {
        match rule.given {
            Given::NotSecret => {}
            Given::Next | Given::Both => self.flag_value(cmd, eq, rule.value, None),
            Given::Attached => {
                if let Some(v) = eq {
                    self.redact_value(v, rule.value);
                }
            }
            Given::Skip => {
                if eq.is_none() {
                    cmd.expect = Expect::Skip;
                }
            }
            // `--entrypoint mysql`: the next word may name the program.
            Given::Runs => match eq {
                Some(v) if rules::is_program(v.text.rsplit('/').next().unwrap_or(v.text)) => {
                    self.set_program(cmd, v.text);
                    cmd.prev = Prev::Program;
                }
                Some(_) => {}
                None => cmd.prev = Prev::Boundary,
            },
            Given::Stdin => cmd.stdin = Some(rule.value),
            _ => return false,
        }
        true
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

    pub(super) fn positional(&mut self, cmd: &mut Cmd<'a>, raw: Word<'a>, w: Word<'a>) {
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
        if !ws
            && cmd.has_subs
            && cmd.sub.is_none()
            && let Some(p) = rules::sub_program(cmd.prog, t)
        {
            cmd.sub = Some(p);
            return;
        }
        cmd.npos = cmd.npos.saturating_add(1);
        for p in cmd.programs() {
            for rule in p.rules {
                if self.positional_rule(cmd, rule, raw, w) {
                    return;
                }
            }
        }
        // A known program run by another (`docker exec c mysql -p…`), unless
        // the word is a flag's value or the data of a pending rule.
        let name = t.rsplit('/').next().unwrap_or(t);
        if !ws && prev != Prev::Flag && !cmd.take_last && rules::is_program(name) {
            self.set_program(cmd, t);
            cmd.prev = Prev::Program;
            return;
        }
        if !t.starts_with('-') {
            cmd.last = Some(raw);
        }
    }
}

impl<'a> Ctx<'_> {
    /// Applies one rule to a positional word; true when the word is used up.
    fn positional_rule(
        &mut self,
        cmd: &mut Cmd<'a>,
        rule: &rules::Rule,
        raw: Word<'a>,
        w: Word<'a>,
    ) -> bool {
        let t = w.text;
        let f = rule.flag;
        if has_ws(t) && !matches!(rule.given, Given::Nth(_)) {
            return false;
        }
        let named = !f.is_empty() && t.eq_ignore_ascii_case(f);
        let expect = Expect::Value {
            value: rule.value,
            generic: false,
            path_ok: false,
        };
        match rule.given {
            Given::WordLast if named => {
                cmd.take_last = true;
                cmd.last = None;
            }
            Given::WordNext if named => cmd.expect = expect,
            Given::WordRest if named => cmd.rest = true,
            Given::KeyWord if is_key_word(t, self.keys) => {
                // Booleans stay (`rclone config create r s3 env_auth true`).
                cmd.expect = Expect::Value {
                    value: rule.value,
                    generic: true,
                    path_ok: false,
                };
            }
            Given::Positional => {
                self.redact_value(raw, rule.value);
                return false;
            }
            Given::Nth(n) if n == cmd.npos => {
                self.redact_value(raw, rule.value);
                return false;
            }
            // `/p:PASS`, `userid=user/PASS`
            Given::Attached
                if !f.is_empty()
                    && !f.starts_with('-')
                    && t.len() > f.len()
                    && keys::starts_with_ic(t.as_bytes(), f.as_bytes()) =>
            {
                self.redact_value(w.sub(f.len(), t.len()), rule.value);
                return false;
            }
            _ => return false,
        }
        true
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
