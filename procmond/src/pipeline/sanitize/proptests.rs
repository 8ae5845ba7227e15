//! Property tests: a random secret in every form each rule of `rules.rs`
//! declares (each program's flag in each of its forms, generic flags, keys,
//! URL userinfo, headers, JSON, token shapes), surrounded by random benign
//! arguments, never survives; and no text changes the argument count.

use super::keys;
use super::rules::{self, Body, Given, Value};
use super::{REDACTED, Sanitizer};
use proptest::prelude::*;

/// The secret's place in a form, and the form's words.
fn value_text(v: Value, s: &str) -> String {
    match v {
        Value::Whole => s.to_string(),
        Value::AfterSep(c) => format!("user{}{s}", char::from(c)),
        Value::OpensslPass => format!("pass:{s}"),
        Value::Cookie => format!("sid={s}"),
        Value::OracleLogon => format!("scott/{s}@orcl"),
        Value::Code => format!("import db; password = '{s}'; db.connect(password)"),
        Value::Sql => format!("ALTER USER app WITH PASSWORD '{s}'"),
    }
}

/// One way of writing a secret: the argv words, whether junk may follow
/// (not when the value must be last) or precede (not when the value's
/// position counts), and the text that must not survive.
struct Form {
    words: Vec<String>,
    tail: bool,
    lead: bool,
    secret: String,
}

/// The argv words (after the program) of each form of one rule, and whether
/// junk may follow; forms needing a whole command line of their own (`Stdin`)
/// go straight to `forms`.
fn rule_bodies(
    p: &rules::Program,
    name: &str,
    rule: &rules::Rule,
    s: &str,
    forms: &mut Vec<Form>,
) -> Vec<(Vec<String>, bool)> {
    let v = value_text(rule.value, s);
    let f = rule.flag;
    match rule.given {
        Given::Next => vec![
            (vec![f.into(), v.clone()], true),
            (vec![format!("{f}={v}")], true),
        ],
        Given::Attached => vec![(vec![format!("{f}{v}")], true)],
        Given::Both => vec![
            (vec![f.into(), v.clone()], true),
            (vec![format!("{f}{v}")], true),
        ],
        Given::ClusterLast => {
            let l = &f[1..];
            vec![
                (
                    vec![f.into(), "file".into(), "user".into(), v.clone()],
                    false,
                ),
                (
                    vec![format!("-c{l}"), "file".into(), "user".into(), v.clone()],
                    false,
                ),
                (
                    vec![format!("-{l}c"), "file".into(), "user".into(), v.clone()],
                    false,
                ),
                (vec![format!("-n{l}"), "user".into(), v.clone()], false),
            ]
        }
        Given::WordLast => vec![(vec![f.into(), "user".into(), v.clone()], false)],
        Given::WordNext => vec![(vec![f.into(), v.clone()], true)],
        Given::WordRest => vec![(vec![f.into(), "user".into(), v.clone()], true)],
        Given::KeyWord => {
            vec![(vec!["set".into(), "db_password".into(), v.clone()], true)]
        }
        Given::Positional => vec![(vec![v.clone()], true)],
        Given::Nth(n) => {
            let mut words: Vec<String> = (1..n).map(|i| format!("arg{i}")).collect();
            words.push(v.clone());
            vec![(words, true)]
        }
        Given::Runs => vec![
            (
                vec![f.into(), "mysql".into(), "img".into(), format!("-p{s}")],
                true,
            ),
            (
                vec![format!("{f}=mysql"), "img".into(), format!("-p{s}")],
                true,
            ),
        ],
        Given::Stdin => {
            let line = format!("{name} {} {f}", p.sub.unwrap_or_default());
            forms.push(Form {
                words: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("echo '{v}' | {line}; printf '%s' {v} | {line} x"),
                ],
                tail: true,
                lead: true,
                secret: s.to_string(),
            });
            vec![]
        }
        Given::NotSecret | Given::Skip => vec![],
    }
}

/// Every form each rule of `rules::PROGRAMS` declares, with the secret `s`.
fn program_forms(s: &str) -> Vec<Form> {
    let mut forms = Vec::new();
    for p in rules::PROGRAMS {
        for name in p.names {
            let head: Vec<String> = std::iter::once(name.to_string())
                .chain(p.sub.map(String::from))
                .collect();
            for rule in p.rules {
                let v = value_text(rule.value, s);
                let f = rule.flag;
                let mut bodies = rule_bodies(p, name, rule, s, &mut forms);
                // Behind boolean options in one cluster (`-xw PASS`, `-xwPASS`).
                if let (Some(c), true) = (p.cluster.chars().next(), f.len() == 2) {
                    let l = &f[1..];
                    if matches!(rule.given, Given::Next | Given::Both) {
                        bodies.push((vec![format!("-{c}{l}"), v.clone()], true));
                    }
                    if matches!(rule.given, Given::Attached | Given::Both) {
                        bodies.push((vec![format!("-{c}{l}{v}")], true));
                    }
                }
                let lead = !matches!(rule.given, Given::Nth(_));
                for (body, tail) in bodies {
                    let mut words = head.clone();
                    words.extend(body);
                    forms.push(Form {
                        words,
                        tail,
                        lead,
                        secret: s.to_string(),
                    });
                }
            }
        }
    }
    forms
}

/// Forms of the generic rules, after an unknown program.
fn generic_forms(s: &str) -> Vec<Form> {
    let mut forms: Vec<Vec<String>> = Vec::new();
    for f in rules::GENERIC_FLAGS {
        forms.push(vec![f.to_string(), s.into()]);
        forms.push(vec![format!("{f}={s}")]);
        forms.push(vec![
            "sh".into(),
            "-c".into(),
            format!("run {f} '{s} x' && ls"),
        ]);
    }
    for k in [
        "PASSWORD",
        "DB_PASSWORD",
        "MYSQL_PWD",
        "API_KEY",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "client_secret",
        "REDIS_PASS",
        "BASIC_AUTH",
        "auth.password",
    ] {
        forms.push(vec![format!("{k}={s}")]);
        forms.push(vec![format!("-D{k}={s}")]);
        forms.push(vec![format!("--set={k}={s}")]);
        forms.push(vec![format!("user=u,{k}={s},uid=1")]);
        forms.push(vec![format!("{{\"{k}\":\"{s}\"}}")]);
        forms.push(vec![format!("{{\"{k}\": \"{s}\", \"n\": 1}}")]);
        forms.push(vec![format!("{k}: {s}")]);
        forms.push(vec![
            "sh".into(),
            "-c".into(),
            format!("{k}={s} run; {k}=\"{s} x\" run"),
        ]);
    }
    for url in [
        format!("https://user:{s}@host/p"),
        format!("postgres://u:{s}@h:5432/db"),
        format!("https://{s}@host"),
        format!("https://u:a@{s}@host/p"),
        format!("user:{s}@proxy:3128"),
        format!("https://h/x?token={s}&a=1"),
    ] {
        forms.push(vec![url]);
    }
    for h in rules::AUTH_HEADERS {
        forms.push(vec![format!("{h}: Bearer {s}")]);
        forms.push(vec![format!("{h}:Bearer {s}")]);
        forms.push(vec![format!("{h}:"), "Bearer".into(), s.into()]);
        forms.push(vec![format!("{h}:Bearer"), s.into()]);
        forms.push(vec![format!("{h}:"), s.into()]);
        forms.push(vec![format!("{h}:{s}")]);
    }
    for h in rules::SECRET_HEADERS
        .iter()
        .chain(&["X-Auth-Token", "PRIVATE-TOKEN", "X-Vault-Token"])
    {
        forms.push(vec![format!("{h}: {s}")]);
        forms.push(vec![format!("{h}:{s}")]);
        forms.push(vec!["-H".into(), format!("{h}:"), s.into()]);
    }
    forms.push(vec![format!(
        "-----BEGIN PRIVATE KEY-----\n{s}\n-----END PRIVATE KEY-----"
    )]);
    let mut out: Vec<Form> = forms
        .into_iter()
        .map(|words| Form {
            words,
            tail: true,
            lead: true,
            secret: s.to_string(),
        })
        .collect();
    for shape in rules::TOKEN_SHAPES {
        let body = token_body(
            shape.body,
            if shape.max > 0 {
                shape.max
            } else {
                shape.min.max(s.len())
            },
            s,
        );
        out.push(Form {
            words: vec![format!("x={}{body}", shape.prefix)],
            tail: true,
            lead: true,
            secret: body,
        });
    }
    out.push(Form {
        words: vec![format!("eyJ{s}0000000.eyJ{s}0000000.{s}")],
        tail: true,
        lead: true,
        secret: s.to_string(),
    });
    for ps in rules::PATH_SECRETS {
        let segs = "seg/".repeat(usize::from(ps.keep));
        let sep = ps
            .after
            .map(|c| format!("42{}", char::from(c)))
            .unwrap_or_default();
        let host = ps.hosts.first().copied().unwrap_or_default();
        out.push(Form {
            words: vec![format!(
                "https://{host}{}{segs}{sep}{s}/more?x=1",
                ps.prefix
            )],
            tail: true,
            lead: true,
            secret: s.to_string(),
        });
    }
    out
}

/// A token body of exactly `len` bytes, cycling the secret.
fn token_body(body: Body, len: usize, s: &str) -> String {
    let b: String = s.chars().cycle().take(len).collect();
    if body == Body::UpperAlnum {
        b.to_ascii_uppercase()
    } else {
        b
    }
}

/// Junk that cannot change the meaning of what follows it.
fn inert(j: &str) -> bool {
    let name = j.rsplit('/').next().unwrap_or(j);
    !rules::is_program(name)
        && rules::wrapper(name).is_none()
        && !rules::AUTH_SCHEMES
            .iter()
            .any(|s| s.eq_ignore_ascii_case(j))
        && !rules::PROGRAMS
            .iter()
            .flat_map(|p| p.rules.iter().map(|r| r.flag).chain(p.sub))
            .any(|f| f.eq_ignore_ascii_case(j))
        && !j.contains(['"', '\'', '\\'])
        && !rules::GENERIC_FLAGS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(j))
        && !(j.starts_with("--") && keys::key_secret(j, &[]))
}

fn junk() -> impl Strategy<Value = Vec<String>> {
    let one = prop_oneof![
        "[a-z]{1,8}",
        "-[a-zA-Z]",
        "--[a-z]{2,8}",
        "/[a-z]{1,6}/[a-z.]{1,6}",
        "[0-9]{1,5}",
        "[a-z]{1,4}=[a-z0-9]{1,6}",
        "[a-z]{1,5} [a-z]{1,5}",
        "https://[a-z]{1,8}\\.example/[a-z]{0,5}",
    ];
    proptest::collection::vec(one.prop_filter("inert", |j| inert(j)), 0..4)
}

proptest! {
    #[test]
    fn secrets_never_survive(secret in "[a-zA-Z0-9]{8,24}", before in junk(), after in junk()) {
        prop_assume!(!REDACTED.contains(&secret));
        let s = Sanitizer::default();
        let mut all = program_forms(&secret);
        all.extend(generic_forms(&secret).into_iter().map(|mut f| {
            f.words.insert(0, "prog".into());
            f
        }));
        for form in all {
            // Junk goes after the program (and subcommand) and after the form.
            let w = &form.words;
            let head = 1 + usize::from(w.len() > 1 && rules::sub_program(&w[0], &w[1]).is_some());
            let mut argv: Vec<String> = w[..head].to_vec();
            if form.lead {
                argv.extend(before.iter().cloned());
            }
            argv.extend(w[head..].iter().cloned());
            if form.tail {
                argv.extend(after.iter().cloned());
            }
            let n = argv.len();
            s.sanitize_argv(&mut argv);
            prop_assert_eq!(argv.len(), n);
            prop_assert!(!argv.iter().any(|a| a.contains(&form.secret)), "{:?} leaked in {:?}", form.secret, argv);
        }
    }

    #[test]
    fn any_text_keeps_the_argument_count(args in proptest::collection::vec("\\PC{0,24}", 0..8), truncated in any::<bool>()) {
        let mut argv = args.clone();
        Sanitizer::new(&["--x".into()], &["K".into()]).sanitize_argv_truncated(&mut argv, truncated);
        prop_assert_eq!(argv.len(), args.len());
    }
}
