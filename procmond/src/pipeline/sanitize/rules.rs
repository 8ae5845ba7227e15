//! The sanitizer's rules as data; the matching lives in `mod.rs` and `scan.rs`.
//!
//! Which flag carries a secret depends on the program (`-p` is a password for
//! mysql and sshpass, a port for ssh, "preserve" for cp), so program rules are
//! keyed by the program's basename, each entry naming the program its syntax
//! comes from. Then come the wrappers that run another program, the generic
//! key and flag names, header names and token shapes. Adding a rule is one
//! table entry; the unit tests walk these tables and try every entry in every
//! form it declares.

/// How a program rule's value is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// The next word (`-f V`, `--flag V`), or `--flag=V` / `-f=V`.
    Next,
    /// Only attached (`-fV`): `-f` alone prompts, the next word is something else.
    Attached,
    /// `-f V` or `-fV`.
    Both,
    /// The flag letter anywhere in a short-option cluster (`-b`, `-bc`, `-nb`)
    /// makes the last positional word of the command the value.
    ClusterLast,
    /// A positional word equal to `flag` (any case): the last positional word after it.
    WordLast,
    /// A positional word equal to `flag` (any case): the next word.
    WordNext,
    /// A positional word equal to `flag` (any case): every later positional word.
    WordRest,
    /// A positional word that names a secret key (`aws_secret_access_key`,
    /// `//registry/:_authToken`): the next word. `flag` is empty.
    KeyWord,
    /// Every positional word, when it has the value's shape (`user/pass@db`). `flag` is empty.
    Positional,
    /// The n-th positional word (from 1; words taken by `Skip` flags do not
    /// count): `wpa_passphrase SSID PASS`. `flag` is empty.
    Nth(u8),
    /// The flag's value is not a secret, whatever the generic rules say.
    NotSecret,
    /// The flag takes the next word as a value that is not secret (and not
    /// a positional word for `Nth`).
    Skip,
    /// The flag's value names the program that runs (`docker run --entrypoint mysql`).
    Runs,
    /// The flag (or, with an empty `flag`, the program itself) reads the secret
    /// from stdin: in a command line, what `echo`/`printf` pipes into it is the value.
    Stdin,
}

/// Which part of a value is the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// All of it.
    Whole,
    /// What follows the first separator (`user:PASS`, `user%PASS`); without the
    /// separator there is no secret (the program prompts).
    AfterSep(u8),
    /// openssl pass phrase argument: `pass:PASS` keeps `pass:`; `env:VAR`,
    /// `file:PATH`, `fd:N` and `stdin` are references; anything else is whole.
    OpensslPass,
    /// `name=VALUE[; …]` keeps the first name; a word without `=` is a cookie file.
    Cookie,
    /// Oracle logon `user/PASS[@connect]`: keeps the user and `@connect`.
    OracleLogon,
    /// Interpreter code (`python -c`, `node -e`): the string literal assigned
    /// to a secret name (`password = "PASS"`, `auth=('u', 'PASS')`); see `code.rs`.
    Code,
    /// SQL (`psql -c`, `mysql -e`): the literal after `PASSWORD` or
    /// `IDENTIFIED … BY`, and secret `key=value` pairs; see `code.rs`.
    Sql,
}

/// One flag (or keyword) of one program.
#[derive(Debug)]
pub struct Rule {
    pub flag: &'static str,
    pub given: Given,
    pub value: Value,
}

/// The rules of a program, or of one of its subcommands (`docker login`).
#[derive(Debug)]
pub struct Program {
    /// Basenames of argv[0] (or of the word naming the command in a snippet).
    pub names: &'static [&'static str],
    /// A positional word that must come first (`login`) for these rules to apply.
    pub sub: Option<&'static str>,
    /// Boolean short options that may precede a rule's letter in a cluster (`-xw PASS`).
    pub cluster: &'static str,
    pub rules: &'static [Rule],
    /// The syntax these rules come from (documentation, checked by the tests).
    #[allow(dead_code)]
    pub source: &'static str,
}

const fn r(flag: &'static str, given: Given, value: Value) -> Rule {
    Rule { flag, given, value }
}

const fn p(
    names: &'static [&'static str],
    sub: Option<&'static str>,
    rules: &'static [Rule],
    source: &'static str,
) -> Program {
    Program {
        names,
        sub,
        cluster: "",
        rules,
        source,
    }
}

pub use super::shapes::{Body, PATH_SECRETS, PRIVATE_KEY_MARKERS, TOKEN_FIRST_BYTES, TOKEN_SHAPES};
use Given::*;
use Value::*;

/// Programs whose flags carry secrets. PostgreSQL clients (psql, pg_dump) have
/// no password flag (`-W` prompts): `PGPASSWORD=` and URIs are generic rules.
#[rustfmt::skip]
pub const PROGRAMS: &[Program] = &[
    p(&["mysql", "mariadb"], None, &[r("-p", Attached, Whole), r("-e", Both, Sql), r("--execute", Next, Sql)],
      "mysql/mariadb client: -pPASS (-p alone prompts, a separate word after it is the database); \
       -e/--execute SQL (IDENTIFIED BY 'PASS')"),
    p(&["mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mysqlshow", "mysqlslap", "mysqlpump",
        "mysqlbinlog", "mysql_upgrade", "mariadb-dump", "mariadb-admin", "mariadb-import", "mariadb-check",
        "mariadb-show", "mariadb-upgrade", "mariadb-slap", "mariadb-binlog"],
      None, &[r("-p", Attached, Whole)],
      "MySQL/MariaDB tools: -pPASS; -p alone prompts and a separate word after it is the database"),
    p(&["mysqladmin", "mariadb-admin"], Some("password"), &[r("", Positional, Whole)],
      "mysqladmin password NEW: the words after the command are the new password"),
    p(&["mydumper", "myloader"], None, &[r("-p", Both, Whole)], "mydumper/myloader: -p PASS, -pPASS"),
    p(&["pt-online-schema-change", "pt-table-checksum", "pt-table-sync", "pt-archiver", "pt-kill",
        "pt-query-digest", "pt-heartbeat", "pt-deadlock-logger", "pt-duplicate-key-checker",
        "pt-index-usage", "pt-upgrade", "pt-config-diff", "pt-find", "pt-fk-error-logger",
        "pt-slave-find", "pt-slave-restart", "pt-replica-find", "pt-replica-restart", "pt-show-grants",
        "pt-mysql-summary", "pt-stalk", "pt-variable-advisor", "pt-visual-explain", "pt-mext"],
      None, &[r("-p", Both, Whole)], "Percona Toolkit (Getopt::Long): -p PASS, --password PASS"),
    p(&["psql"], None, &[r("-c", Both, Sql), r("--command", Next, Sql)],
      "psql -c/--command SQL (ALTER USER … PASSWORD 'PASS'); psql has no password flag"),
    p(&["mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat",
        "mongotop", "mongofiles"],
      None, &[r("-p", Both, Whole)], "MongoDB shell and tools: -p PASS, --password PASS"),
    p(&["sshpass"], None, &[r("-p", Both, Whole)], "sshpass: -p PASS or -pPASS (-e reads SSHPASS, -f a file)"),
    p(&["redis-cli", "valkey-cli", "keydb-cli"], None,
      &[r("-a", Both, Whole), r("auth", WordRest, Whole), r("requirepass", WordNext, Whole),
        r("masterauth", WordNext, Whole)],
      "redis-cli: -a PASS; the AUTH command's arguments; CONFIG SET requirepass/masterauth PASS"),
    p(&["redis-server", "valkey-server", "keydb-server"], None,
      &[r("--requirepass", Next, Whole), r("--masterauth", Next, Whole)],
      "redis-server: config directives on the command line"),
    Program {
        names: &["ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapwhoami", "ldapcompare",
                 "ldapmodrdn", "ldapexop", "ldapurl"],
        sub: None, cluster: "xZvnMLNcCAtuW", rules: &[r("-w", Both, Whole)],
        source: "OpenLDAP clients: -w PASS (-W prompts, -y FILE)",
    },
    Program {
        names: &["ldappasswd"], sub: None, cluster: "xZvnWAS",
        rules: &[r("-w", Both, Whole), r("-a", Both, Whole), r("-s", Both, Whole)],
        source: "ldappasswd: -w PASS (bind), -a OLD, -s NEW",
    },
    p(&["curl"], None,
      &[r("-u", Both, AfterSep(b':')), r("--user", Next, AfterSep(b':')), r("-U", Both, AfterSep(b':')),
        r("--proxy-user", Next, AfterSep(b':')), r("--oauth2-bearer", Next, Whole),
        r("-E", Both, AfterSep(b':')), r("--cert", Next, AfterSep(b':')), r("--proxy-cert", Next, AfterSep(b':')),
        r("-b", Both, Cookie), r("--cookie", Next, Cookie)],
      "curl: -u/--user user:PASS (user alone prompts), -U/--proxy-user, --oauth2-bearer, \
       -E/--cert file:PASS, -b/--cookie name=VALUE (else a file)"),
    p(&["etcdctl"], None, &[r("--user", Next, AfterSep(b':'))], "etcdctl: --user user:PASS"),
    p(&["rpcclient", "smbcacls", "smbget", "smbtree", "net"], None,
      &[r("-U", Both, AfterSep(b'%')), r("--user", Next, AfterSep(b'%'))],
      "Samba clients: -U user%PASS (user alone prompts)"),
    p(&["smbclient"], None,
      &[r("-U", Both, AfterSep(b'%')), r("--user", Next, AfterSep(b'%')), r("", Nth(2), Whole),
        r("-c", Skip, Whole), r("-D", Skip, Whole), r("-I", Skip, Whole), r("-m", Skip, Whole),
        r("-n", Skip, Whole), r("-O", Skip, Whole), r("-p", Skip, Whole), r("-R", Skip, Whole),
        r("-s", Skip, Whole), r("-t", Skip, Whole), r("-T", Skip, Whole), r("-W", Skip, Whole),
        r("-A", Skip, Whole), r("-l", Skip, Whole), r("-d", Skip, Whole), r("-M", Skip, Whole),
        r("-L", Skip, Whole), r("--command", Skip, Whole), r("--directory", Skip, Whole),
        r("--port", Skip, Whole), r("--workgroup", Skip, Whole), r("--authentication-file", Skip, Whole),
        r("--configfile", Skip, Whole), r("--list", Skip, Whole), r("--message", Skip, Whole),
        r("--socket-options", Skip, Whole), r("--name-resolve", Skip, Whole), r("--max-protocol", Skip, Whole),
        r("--netbiosname", Skip, Whole), r("--ip-address", Skip, Whole), r("--tar", Skip, Whole),
        r("--timeout", Skip, Whole), r("--debuglevel", Skip, Whole), r("--log-basename", Skip, Whole),
        r("--realm", Skip, Whole), r("--scope", Skip, Whole)],
      "smbclient: -U user%PASS; smbclient //server/share PASS (options with a value do not count)"),
    p(&["wpa_passphrase"], None, &[r("", Nth(2), Whole)], "wpa_passphrase SSID PASSPHRASE"),
    p(&["isql", "iusql"], None, &[r("", Nth(3), Whole)], "unixODBC isql DSN USER PASS"),
    p(&["smbmap"], None, &[r("-p", Next, Whole)], "smbmap: -u USER -p PASS"),
    p(&["htpasswd"], None, &[r("-b", ClusterLast, Whole)],
      "Apache htpasswd: with -b (also -bc, -cb, -nb) the password is the last argument"),
    p(&["openssl"], None,
      &[r("-pass", Next, OpensslPass), r("-passin", Next, OpensslPass), r("-passout", Next, OpensslPass),
        r("-password", Next, OpensslPass), r("-k", Next, Whole), r("-K", Next, Whole),
        r("passwd", WordLast, Whole)],
      "openssl: -pass/-passin/-passout pass:PASS (env:, file:, fd:, stdin are references), \
       enc -k PASS / -K HEX, passwd PASS"),
    p(&["plink", "pscp", "psftp", "putty"], None, &[r("-pw", Next, Whole)], "PuTTY tools: -pw PASS"),
    p(&["keytool", "jarsigner"], None,
      &[r("-storepass", Next, Whole), r("-keypass", Next, Whole), r("-srcstorepass", Next, Whole),
        r("-deststorepass", Next, Whole), r("-srckeypass", Next, Whole), r("-destkeypass", Next, Whole),
        r("-new", Next, Whole)],
      "Java keytool/jarsigner: -storepass, -keypass and friends (-storepass:env/:file are references)"),
    p(&["docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras", "crane"], Some("login"),
      &[r("-p", Both, Whole), r("--password-stdin", Stdin, Whole)],
      "container registry login: docker/podman/helm registry … login -p PASS; echo PASS | … --password-stdin"),
    p(&["docker", "podman", "nerdctl", "buildah"], None,
      &[r("--secret", NotSecret, Whole), r("--entrypoint", Runs, Whole)],
      "docker build/run --secret id=…,src=… names a secret, it does not hold one; \
       run --entrypoint PROG runs PROG with the arguments after the image"),
    p(&["gh"], Some("secret"), &[r("-b", Both, Whole), r("--body", Next, Whole)],
      "GitHub CLI: gh secret set NAME -b/--body VALUE"),
    p(&["gh"], Some("auth"), &[r("--with-token", Stdin, Whole)], "GitHub CLI: echo TOKEN | gh auth login --with-token"),
    p(&["chpasswd", "chgpasswd"], None, &[r("", Stdin, AfterSep(b':'))], "shadow-utils: echo user:PASS | chpasswd"),
    p(&["passwd"], None, &[r("--stdin", Stdin, Whole)], "passwd --stdin (Red Hat): echo PASS | passwd --stdin USER"),
    p(&["kubectl"], Some("secret"), &[r("--from-literal", Next, AfterSep(b'='))],
      "kubectl create secret … --from-literal=KEY=VALUE: every value is secret data"),
    p(&["http", "https", "xh", "xhs"], None, &[r("-a", Both, AfterSep(b':')), r("--auth", Next, AfterSep(b':'))],
      "HTTPie and xh: -a/--auth user:PASS (user alone prompts)"),
    p(&["twine"], None, &[r("-p", Both, Whole)], "twine upload -u USER -p PASS"),
    p(&["snmpget", "snmpgetnext", "snmpwalk", "snmpbulkwalk", "snmpbulkget", "snmpset", "snmptrap",
        "snmpinform", "snmptable", "snmpdelta", "snmpstatus", "snmpdf", "snmpnetstat", "snmpusm",
        "snmpvacm", "snmptest"],
      None, &[r("-c", Both, Whole), r("-A", Both, Whole), r("-X", Both, Whole)],
      "Net-SNMP tools: -c COMMUNITY, -A AUTH_PASS, -X PRIV_PASS"),
    p(&["rclone"], Some("config"), &[r("", KeyWord, Whole)],
      "rclone config create/update NAME [TYPE] KEY VALUE …: the value of a secret key (pass, secret_access_key)"),
    p(&["rclone"], None, &[r("obscure", WordLast, Whole)], "rclone obscure PASS"),
    p(&["az"], Some("login"), &[r("-p", Both, Whole)], "Azure CLI: az login -u ID -p PASS"),
    p(&["doctl"], None, &[r("-t", Both, Whole)], "DigitalOcean CLI: -t TOKEN"),
    p(&["useradd", "usermod"], None, &[r("-p", Next, Whole)],
      "shadow-utils: -p HASH (a crypt hash, still a credential)"),
    p(&["rabbitmqctl"], None,
      &[r("add_user", WordLast, Whole), r("change_password", WordLast, Whole),
        r("authenticate_user", WordLast, Whole)],
      "rabbitmqctl add_user/change_password/authenticate_user USER PASS"),
    p(&["vault", "bao"], None, &[r("login", WordLast, Whole), r("secret_id=", Attached, Whole)],
      "HashiCorp Vault / OpenBao: vault login TOKEN; AppRole login … secret_id=SECRET"),
    p(&["sqlplus", "rman", "dgmgrl", "expdp", "impdp", "sqlldr", "exp", "imp"], None,
      &[r("", Positional, OracleLogon), r("userid=", Attached, OracleLogon)],
      "Oracle tools: user/PASS[@connect] logon argument, or userid=user/PASS[@connect]"),
    p(&["lftp"], None, &[r("-u", Next, AfterSep(b','))], "lftp: -u user,PASS"),
    p(&["mosquitto_pub", "mosquitto_sub", "mosquitto_rr"], None,
      &[r("-P", Next, Whole), r("--pw", Next, Whole)], "Mosquitto clients: -P PASS, --pw PASS"),
    p(&["ncftp", "ncftpget", "ncftpput", "ncftpls"], None, &[r("-p", Next, Whole)], "NcFTP: -u USER -p PASS"),
    p(&["7z", "7za", "7zr", "7zz", "rar", "unrar"], None, &[r("-p", Attached, Whole)],
      "7-Zip and RAR: -pPASS (-p alone prompts, -p- means none)"),
    p(&["zip", "unzip", "zipcloak"], None, &[r("-P", Next, Whole), r("--password", Next, Whole)],
      "Info-ZIP: -P PASS"),
    p(&["ssh-keygen"], None, &[r("-N", Next, Whole), r("-P", Next, Whole)],
      "ssh-keygen: -N NEW_PASSPHRASE, -P OLD_PASSPHRASE"),
    p(&["sqlcmd", "bcp", "osql"], None, &[r("-P", Both, Whole), r("-Q", Both, Sql), r("-q", Both, Sql)],
      "SQL Server tools: -U USER -P PASS; -Q/-q SQL"),
    p(&["cqlsh"], None, &[r("-p", Next, Whole), r("-e", Next, Sql), r("--execute", Next, Sql)],
      "Cassandra cqlsh: -u USER -p PASS; -e CQL (WITH PASSWORD = 'PASS')"),
    p(&["ipmitool"], None, &[r("-P", Next, Whole)],
      "ipmitool: -U USER -P PASS (-E reads IPMI_PASSWORD, -f a file)"),
    p(&["rdesktop"], None, &[r("-p", Both, Whole)], "rdesktop: -p PASS (-p - reads stdin)"),
    p(&["xfreerdp", "xfreerdp3", "wlfreerdp", "sdl-freerdp"], None,
      &[r("/p:", Attached, Whole), r("/pth:", Attached, Whole)], "FreeRDP: /p:PASS, /pth:HASH"),
    p(&["nmcli"], None,
      &[r("password", WordNext, Whole), r("wifi-sec.psk", WordNext, Whole),
        r("802-11-wireless-security.psk", WordNext, Whole)],
      "NetworkManager: nmcli dev wifi connect SSID password PASS; wifi-sec.psk PASS"),
    p(&["openvpn"], None, &[r("--auth-user-pass", NotSecret, Whole)], "openvpn --auth-user-pass FILE names a file"),
    p(&["aws"], Some("configure"), &[r("", KeyWord, Whole)], "aws configure set aws_secret_access_key VALUE"),
    p(&["git", "npm", "pnpm", "yarn", "pip", "pip3", "poetry", "conda"], Some("config"), &[r("", KeyWord, Whole)],
      "config set KEY VALUE (git config, npm config set //registry/:_authToken, yarn npmAuthToken, \
       poetry pypi-token.*)"),
    Program {
        names: &["python", "python2", "python3", "python3.8", "python3.9", "python3.10", "python3.11",
                 "python3.12", "python3.13", "python3.14", "pypy", "pypy3"],
        sub: None, cluster: "bBdEhiIOqsSuvx", rules: &[r("-c", Both, Code)],
        source: "Python: -c CODE (password = '…', auth=('u', '…'))",
    },
    p(&["node", "nodejs", "bun"], None,
      &[r("-e", Next, Code), r("--eval", Next, Code), r("-p", Next, Code), r("--print", Next, Code)],
      "Node.js: -e/--eval, -p/--print CODE"),
    Program {
        names: &["perl"], sub: None, cluster: "nlpaswTtWXUc", rules: &[r("-e", Both, Code), r("-E", Both, Code)],
        source: "Perl: -e/-E CODE, also after -n -l -p -a (perl -lne …)",
    },
    Program {
        names: &["ruby"], sub: None, cluster: "nlpaswcdvW", rules: &[r("-e", Both, Code)],
        source: "Ruby: -e CODE",
    },
    p(&["php"], None, &[r("-r", Both, Code)], "PHP CLI: -r CODE"),
];

/// A program that runs another one: after its options (and `positionals`
/// fixed arguments) the next word names the program.
#[derive(Debug)]
pub struct Wrapper {
    pub names: &'static [&'static str],
    /// Its options that take the next word as their value.
    pub value_flags: &'static [&'static str],
    /// Fixed positional arguments before the command (timeout's duration).
    pub positionals: u8,
}

const fn w(
    names: &'static [&'static str],
    value_flags: &'static [&'static str],
    positionals: u8,
) -> Wrapper {
    Wrapper {
        names,
        value_flags,
        positionals,
    }
}

/// Wrappers (and shell keywords, which take a command after them too).
#[rustfmt::skip]
pub const WRAPPERS: &[Wrapper] = &[
    w(&["sudo"], &["-u", "-g", "-h", "-p", "-r", "-t", "-C", "-D", "-T", "-U", "--user", "--group", "--host",
        "--prompt", "--role", "--type", "--close-from", "--chdir", "--command-timeout", "--other-user"], 0),
    w(&["doas"], &["-u", "-C"], 0),
    w(&["env"], &["-u", "-C", "-S", "--unset", "--chdir", "--split-string"], 0),
    w(&["exec"], &["-a"], 0),
    w(&["time"], &["-f", "-o", "--format", "--output"], 0),
    w(&["nice"], &["-n", "--adjustment"], 0),
    w(&["ionice"], &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata"], 0),
    w(&["stdbuf"], &["-i", "-o", "-e"], 0),
    w(&["timeout"], &["-s", "-k", "--signal", "--kill-after"], 1),
    w(&["xargs"], &["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter", "--max-args",
        "--max-procs", "--replace", "--max-lines", "--max-chars", "--process-slot-var"], 0),
    w(&["chroot"], &["--userspec", "--groups"], 1),
    w(&["watch"], &["-n", "--interval"], 0),
    w(&["flock"], &["-w", "-E", "--timeout", "--conflict-exit-code"], 1),
    w(&["strace"], &["-o", "-e", "-p", "-s", "-u", "-a", "-b", "-E", "-I", "-O", "-P", "-S", "-X"], 0),
    w(&["ltrace"], &["-o", "-e", "-p", "-s", "-u", "-a", "-n", "-A", "-D", "-F", "-l", "-x"], 0),
    w(&["taskset", "chrt"], &[], 1),
    w(&["runuser"], &["-u", "-g", "-G", "--user", "--group", "--supp-group"], 0),
    w(&["systemd-run"], &["-u", "--unit", "-p", "--property", "-E", "--setenv", "--uid", "--gid", "--nice",
        "--working-directory", "-M", "--machine", "-H", "--host", "--description", "--slice",
        "--on-calendar", "--on-active"], 0),
    w(&["numactl"], &["-N", "-m", "-C", "-p", "-i", "--cpunodebind", "--membind", "--physcpubind",
        "--preferred", "--interleave"], 0),
    w(&["nsenter"], &["-t", "--target"], 0),
    w(&["nohup", "setsid", "command", "builtin", "unbuffer", "eatmydata", "catchsegv", "torsocks",
        "proxychains", "proxychains4", "caffeinate", "firejail", "setpriv", "unshare",
        "if", "then", "else", "elif", "do", "while", "until", "!", "{"], &[], 0),
];

/// Wrapper options that make the wrapper read a password from stdin
/// (`echo PW | sudo -S cmd`): like a `Stdin` rule of a program.
pub const WRAPPER_STDIN_FLAGS: &[(&str, &str)] = &[("sudo", "-S"), ("sudo", "--stdin")];

/// Programs whose arguments, piped into a `Stdin` rule's command, are its secret.
pub const PIPE_SOURCES: &[&str] = &["echo", "printf"];

/// Flags after which the next word names a program (`find … -exec CMD`); `--` too.
pub const COMMAND_FLAGS: &[&str] = &["--", "-exec", "-execdir", "-ok", "-okdir"];

/// Flags whose value is secret for every program (any case), besides the
/// long flags that name a secret key (see the key tables below).
#[rustfmt::skip]
pub const GENERIC_FLAGS: &[&str] = &[
    "--password", "--passwd", "--pass", "--pw", "--passphrase", "--secret", "--token", "--api-key",
    "--apikey", "--access-key", "--secret-key", "--auth", "--auth-token", "--access-token",
    "--client-secret", "--bearer",
];

/// Parts of a key (`KEY=`, `--flag`, `"key":`) that make it secret, matched
/// anywhere in the key in any case; `_`, `-` and `.` match each other.
#[rustfmt::skip]
pub const SECRET_KEY_PARTS: &[&str] = &[
    "PASSWORD", "PASSWD", "PASSPHRASE", "PASSCODE", "SECRET", "TOKEN", "API_KEY", "APIKEY",
    "ACCESS_KEY", "ACCESSKEY", "PRIVATE_KEY", "PRIVATEKEY", "CREDENTIAL", "ENCRYPTION_KEY",
    "MASTER_KEY", "SIGNING_KEY",
];

/// Whole keys that are secret though they hold no secret part: signatures
/// of pre-signed URLs (Azure SAS `sig=`, S3 `X-Amz-Signature=`).
pub const SECRET_KEYS_EXACT: &[&str] = &["SIG", "X_AMZ_SIGNATURE", "X_GOOG_SIGNATURE"];

/// Words that make a key secret only as its last segment (`DB_PASS`,
/// `MYSQL_PWD`, `--auth`); `PWD` alone is the working directory.
pub const SECRET_LAST_SEGMENTS: &[&str] = &["PASS", "PW", "PWD", "AUTH"];

/// A key containing one of these is not secret (`--tokenizer`).
pub const BENIGN_KEY_PARTS: &[&str] = &["TOKENIZ"];

/// A key whose last segment is one of these names something about the
/// secret, not the secret: `--password-file`, `--secret-id`, `TOKEN_TTL`.
#[rustfmt::skip]
pub const BENIGN_LAST_SEGMENTS: &[&str] = &[
    "FILE", "FILES", "PATH", "DIR", "STDIN", "FD", "ENV", "CMD", "COMMAND", "PROMPT", "ID", "NAME",
    "TYPE", "MODE", "METHOD", "LENGTH", "LEN", "SIZE", "MIN", "MAX", "TTL", "TIMEOUT", "EXPIRY",
    "EXPIRES", "TOKENS", "COUNT", "LIMIT", "URL", "URI", "ENDPOINT", "HOST", "PORT", "USER",
    "USERNAME", "POLICY", "ALGORITHM", "STORE", "HELPER",
];

/// Keys whose value is usually a file path: a value starting with `/`, `~/`,
/// `./` or `../` is not secret (`GOOGLE_APPLICATION_CREDENTIALS=/k.json`).
pub const PATH_VALUE_KEY_PARTS: &[&str] = &["CREDENTIAL", "PRIVATE_KEY", "PRIVATEKEY", "KEYFILE"];

/// Values that are never secret for a generic rule (`PasswordAuthentication=no`).
pub const BENIGN_VALUES: &[&str] = &["true", "false", "yes", "no", "on", "off"];

/// Headers whose value is `SCHEME CREDENTIALS`: the scheme is kept.
pub const AUTH_HEADERS: &[&str] = &["authorization", "proxy-authorization"];

/// Headers whose whole value is secret, besides any header named after a
/// secret key (`X-Auth-Token`, `X-Api-Key`, `PRIVATE-TOKEN` match the key tables).
#[rustfmt::skip]
pub const SECRET_HEADERS: &[&str] = &[
    "cookie", "set-cookie", "x-api-key", "api-key", "apikey", "x-auth-token", "private-token",
    "job-token", "deploy-token", "x-vault-token", "x-goog-api-key", "x-amz-security-token",
    "x-access-token", "x-auth-key",
];

/// HTTP authentication schemes (IANA registry and common extensions).
#[rustfmt::skip]
pub const AUTH_SCHEMES: &[&str] = &[
    "bearer", "basic", "token", "digest", "negotiate", "ntlm", "hoba", "mutual", "aws4-hmac-sha256",
    "sso-key", "apikey",
];

/// A scheme word that redacts the next word wherever it appears.
pub const STANDALONE_SCHEMES: &[&str] = &["bearer"];

/// openssl pass phrase arguments that refer to the secret instead of holding it.
pub const OPENSSL_REFERENCES: &[&str] = &["env:", "file:", "fd:", "stdin"];

/// `x:y@host` is not userinfo when `x` is one of these URI schemes.
pub const NOT_USERINFO: &[&str] = &["mailto", "sip", "sips", "tel", "xmpp", "news"];

/// `name:tag@sha256:…` is an image reference, not userinfo.
pub const DIGEST_PREFIXES: &[&str] = &["sha256:", "sha384:", "sha512:", "sha1:", "md5:"];

/// The program entry (without a subcommand) for a basename.
pub fn program(name: &str) -> Option<&'static Program> {
    if !maybe_program(name) {
        return None;
    }
    PROGRAMS
        .iter()
        .find(|p| p.sub.is_none() && p.names.contains(&name))
}

/// The entry for `name`'s subcommand `word`, if it has rules.
pub fn sub_program(name: &str, word: &str) -> Option<&'static Program> {
    PROGRAMS
        .iter()
        .find(|p| p.sub == Some(word) && p.names.contains(&name))
}

/// Whether some entry has a subcommand for `name`.
pub fn has_subs(name: &str) -> bool {
    maybe_program(name)
        && PROGRAMS
            .iter()
            .any(|p| p.sub.is_some() && p.names.contains(&name))
}

/// Whether `name` has any entry.
pub fn is_program(name: &str) -> bool {
    maybe_program(name) && PROGRAMS.iter().any(|p| p.names.contains(&name))
}

pub fn wrapper(name: &str) -> Option<&'static Wrapper> {
    let first = name.as_bytes().first()?;
    if !WRAPPER_FIRST_BYTES[usize::from(*first)] {
        return None;
    }
    WRAPPERS.iter().find(|w| w.names.contains(&name))
}

/// A cheap first-byte filter in front of the table scans above.
fn maybe_program(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(|b| PROGRAM_FIRST_BYTES[usize::from(*b)])
}

const PROGRAM_FIRST_BYTES: [bool; 256] = {
    let mut set = [false; 256];
    let mut i = 0;
    while i < PROGRAMS.len() {
        let mut j = 0;
        while j < PROGRAMS[i].names.len() {
            set[PROGRAMS[i].names[j].as_bytes()[0] as usize] = true;
            j += 1;
        }
        i += 1;
    }
    set
};

const WRAPPER_FIRST_BYTES: [bool; 256] = {
    let mut set = [false; 256];
    let mut i = 0;
    while i < WRAPPERS.len() {
        let mut j = 0;
        while j < WRAPPERS[i].names.len() {
            set[WRAPPERS[i].names[j].as_bytes()[0] as usize] = true;
            j += 1;
        }
        i += 1;
    }
    set
};
