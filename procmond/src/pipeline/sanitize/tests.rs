//! Unit tests for the sanitizer: the leaks and false positives from the
//! hardening issue, one by one. The property tests are in `proptests.rs`,
//! the real-world corpus in `corpus.rs`.

use super::rules::{self, Given};
use super::*;

fn run(args: &[&str]) -> Vec<String> {
    run_t(args, false)
}

fn run_t(args: &[&str], truncated: bool) -> Vec<String> {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Sanitizer::default().sanitize_argv_truncated(&mut argv, truncated);
    argv
}

fn unchanged(args: &[&str]) {
    assert_eq!(run(args), args, "must stay unchanged");
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
    assert_eq!(
        run(&["app", "-password", "x"]),
        ["app", "-password", REDACTED]
    );
}

#[test]
fn dash_p_depends_on_the_program() {
    unchanged(&["ssh", "-p", "22", "host"]);
    unchanged(&["tool", "-p", "hunter2"]);
    unchanged(&["mkdir", "-p", "-m", "700", "d"]);
    unchanged(&["cp", "-p", "a", "b"]);
    unchanged(&["tar", "-p", "-xf", "f"]);
    unchanged(&["rsync", "-a", "-p", "s", "d"]);
    unchanged(&["cargo", "test", "-p", "procmond"]);
    unchanged(&["psql", "-h", "db", "-p", "5432", "-U", "app", "-W"]);
    assert_eq!(
        run(&["/usr/bin/mysql", "-phunter2"]),
        ["/usr/bin/mysql", "-p[REDACTED]"]
    );
    // mysql's -p takes no separate value: the next word is the database.
    unchanged(&["mysql", "-u", "root", "-p", "appdb"]);
    // Numeric passwords are passwords (the port is -P).
    assert_eq!(run(&["mysql", "-p3306"]), ["mysql", "-p[REDACTED]"]);
    assert_eq!(run(&["mysql", "-p=hunter2"]), ["mysql", "-p=[REDACTED]"]);
    assert_eq!(
        run(&["sshpass", "-p", "pw1", "ssh", "h"]),
        ["sshpass", "-p", REDACTED, "ssh", "h"]
    );
    assert_eq!(
        run(&["sshpass", "-ppw1", "ssh", "h"]),
        ["sshpass", "-p[REDACTED]", "ssh", "h"]
    );
    assert_eq!(
        run(&["mongosh", "-u", "a", "-p", "pw1"]),
        ["mongosh", "-u", "a", "-p", REDACTED]
    );
}

#[test]
fn program_specific_flags() {
    assert_eq!(
        run(&["redis-cli", "-a", "pw1", "ping"]),
        ["redis-cli", "-a", REDACTED, "ping"]
    );
    assert_eq!(
        run(&["redis-cli", "AUTH", "u", "pw1"]),
        ["redis-cli", "AUTH", REDACTED, REDACTED]
    );
    assert_eq!(
        run(&["curl", "-u", "user:pw1", "u"]),
        ["curl", "-u", "user:[REDACTED]", "u"]
    );
    assert_eq!(
        run(&["curl", "--user=user:pw1"]),
        ["curl", "--user=user:[REDACTED]"]
    );
    unchanged(&["curl", "-u", "user", "https://h/"]);
    assert_eq!(
        run(&["ldapsearch", "-x", "-w", "pw1"]),
        ["ldapsearch", "-x", "-w", REDACTED]
    );
    assert_eq!(
        run(&["ldapsearch", "-xwpw1"]),
        ["ldapsearch", "-xw[REDACTED]"]
    );
    unchanged(&["ldapsearch", "-x", "-W", "-D", "cn=admin"]);
    assert_eq!(
        run(&["smbclient", "-U", "bob%pw1"]),
        ["smbclient", "-U", "bob%[REDACTED]"]
    );
    for flags in [&["-b"][..], &["-bc"], &["-cb"], &["-B", "-b"]] {
        let mut args = vec!["htpasswd"];
        args.extend(flags);
        args.extend(["f", "user", "pw1"]);
        let out = run(&args);
        assert_eq!(out.last().map(String::as_str), Some(REDACTED), "{args:?}");
        assert_eq!(out[out.len() - 2], "user");
    }
    assert_eq!(
        run(&["htpasswd", "-nb", "user", "pw1"]),
        ["htpasswd", "-nb", "user", REDACTED]
    );
    unchanged(&["htpasswd", "-c", "f", "user"]);
    let o = run(&[
        "openssl", "enc", "-pass", "pass:pw1", "-passin", "env:V", "-passout", "file:/p",
    ]);
    assert_eq!(o[3], "pass:[REDACTED]");
    assert_eq!(&o[4..], ["-passin", "env:V", "-passout", "file:/p"]);
    unchanged(&["openssl", "rsa", "-passin", "fd:3", "-passout", "stdin"]);
    assert_eq!(
        run(&["docker", "login", "-u", "u", "-p", "pw1"])[5],
        REDACTED
    );
    unchanged(&["docker", "run", "-p", "8080:80", "nginx"]);
    assert_eq!(
        run(&["sqlplus", "scott/tiger@orcl"]),
        ["sqlplus", "scott/[REDACTED]@orcl"]
    );
    unchanged(&["sqlplus", "/", "as", "sysdba"]);
}

#[test]
fn wrappers_and_snippets_find_the_program() {
    assert_eq!(
        run(&["sudo", "-u", "mysql", "cp", "-pr", "a", "b"]),
        ["sudo", "-u", "mysql", "cp", "-pr", "a", "b"]
    );
    assert_eq!(
        run(&["sudo", "-u", "root", "mysql", "-ppw1"])[4],
        "-p[REDACTED]"
    );
    assert_eq!(
        run(&["timeout", "10", "sshpass", "-p", "pw1", "ssh", "h"])[4],
        REDACTED
    );
    assert_eq!(
        run(&["env", "A=1", "nohup", "redis-cli", "-a", "pw1"])[5],
        REDACTED
    );
    assert_eq!(
        run(&["docker", "exec", "-it", "db", "mysql", "-ppw1"])[5],
        "-p[REDACTED]"
    );
    unchanged(&[
        "docker",
        "run",
        "--name",
        "mongo",
        "-p",
        "27017:27017",
        "mongo",
    ]);
    unchanged(&["journalctl", "-u", "mongo", "-p", "err"]);
    let out = run(&[
        "sh",
        "-c",
        "mysql -ppw1 db && cp -p a b; sudo -u x mongo -p pw2 | xargs -n1 curl -u u:pw3",
    ]);
    assert_eq!(
        out[2],
        "mysql -p[REDACTED] db && cp -p a b; sudo -u x mongo -p [REDACTED] | xargs -n1 curl -u u:[REDACTED]"
    );
    let out = run(&["sh", "-c", "mysql --password hunter2 && TOKEN=t1  run"]);
    assert_eq!(
        out[2],
        "mysql --password [REDACTED] && TOKEN=[REDACTED]  run"
    );
    let out = run(&[
        "bash",
        "-c",
        "PGPASSWORD='a b' psql -h db; curl -H \"Authorization: Bearer $T\" u",
    ]);
    assert_eq!(
        out[2],
        "PGPASSWORD='[REDACTED]' psql -h db; curl -H \"Authorization: Bearer $T\" u"
    );
    let out = run(&["ssh", "h", "bash -c 'htpasswd -b f u pw1 2>/dev/null'"]);
    assert_eq!(out[2], "bash -c 'htpasswd -b f u [REDACTED] 2>/dev/null'");
}

#[test]
fn never_takes_a_flag_or_nothing_for_a_value() {
    assert_eq!(
        run(&["app", "--password", "--verbose"]),
        ["app", "--password", "--verbose"]
    );
    assert_eq!(
        run(&["app", "--password", "-5"]),
        ["app", "--password", REDACTED]
    );
    // An empty value does not end the search: the next word may be it.
    assert_eq!(
        run(&["app", "--password", "", "pw1"]),
        ["app", "--password", "", REDACTED]
    );
    assert_eq!(
        run(&["app", "--token", " ", "pw1"]),
        ["app", "--token", " ", REDACTED]
    );
    assert_eq!(
        run(&["app", "--password=", "pw1"]),
        ["app", "--password=", REDACTED]
    );
    unchanged(&["app", "--password=", "--verbose"]);
    unchanged(&["ssh-keygen", "-t", "ed25519", "-N", "", "-f", "k"]);
    assert_eq!(
        run(&["sshpass", "-p", "", "ssh", "h"]),
        ["sshpass", "-p", "", "ssh", "h"]
    );
}

#[test]
fn keys_headers_json_and_lists() {
    assert_eq!(
        run(&["env", "API_KEY=zzz", "PATH=/bin"]),
        ["env", "API_KEY=[REDACTED]", "PATH=/bin"]
    );
    assert_eq!(
        run(&["env", "MYSQL_PWD=pw1", "PWD=/home/x", "OLDPWD=/tmp"])[1],
        "MYSQL_PWD=[REDACTED]"
    );
    unchanged(&[
        "env",
        "PWD=/home/x",
        "OLDPWD=..",
        "GIT_AUTHOR_NAME=a",
        "TOKENIZERS_PARALLELISM=false",
    ]);
    unchanged(&[
        "ssh",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "PubkeyAuthentication=yes",
        "h",
    ]);
    assert_eq!(
        run(&[
            "mount",
            "-o",
            "username=u,password=pw1,uid=1000",
            "//s/x",
            "/mnt"
        ])[2],
        "username=u,password=[REDACTED],uid=1000"
    );
    assert_eq!(
        run(&["curl", "-d", r#"{"user":"u","password":"pw1"}"#])[2],
        r#"{"user":"u","password":"[REDACTED]"}"#
    );
    assert_eq!(
        run(&["curl", "-d", r#"{"password": "pw 1", "n": 2}"#])[2],
        r#"{"password": "[REDACTED]", "n": 2}"#
    );
    assert_eq!(run(&["x", "password: pw1"])[1], "password: [REDACTED]");
    assert_eq!(run(&["x", "token:pw1"])[1], "token:[REDACTED]");
    unchanged(&[
        "docker",
        "run",
        "-v",
        "secrets:/run/secrets",
        "token-service:v2",
    ]);
    assert_eq!(
        run(&["curl", "-H", "X-Api-Key: pw1"])[2],
        "X-Api-Key: [REDACTED]"
    );
    assert_eq!(
        run(&["curl", "-H", "PRIVATE-TOKEN:pw1"])[2],
        "PRIVATE-TOKEN:[REDACTED]"
    );
    assert_eq!(run(&["curl", "-H", "X-Api-Key:", "pw1"])[3], REDACTED);
    assert_eq!(
        run(&["curl", "-H", "Authorization: Bearer abc"])[2],
        "Authorization: Bearer [REDACTED]"
    );
    assert_eq!(
        run(&["curl", "-H", "Authorization:Bearer abc"])[2],
        "Authorization:Bearer [REDACTED]"
    );
    assert_eq!(
        run(&["x", "Authorization:Bearer", "abc"]),
        ["x", "Authorization:Bearer", REDACTED]
    );
    assert_eq!(
        run(&["x", "Authorization:", "Basic", "abc"]),
        ["x", "Authorization:", "Basic", REDACTED]
    );
    assert_eq!(
        run(&["x", "Authorization:abc"]),
        ["x", "Authorization:[REDACTED]"]
    );
    assert_eq!(run(&["x", "Bearer", "abc"]), ["x", "Bearer", REDACTED]);
    assert_eq!(
        run(&["app", "--password=correct horse", "next"]),
        ["app", "--password=[REDACTED]", "next"]
    );
    assert_eq!(
        run(&["env", "PASSWORD=correct horse"]),
        ["env", "PASSWORD=[REDACTED]"]
    );
    assert_eq!(
        run(&["kubectl", "--from-literal=password=a b"])[1],
        "--from-literal=password=[REDACTED]"
    );
    assert_eq!(
        run(&["x", "https://h/p?access_token=pw1&x=1"])[1],
        "https://h/p?access_token=[REDACTED]&x=1"
    );
    assert_eq!(
        run(&["java", "-Djavax.net.ssl.keyStorePassword=pw1"])[1],
        "-Djavax.net.ssl.keyStorePassword=[REDACTED]"
    );
    unchanged(&[
        "app",
        "--password-file",
        "/run/s",
        "--token-ttl",
        "1h",
        "--max-tokens",
        "512",
    ]);
    unchanged(&[
        "docker",
        "login",
        "--password-stdin",
        "registry.example.com",
    ]);
    unchanged(&["app", "--no-auth", "x", "--tokenizer", "bert"]);
    unchanged(&[
        "env",
        "GOOGLE_APPLICATION_CREDENTIALS=/k.json",
        "ansible",
        "--private-key",
        "~/.ssh/id",
    ]);
}

#[test]
fn urls_and_token_shapes() {
    assert_eq!(
        run(&["curl", "https://u:pw@host/x"]),
        ["curl", "https://u:[REDACTED]@host/x"]
    );
    assert_eq!(
        run(&["git", "https://ghp_x@github.invalid"]),
        ["git", "https://[REDACTED]@github.invalid"]
    );
    assert_eq!(
        run(&["x", "HTTP_PROXY=user:pw1@proxy:3128"])[1],
        "HTTP_PROXY=user:[REDACTED]@proxy:3128"
    );
    unchanged(&[
        "git",
        "clone",
        "git@github.com:org/repo.git",
        "mailto:a@b.c",
        "img:1.2@sha256:abcd",
    ]);
    let cases = [
        ("AKIAIOSFODNN7EXAMPLE", "AKIA[REDACTED]"),
        ("ghp_0123456789abcdefghij0123456789abcdef", "ghp_[REDACTED]"),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijkl",
            "github_pat_[REDACTED]",
        ),
        ("xoxb-1234567890-abcdefghij", "xoxb-[REDACTED]"),
        ("glpat-abcdefghij0123456789", "glpat-[REDACTED]"),
        ("sk_live_abcdefghij0123456789", "sk_live_[REDACTED]"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_nature-x",
            "eyJ[REDACTED]",
        ),
    ];
    for (token, want) in cases {
        assert_eq!(run(&["x", &format!("t={token}")])[1], format!("t={want}"));
        assert_eq!(run(&["x", token])[1], want);
    }
    unchanged(&[
        "x",
        "AKIAIOSFODNN7EXAMPLEX",
        "xghp_0123456789abcdefghij0123",
        "eyJhbGciOiJIUzI1NiJ9",
    ]);
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----";
    assert_eq!(
        run(&["echo", pem])[1],
        "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----"
    );
}

#[test]
fn truncated_tail_rule() {
    let cut = ["curl", "-o", "f", "https://user:hunt"];
    assert_eq!(run_t(&cut, true)[3], "https://[REDACTED]");
    assert_eq!(
        run_t(&cut, false)[3],
        "https://user:hunt",
        "only when truncated"
    );
    assert_eq!(
        run_t(&["sh", "-c", "git clone https://tok"], true)[2],
        "git clone https://[REDACTED]"
    );
    // Complete URLs and earlier arguments are left alone.
    assert_eq!(run_t(&["curl", "https://h/x"], true)[1], "https://h/x");
    assert_eq!(run_t(&["curl", "https://h", "x"], true)[1], "https://h");
    assert_eq!(run_t(&["curl", "https://a b"], true)[1], "https://a b");
    // Conservative: a complete host at the very end is indistinguishable from a cut userinfo.
    assert_eq!(
        run_t(&["curl", "https://example.com"], true)[1],
        "https://[REDACTED]"
    );
    assert_eq!(run_t(&["x", "ghp_abc"], true)[1], "ghp_[REDACTED]");
    assert_eq!(run_t(&["x", "ghp_abc", "y"], true)[1], "ghp_abc");
}

#[test]
fn extra_patterns_extend_the_builtins() {
    let s = Sanitizer::new(&["--db-pass".into(), "-k".into()], &["SESSION".into()]);
    let mut argv: Vec<String> = [
        "a",
        "--db-pass",
        "x",
        "MY_SESSION=y",
        "--token",
        "z",
        "-k=v",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(s.sanitize_argv(&mut argv), 4);
    assert_eq!(
        argv,
        [
            "a",
            "--db-pass",
            REDACTED,
            "MY_SESSION=[REDACTED]",
            "--token",
            REDACTED,
            "-k=[REDACTED]"
        ]
    );
    let s = Sanitizer::new(&["--db+pw".into()], &[]);
    let mut argv = vec!["a".to_string(), "--db+pw=x".to_string()];
    s.sanitize_argv(&mut argv);
    assert_eq!(argv, ["a", "--db+pw=[REDACTED]"]);
}

#[test]
fn rule_tables_are_consistent() {
    let mut seen = std::collections::HashSet::new();
    for p in rules::PROGRAMS {
        assert!(
            !p.source.is_empty() && !p.names.is_empty() && !p.rules.is_empty(),
            "{:?}",
            p.names
        );
        for name in p.names {
            assert!(
                seen.insert((*name, p.sub)),
                "{name} {:?} has two entries",
                p.sub
            );
            assert!(
                rules::wrapper(name).is_none(),
                "{name} is both a program and a wrapper"
            );
            assert!(rules::is_program(name));
        }
        for r in p.rules {
            let keyed = matches!(r.given, Given::KeyWord | Given::Positional | Given::Nth(_));
            if r.given != Given::Stdin {
                assert_eq!(r.flag.is_empty(), keyed, "{:?} {}", p.names, r.flag);
            }
        }
    }
    for u in rules::PATH_SECRETS {
        assert!(!u.source.is_empty() && !u.hosts.is_empty() && u.prefix.starts_with('/'));
    }
    for t in rules::TOKEN_SHAPES {
        assert!(!t.source.is_empty() && !t.prefix.is_empty() && t.min > 0);
        assert!(t.max == 0 || t.max >= t.min);
    }
    assert!(!rules::is_program("cp") && rules::program("mysql").is_some());
    assert!(rules::sub_program("docker", "login").is_some() && rules::has_subs("docker"));
}

#[test]
fn never_panics_on_multibyte_text() {
    let texts = [
        "é",
        "ü=é",
        "--password=é",
        "https://é:é@é",
        "sh -c 'é -pé'",
        "ghp_é",
        "\u{a0}--token\u{a0}x",
        "'é",
        "\"é\\",
        "-e",
        "-c",
        "password = '\\é",
        "IDENTIFIED BY é PASSWORD 'é''",
        "https://hooks.slack.com/services/é/é/é",
        "https://api.telegram.org/botaé:é",
        "echo é | chpasswd",
    ];
    for prog in ["mysql", "python3", "sh"] {
        for a in texts {
            for b in texts {
                let mut argv = vec![prog.to_string(), a.to_string(), b.to_string()];
                Sanitizer::default().sanitize_argv_truncated(&mut argv, true);
                assert_eq!(argv.len(), 3);
            }
        }
    }
}

#[test]
fn code_sql_and_piped_secrets() {
    let sql = |q: &str| run(&["mysql", "-e", q])[2].clone();
    assert_eq!(
        sql("ALTER USER u IDENTIFIED BY 'ab''cd'"),
        "ALTER USER u IDENTIFIED BY '[REDACTED]'"
    );
    // Oracle takes the password bare.
    assert_eq!(
        sql("ALTER USER scott IDENTIFIED BY tiger;"),
        "ALTER USER scott IDENTIFIED BY [REDACTED];"
    );
    assert_eq!(
        sql("CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('pw1')"),
        "CREATE USER u IDENTIFIED VIA ed25519 USING PASSWORD('[REDACTED]')"
    );
    let py = |c: &str| run(&["python3", "-c", c])[2].clone();
    assert_eq!(py("x = {'token': 'pw1'}"), "x = {'token': '[REDACTED]'}");
    assert_eq!(py("password: str = getpw()"), "password: str = getpw()");
    assert_eq!(
        py("pw = b'x'; TOKEN = r\"pw2\""),
        "pw = b'[REDACTED]'; TOKEN = r\"[REDACTED]\""
    );
    unchanged(&["python3", "-c", "verbose = True; password = ''"]);
    // Quoted in a cluster: perl -lne.
    assert_eq!(
        run(&["perl", "-lne", "$pass = 'pw1'"])[2],
        "$pass = '[REDACTED]'"
    );
    // A value starting with `-` needs a byte no flag holds; `-abc` is a flag.
    unchanged(&["app", "--password", "-abc"]);
    assert_eq!(run(&["app", "--password", "-a!c"])[2], REDACTED);
    // Only `|` pipes the echo into the next command, not `;` or `||`.
    unchanged(&["sh", "-c", "echo pw1; docker login --password-stdin r"]);
    unchanged(&["sh", "-c", "echo pw1 || docker login --password-stdin r"]);
    assert_eq!(
        run(&["sh", "-c", "printf 'u:pw1\\n' | chpasswd"])[2],
        "printf 'u:[REDACTED]' | chpasswd"
    );
}
