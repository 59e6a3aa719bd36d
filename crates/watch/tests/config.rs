//! `permatoken.toml`: what is accepted, what each mistake says (file, line, column, what is
//! allowed), where the file is looked for, and what runs without one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use permatoken_watch::config::{
    self, AppSource, Backups, ConfigError, Loaded, MAX_CONFIG_BYTES, Policy, RouteKind, SecretFrom,
    StateLocation, Target, TokenSource,
};

const FILE: &str = "/etc/permatoken/permatoken.toml";

fn parse(text: &str) -> Loaded {
    config::parse(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    match config::parse(text, Path::new(FILE)) {
        Ok(loaded) => panic!("accepted: {loaded:?}"),
        Err(e) => e.to_string(),
    }
}

/// The example of issue 9, verbatim.
const ISSUE_EXAMPLE: &str = r#"[defaults]
interval = "1h"        # humane durations: "1s", "5m", "1h"
warn_days = 14
crit_days = 3

[[token]]
name = "orders"
env_file = "/srv/orders/.env"            # WHATSAPP_ACCESS_TOKEN; app id/secret from the same file
backups = ["WHATSAPP_ACCESS_TOKEN_BACKUP"]
reload = "systemctl restart orders"
alerts = ["ops"]

[[alert]]
name = "ops"
kind = "webhook"                          # or "slack" (incoming-webhook JSON), or "command"
url = "https://alerts.example.com/hook"
"#;

#[test]
fn the_issue_example_is_accepted_as_written() {
    let Loaded { config, warnings } = parse(ISSUE_EXAMPLE);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.path.as_deref(), Some(Path::new(FILE)));
    assert_eq!(config.defaults.interval, Duration::from_secs(3600));
    assert_eq!(
        (config.defaults.warn_days, config.defaults.crit_days),
        (14, 3)
    );
    let token = config.token("orders").unwrap();
    assert_eq!(
        token.source,
        TokenSource::EnvFile {
            path: "/srv/orders/.env".into(),
            key: "WHATSAPP_ACCESS_TOKEN".into()
        }
    );
    assert_eq!(token.app, AppSource::EnvFile("/srv/orders/.env".into()));
    assert_eq!(
        token.backups,
        Backups::Keys(vec!["WHATSAPP_ACCESS_TOKEN_BACKUP".into()])
    );
    assert_eq!(token.reload.as_deref(), Some("systemctl restart orders"));
    assert_eq!(*token.alerts, ["ops"]);
    let routes: Vec<&str> = config.routes_for(token).map(|r| r.name.as_str()).collect();
    assert_eq!(routes, ["ops"]);
    assert_eq!(*token.policy, config.defaults);
    let route = config.route("ops").unwrap();
    assert_eq!(route.kind, RouteKind::Webhook);
    let Target::Url(url) = &route.target else {
        panic!("{:?}", route.target)
    };
    assert_eq!(
        url.expose_secret().as_str(),
        "https://alerts.example.com/hook"
    );
    assert_eq!(route.timeout, Duration::from_secs(10));
}

#[test]
fn every_key_is_read_and_tokens_override_the_defaults() {
    let Loaded { config, warnings } = parse(
        r#"
listen = "127.0.0.1:9999"
state = "state/permatoken.db"

[defaults]
interval = "30m"
jitter = "1m"
warn_days = 20
crit_days = 5
renew_days = 10
unknown_after = "2h"
remind_every = "12h"
doctor = true
doctor_interval = "1d"
failover = false
try_user_token = true

[[token]]
name = "billing"
token_file = "tokens/billing"
app_id = "1234567890"
app_secret_file = "/run/secrets/app"
interval = "1h 30m"
crit_days = 1
alerts = ["slack", "pager"]

[[token]]
name = "support"
env = "SUPPORT_TOKEN"
app_id = "1234567890"
app_secret_env = "SUPPORT_APP_SECRET"

[[token]]
name = "sales"
env_file = "/srv/sales/.env"
key = "SALES_TOKEN"
doctor = false

[[alert]]
name = "slack"
kind = "slack"
url_file = "slack.url"
secret_file = "/etc/permatoken/slack.key"
headers = { "X-Team" = "PERMATOKENTEST-header-value" }
timeout = "5s"

[[alert]]
name = "pager"
kind = "command"
command = "pager-cli --stdin"

[[alert]]
name = "internal"
kind = "webhook"
url = "http://alertmanager.internal:9093/api/v2/PERMATOKENTEST-path"
"#,
    );
    assert_eq!(config.listen, Some("127.0.0.1:9999".parse().unwrap()));
    assert_eq!(
        config.state,
        Some(StateLocation::File(PathBuf::from(
            "/etc/permatoken/state/permatoken.db"
        )))
    );
    let d = config.defaults;
    assert_eq!(
        d,
        Policy {
            interval: Duration::from_secs(1800),
            jitter: Duration::from_secs(60),
            warn_days: 20,
            crit_days: 5,
            renew_days: 10,
            unknown_after: Duration::from_secs(7200),
            remind_every: Duration::from_secs(43_200),
            doctor: true,
            doctor_interval: Duration::from_secs(86_400),
            failover: false,
            try_user_token: true,
        }
    );
    let billing = config.token("billing").unwrap();
    assert_eq!(
        billing.source,
        TokenSource::TokenFile {
            path: "/etc/permatoken/tokens/billing".into()
        }
    );
    assert_eq!(
        billing.app,
        AppSource::Given {
            app_id: "1234567890".into(),
            secret: Some(SecretFrom::File("/run/secrets/app".into()))
        }
    );
    assert_eq!(billing.policy.interval, Duration::from_secs(5400));
    assert_eq!(billing.policy.crit_days, 1);
    assert_eq!(billing.policy.warn_days, 20);
    assert_eq!(billing.backups, Backups::Series);
    let support = config.token("support").unwrap();
    assert_eq!(
        support.source,
        TokenSource::Environment {
            variable: "SUPPORT_TOKEN".into()
        }
    );
    assert_eq!(
        support.app,
        AppSource::Given {
            app_id: "1234567890".into(),
            secret: Some(SecretFrom::Env("SUPPORT_APP_SECRET".into()))
        }
    );
    let sales = config.token("sales").unwrap();
    assert_eq!(
        sales.source,
        TokenSource::EnvFile {
            path: "/srv/sales/.env".into(),
            key: "SALES_TOKEN".into()
        }
    );
    assert!(!sales.policy.doctor);
    let slack = config.route("slack").unwrap();
    assert_eq!(
        slack.target,
        Target::UrlFile("/etc/permatoken/slack.url".into())
    );
    assert_eq!(slack.timeout, Duration::from_secs(5));
    assert_eq!(
        config.route("pager").unwrap().target,
        Target::Command("pager-cli --stdin".into())
    );
    // Plain http is allowed, with a warning that names the route and the host only.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("route `internal`"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("alertmanager.internal"),
        "{}",
        warnings[0]
    );
    assert!(!warnings[0].contains("PERMATOKENTEST"), "{}", warnings[0]);
    // Neither URLs nor header values show in Debug.
    let debug = format!("{config:?}");
    assert!(!debug.contains("PERMATOKENTEST"), "{debug}");
    assert!(debug.contains("alertmanager.internal"), "{debug}");
}

#[test]
fn a_token_without_app_keys_reads_them_beside_its_token() {
    let config = parse(
        "[[token]]\nname = \"a\"\ntoken_file = \"/t\"\n[[token]]\nname = \"b\"\nenv = \"B_TOKEN\"\n",
    )
    .config;
    assert_eq!(config.tokens[0].app, AppSource::Environment);
    assert_eq!(config.tokens[1].app, AppSource::Environment);
    // An empty file is a valid configuration that watches nothing.
    assert!(parse("").config.tokens.is_empty());
}

#[test]
fn renew_days_follows_warn_days_unless_set() {
    let p = parse("[defaults]\nwarn_days = 30\n").config.defaults;
    assert_eq!((p.warn_days, p.renew_days), (30, 30));
    let p = parse("[defaults]\nwarn_days = 30\nrenew_days = 7\n")
        .config
        .defaults;
    assert_eq!(p.renew_days, 7);
    // jitter follows interval unless set.
    let p = parse("[defaults]\ninterval = \"10m\"\n").config.defaults;
    assert_eq!(p.jitter, Duration::from_secs(60));
    let c = parse(
        "[defaults]\ninterval = \"10m\"\n[[token]]\nname = \"a\"\nenv = \"A\"\ninterval = \"1h\"\n",
    )
    .config;
    assert_eq!(c.tokens[0].policy.jitter, Duration::from_secs(360));
    let c = parse(
        "[defaults]\njitter = \"5s\"\n[[token]]\nname = \"a\"\nenv = \"A\"\ninterval = \"1h\"\n",
    )
    .config;
    assert_eq!(c.tokens[0].policy.jitter, Duration::from_secs(5));
}

#[test]
fn an_interval_under_five_minutes_is_honoured_and_warned_of_once_with_its_calls_an_hour() {
    // The README's example, a second, and five minutes (not warned of).
    let mut text = String::from("[defaults]\ninterval = \"30s\"\n");
    for n in 0..5 {
        text.push_str(&format!(
            "[[token]]\nname = \"t{n}\"\nenv_file = \"/srv/t{n}/.env\"\n"
        ));
    }
    text.push_str(
        "[[token]]\nname = \"fast\"\ntoken_file = \"/srv/fast.token\"\ninterval = \"1s\"\n",
    );
    text.push_str("[[token]]\nname = \"two\"\nenv_file = \"/srv/two/.env\"\nbackups = [\"A\", \"B\"]\ninterval = \"1s\"\n");
    text.push_str("[[token]]\nname = \"calm\"\nenv_file = \"/srv/calm/.env\"\ninterval = \"5m\"\n");
    text.push_str("[[token_set]]\nname = \"clients\"\nenv_files = \"/srv/clients/*/.env\"\ninterval = \"4m\"\n");
    text.push_str(
        "[[token_set]]\nname = \"slow\"\nenv_files = \"/srv/slow/*/.env\"\ninterval = \"1h\"\n",
    );
    let Loaded { config, warnings } = parse(&text);
    assert_eq!(config.defaults.interval, Duration::from_secs(30));
    assert_eq!(
        config.token("fast").unwrap().policy.interval,
        Duration::from_secs(1)
    );
    // One line per interval among the tokens, naming a few; one per set.
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    let [second, thirty, set] = [&warnings[0], &warnings[1], &warnings[2]];
    // `fast` and `two` with its two backups: 3,600 calls an hour for each of four tokens.
    assert!(
        second.starts_with("tokens `fast`, `two` are checked every 1s (`interval`): 14400 `/debug_token` calls an hour,"),
        "{second}"
    );
    assert!(second.contains("hourly allowance"), "{second}");
    assert!(
        second.contains("permatoken_graph_usage_percent"),
        "{second}"
    );
    assert!(
        thirty.starts_with("tokens `t0`, `t1`, `t2`, 2 more are checked every 30s (`interval`): 600 `/debug_token` calls an hour, and 120 more for each `_BACKUP` token found in an env file,"),
        "{thirty}"
    );
    assert!(
        set.starts_with("each token of set `clients` is checked every 240s (`interval`): 15 `/debug_token` calls an hour per file the set matches"),
        "{set}"
    );
    // One token, singular.
    let Loaded { warnings, .. } =
        parse("[[token]]\nname = \"orders\"\nenv = \"ORDERS_TOKEN\"\ninterval = \"1m\"\n");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("token `orders` is checked every 60s (`interval`): 60 `/debug_token` calls an hour, counted"),
        "{}",
        warnings[0]
    );
    // Less than a second cannot be written: the unit is a second.
    let e = error("[defaults]\ninterval = \"500ms\"\n");
    assert!(e.contains("is not a duration"), "{e}");
}

#[test]
fn each_mistake_names_its_line_and_column_and_what_is_allowed() {
    let token = "[[token]]\nname = \"orders\"\nenv_file = \"/srv/.env\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            "[defaults]\nintervl = \"1h\"\n".into(),
            "2:1: unknown key `intervl`; allowed: `interval`, `jitter`, `warn_days`, `crit_days`, `renew_days`, `unknown_after`, `remind_every`, `doctor`, `doctor_interval`, `failover`, `try_user_token`, `retention`, `max_concurrent_reloads`, `batch_checks`; did you mean `interval`?",
        ),
        (
            "[[token]]\nname = \"orders\"\nenv_file = \"/srv/.env\"\napp_secret = \"PERMATOKENTEST\"\n".into(),
            "4:14: token `orders`: the app secret is never written in the configuration; leave it in the token's env file as `FACEBOOK_APP_SECRET`, or set `app_id` and `app_secret_file` (a file holding the secret only) or `app_secret_env` (a variable's name)",
        ),
        (
            "[[token]]\nname = \"orders\"\nenv_file = \"/srv/.env\"\nenv = \"TOKEN\"\n".into(),
            "4:7: token `orders` has more than one source; keep exactly one of `env_file`, `token_file` and `env`",
        ),
        (
            "[[token]]\nname = \"orders\"\n".into(),
            "2:8: token `orders` has no source; set one of `env_file` (a .env file, with `key`), `token_file` (a file holding the token only) or `env` (a variable of the environment)",
        ),
        (
            format!("{token}{token}"),
            "5:8: a second token is named `orders`; token names must be unique",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"command\"\ncommand = \"true\"\n[[alert]]\nname = \"ops\"\nkind = \"command\"\ncommand = \"true\"\n".into(),
            "6:8: a second route is named `ops`; route names must be unique",
        ),
        (
            format!("{token}alerts = [\"opps\"]\n[[alert]]\nname = \"ops\"\nkind = \"command\"\ncommand = \"true\"\n"),
            "4:11: token `orders` sends alerts to `opps`, and no `[[alert]]` has that name; routes: `ops`; did you mean `ops`?",
        ),
        (
            "[defaults]\nwarn_days = 3\ncrit_days = 7\n".into(),
            "3:13: `crit_days` (7) is more than `warn_days` (3); the critical window lies inside the warning window",
        ),
        (
            "[defaults]\ninterval = \"0s\"\n".into(),
            "2:12: `interval` must be longer than zero, such as \"1h\"",
        ),
        (
            format!("{token}unknown_after = \"6 hrs and a bit\"\n"),
            "4:17: `unknown_after`: `6 hrs and a bit` is not a duration: write a number and a unit, such as \"30s\", \"5m\", \"1h\", \"2d\" or \"1h 30m\"",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"webhok\"\nurl = \"https://a.example/\"\n".into(),
            "3:8: route `ops`: unknown kind `webhok`; allowed: `webhook`, `slack`, `command`, `alertmanager`; did you mean `webhook`?",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"slack\"\n".into(),
            "3:8: route `ops` needs `url`, or `url_file` (a file holding the URL only, which keeps it out of this file)",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"ftp://PERMATOKENTEST.example/\"\n".into(),
            "4:7: route `ops`: the `url` is not usable: its scheme is `ftp`; alerts go to http:// or https:// URLs",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"command\"\n".into(),
            "3:8: route `ops` is a command and needs `command`, run with `sh -c` with the alert JSON on its standard input",
        ),
        (
            "[[alert]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://a.example/\"\ncommand = \"true\"\n".into(),
            "5:11: route `ops` is a webhook; `command` belongs to kind = \"command\"",
        ),
        (
            "listen = \"everywhere\"\n".into(),
            "1:10: `listen`: `everywhere` is not a listen address: write an address and port (`127.0.0.1:9464`, `[::1]:9464`, `0.0.0.0:9464`), `:9464` for every interface, or `localhost:9464`",
        ),
        (
            "[[token]]\nname = \"x\"\ntoken_file = \"/t\"\napp_secret_file = \"/s\"\n".into(),
            "4:19: token `x`: the app secret needs its app: set `app_id` too (the number at the top of App Dashboard → Settings → Basic)",
        ),
        (
            "[[tokens]]\nname = \"x\"\n".into(),
            "1:3: unknown key `tokens`; allowed: `listen`, `state`, `state_password_file`, `defaults`, `token`, `alert`, `token_set`; did you mean `token`?",
        ),
        (
            "[defaults]\nwarn_days = \"14\"\n".into(),
            "2:13: invalid type: string \"14\", expected u32",
        ),
        ("[defaults\n".into(), "1:10:"),
        (
            "[[alert]]\nkind = \"slack\"\nurl = \"https://a.example/\"\n".into(),
            "1:1: missing key `name` in this `[[alert]]`",
        ),
        (
            format!("{token}alert = [\"ops\"]\n"),
            "4:1: unknown key `alert`; allowed: `name`, `env_file`, `key`, `token_file`, `env`, `app_id`, `app_secret_file`, `app_secret_env`, `backups`, `reload`, `alerts`, `interval`, `jitter`, `warn_days`, `crit_days`, `renew_days`, `unknown_after`, `remind_every`, `doctor`, `doctor_interval`, `failover`, `try_user_token`; did you mean `alerts`?",
        ),
    ];
    for (text, expected) in cases {
        let e = error(&text);
        let shown = e.strip_prefix(&format!("{FILE}:")).unwrap_or(&e);
        if expected.ends_with(':') {
            assert!(shown.starts_with(expected), "{text}\n{e}");
        } else {
            assert_eq!(shown, expected, "{text}");
        }
        assert!(!e.contains("PERMATOKENTEST"), "{e}");
    }
}

#[test]
fn a_file_too_large_or_not_utf8_is_refused_and_a_missing_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
    assert!(matches!(
        config::load(&big),
        Err(ConfigError::TooLarge { .. })
    ));
    assert!(
        config::load(&big)
            .unwrap_err()
            .to_string()
            .contains("larger than 1 MiB")
    );
    let latin = dir.path().join("latin.toml");
    std::fs::write(&latin, b"# ok\n# caf\xe9\n").unwrap();
    assert_eq!(
        config::load(&latin).unwrap_err().to_string(),
        format!(
            "`{}` is not UTF-8 text (line 2): save it as UTF-8",
            latin.display()
        )
    );
    let missing = dir.path().join("missing.toml");
    let e = config::load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot read `{}`", missing.display())),
        "{e}"
    );
    // Relative paths inside a loaded file are resolved against its folder.
    let file = dir.path().join("permatoken.toml");
    std::fs::write(&file, "[[token]]\nname = \"a\"\nenv_file = \"app/.env\"\n").unwrap();
    let config = config::load(&file).unwrap().config;
    assert_eq!(
        config.tokens[0].source,
        TokenSource::EnvFile {
            path: dir.path().join("app/.env"),
            key: "WHATSAPP_ACCESS_TOKEN".into()
        }
    );
}

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

#[test]
fn the_file_is_looked_for_where_xdg_says() {
    assert_eq!(
        config::config_path(Some(Path::new("my.toml")), env(&[("HOME", "/home/u")])).unwrap(),
        PathBuf::from("my.toml")
    );
    assert_eq!(
        config::config_path(
            None,
            env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/cfg")])
        )
        .unwrap(),
        PathBuf::from("/cfg/permatoken/permatoken.toml")
    );
    assert_eq!(
        config::config_path(
            None,
            env(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "rel")])
        )
        .unwrap(),
        PathBuf::from("/home/u/.config/permatoken/permatoken.toml")
    );
    assert!(matches!(
        config::config_path(None, env(&[])),
        Err(ConfigError::NoHome)
    ));
    use std::os::unix::ffi::OsStringExt;
    let bad = vec![(
        OsString::from("XDG_CONFIG_HOME"),
        OsString::from_vec(b"/caf\xe9".to_vec()),
    )];
    assert_eq!(
        config::config_path(None, bad).unwrap_err().to_string(),
        "`XDG_CONFIG_HOME` is not valid UTF-8; set it to a folder path, or unset it"
    );
}

#[test]
fn without_a_file_the_dot_env_of_the_working_folder_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cwd = dir.path().join("app");
    // No file and no `.env` here: nothing to watch, said so rather than watching a missing file.
    let e =
        config::load_or_default(None, env(&[("HOME", home.to_str().unwrap())]), &cwd).unwrap_err();
    assert!(matches!(e, ConfigError::NothingToWatch { .. }), "{e}");
    assert!(e.to_string().contains("permatoken.toml"), "{e}");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join(".env"), "WHATSAPP_ACCESS_TOKEN=\n").unwrap();
    let loaded =
        config::load_or_default(None, env(&[("HOME", home.to_str().unwrap())]), &cwd).unwrap();
    assert_eq!(loaded.config, config::default_config(&cwd));
    let config = loaded.config;
    assert_eq!(config.path, None);
    assert_eq!(config.tokens.len(), 1);
    assert_eq!(
        config.tokens[0].source,
        TokenSource::EnvFile {
            path: cwd.join(".env"),
            key: "WHATSAPP_ACCESS_TOKEN".into()
        }
    );
    assert_eq!(config.tokens[0].app, AppSource::EnvFile(cwd.join(".env")));
    assert_eq!(*config.tokens[0].policy, Policy::default());
    assert_eq!(config.defaults.unknown_after, Duration::from_secs(6 * 3600));
    assert_eq!(config.defaults.remind_every, Duration::from_secs(24 * 3600));
    assert!(config.defaults.failover && !config.defaults.doctor);
    // An explicit --config must exist.
    let e = config::load_or_default(Some(&cwd.join("nope.toml")), env(&[]), &cwd).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn retention_is_a_defaults_key_of_at_least_a_day() {
    assert_eq!(parse("").config.retention, config::DEFAULT_RETENTION);
    assert_eq!(config::DEFAULT_RETENTION, Duration::from_secs(90 * 86_400));
    let c = parse("[defaults]\nretention = \"30d\"\n").config;
    assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
    let e = error("[defaults]\nretention = \"1h\"\n");
    assert!(e.contains(":2:13:") && e.contains("at least a day"), "{e}");
    // Not per token: the state file's history is one.
    let e = error("[[token]]\nname = \"a\"\nenv = \"A\"\nretention = \"30d\"\n");
    assert!(e.contains("retention"), "{e}");
}

#[test]
fn a_postgres_state_is_a_url_and_its_password_file_a_path() {
    let config = parse(
        r#"state = "postgres://permatoken@db.internal/permatoken?sslmode=verify-full"
state_password_file = "pg-password"

[[token]]
name = "orders"
env_file = "/srv/orders/.env"
"#,
    )
    .config;
    assert_eq!(
        config.state,
        Some(StateLocation::Postgres(
            "postgres://permatoken@db.internal/permatoken?sslmode=verify-full".to_owned()
        ))
    );
    assert_eq!(
        config.state_password_file.as_deref(),
        Some(Path::new("/etc/permatoken/pg-password"))
    );
}

const SET: &str = r#"[defaults]
max_concurrent_reloads = 2

[[token]]
name = "orders"
env_file = "/srv/orders/.env"

[[token_set]]
name = "clients"
env_files = "clients/*/.env"
reload = "systemctl restart \"client@$(basename \"$2\")\""
alerts = ["ops"]
alert_route_key = "PERMATOKEN_ALERT_ROUTE"
warn_days = 20
max_concurrent_reloads = 3

[[token_set]]
name = "files"
token_files = "/srv/tokens/*.token"

[[alert]]
name = "ops"
kind = "webhook"
url = "https://alerts.example.com/hook"
"#;

#[test]
fn a_token_set_is_read_with_its_pattern_policy_and_limits() {
    let config = parse(SET).config;
    assert_eq!(config.max_concurrent_reloads, 2);
    assert_eq!(config.token_sets.len(), 2);
    let clients = &config.token_sets[0];
    assert_eq!(clients.name, "clients");
    assert_eq!(clients.pattern, Path::new("/etc/permatoken/clients/*/.env"));
    assert_eq!(
        clients.alert_route_key.as_deref(),
        Some("PERMATOKEN_ALERT_ROUTE")
    );
    assert_eq!(clients.max_concurrent_reloads, 3);
    assert_eq!(clients.template.policy.warn_days, 20);
    assert_eq!(*clients.template.alerts, ["ops"]);
    assert_eq!(clients.template.set.as_deref(), Some("clients"));
    assert!(matches!(
        clients.template.source,
        TokenSource::EnvFile { ref key, .. } if key == "WHATSAPP_ACCESS_TOKEN"
    ));
    let files = &config.token_sets[1];
    assert_eq!(files.max_concurrent_reloads, 2);
    assert!(matches!(
        files.template.source,
        TokenSource::TokenFile { .. }
    ));
    assert_eq!(files.template.app, AppSource::Environment);
    // Without [defaults] the limit is 4.
    let plain = parse("[[token_set]]\nname = \"c\"\ntoken_files = \"/t/*\"\n").config;
    assert_eq!(plain.max_concurrent_reloads, 4);
    assert_eq!(plain.token_sets[0].max_concurrent_reloads, 4);
}

#[test]
fn token_set_mistakes_name_their_line_and_column() {
    let head = "[[token]]\nname = \"orders\"\nenv_file = \"/srv/orders/.env\"\n\n";
    for (body, expected) in [
        (
            "[[token_set]]\nname = \"orders\"\nenv_files = \"/c/*/.env\"\n",
            "6:8: a token or token set is already named `orders`; token and set names must be unique",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/*/.env\"\n[[token_set]]\nname = \"c\"\nenv_files = \"/d/*/.env\"\n",
            "9:8: a token or token set is already named `c`",
        ),
        (
            "[[token_set]]\nname = \"c\"\n",
            "6:8: token set `c` has no files; set `env_files`",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/*/.env\"\ntoken_files = \"/c/*\"\n",
            "8:15: token set `c`: set either `env_files` or `token_files`, not both",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/**/.env\"\n",
            "7:13: token set `c`: `**` is not supported",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/one/.env\"\n",
            "7:13: token set `c`: the pattern has no `*`",
        ),
        (
            "[[token_set]]\nname = \"a/b\"\nenv_files = \"/c/*/.env\"\n",
            "6:8: token set `a/b`: a set's name has no `/`",
        ),
        (
            "[[token_set]]\nname = \"c\"\ntoken_files = \"/c/*\"\nalert_route_key = \"ROUTE\"\n",
            "8:19: token set `c`: `alert_route_key` names a variable of each env file; it needs `env_files`",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/*\"\nalert_route_key = \"1X\"\n",
            "8:19: `alert_route_key`: `1X` is not a variable name",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/*\"\nmax_concurrent_reloads = 0\n",
            "8:26: `max_concurrent_reloads` = 0: write a number from 1 to 1000",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/*\"\nalerts = [\"opps\"]\n",
            "8:11: token `c` sends alerts to `opps`, and no `[[alert]]` has that name",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_files = \"/c/*\"\nenv = \"X\"\n",
            "8:1: unknown key `env`",
        ),
        (
            "[[token_set]]\nname = \"c\"\nenv_file = \"/c/*\"\n",
            "did you mean `env_files`?",
        ),
    ] {
        let e = error(&format!("{head}{body}"));
        assert!(
            e.starts_with(&format!("{FILE}:{expected}")) || e.ends_with(expected),
            "{body}\n{e}"
        );
    }
    // A token named like one of a set's tokens.
    let e = error(
        "[[token]]\nname = \"c/one\"\nenv_file = \"/x/.env\"\n[[token_set]]\nname = \"c\"\nenv_files = \"/c/*/.env\"\n",
    );
    assert!(
        e.contains(":5:8: token set `c` names its tokens `c/…`, and token `c/one` is named so too"),
        "{e}"
    );
}

#[test]
fn a_name_with_spaces_around_it_is_refused_at_its_line_and_column() {
    // A name is shown on the page, in alerts and in metrics: `orders ` would read as `orders` and
    // compare as another name.
    for (text, expected) in [
        (
            "[[token]]\nname = \"orders \"\nenv = \"A\"\n",
            "2:8: the token name `orders ` has spaces around it; write `orders`",
        ),
        (
            "[[token_set]]\nname = \" clients\"\nenv_files = \"/c/*/.env\"\n",
            "2:8: the token set name ` clients` has spaces around it; write `clients`",
        ),
        (
            "[[alert]]\nname = \"ops\\t\"\nkind = \"command\"\ncommand = \"true\"\n",
            "2:8: the route name `ops\\t` has spaces around it; write `ops`",
        ),
        // Only spaces: empty, said so.
        (
            "[[token]]\nname = \"   \"\nenv = \"A\"\n",
            "2:8: the name is empty; give it one, like name = \"orders\"",
        ),
    ] {
        let e = error(text);
        assert_eq!(
            e.strip_prefix(&format!("{FILE}:")),
            Some(expected),
            "{text}"
        );
    }
}

#[test]
fn two_tokens_named_alike_but_for_spaces_no_longer_both_pass() {
    let e = error(
        "[[token]]\nname = \"orders\"\nenv = \"A\"\n[[token]]\nname = \"orders \"\nenv = \"B\"\n",
    );
    assert!(
        e.ends_with(":5:8: the token name `orders ` has spaces around it; write `orders`"),
        "{e}"
    );
    // Nor a set named like a token, nor two routes.
    let e = error(
        "[[token]]\nname = \"c\"\nenv = \"A\"\n[[token_set]]\nname = \"c \"\nenv_files = \"/c/*/.env\"\n",
    );
    assert!(e.contains(":5:8: the token set name `c `"), "{e}");
    let route = "[[alert]]\nname = \"ops\"\nkind = \"command\"\ncommand = \"true\"\n";
    let e = error(&format!("{route}{}", route.replace("\"ops\"", "\" ops\"")));
    assert!(e.contains(":6:8: the route name ` ops`"), "{e}");
    // Written without the spaces, the second is a duplicate, as it always was.
    let e = error(
        "[[token]]\nname = \"orders\"\nenv = \"A\"\n[[token]]\nname = \"orders\"\nenv = \"B\"\n",
    );
    assert!(e.ends_with(":5:8: a second token is named `orders`; token names must be unique"));
}

/// Issue 16, item 5: a reload says the plain-http warning again only of a route new or changed.
#[test]
fn a_reload_warns_of_plain_http_only_for_a_route_new_or_changed() {
    let routes = |hosts: &[(&str, &str)]| {
        let mut text = String::new();
        for (name, url) in hosts {
            text.push_str(&format!(
                "[[alert]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\n\n"
            ));
        }
        parse(&text)
    };
    let first = routes(&[
        ("ops", "http://ops.internal/hook"),
        ("moved", "http://old.internal/hook"),
    ]);
    assert_eq!(first.warnings.len(), 2, "{:?}", first.warnings);
    let second = routes(&[
        ("ops", "http://ops.internal/hook"),
        ("moved", "http://new.internal/hook"),
        ("ci", "http://ci.internal/hook"),
    ]);
    let said = config::reload_warnings(&first.config.routes, &second);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[0].contains("route `moved`") && said[0].contains("new.internal"));
    assert!(said[1].contains("route `ci`"), "{said:?}");
    // Unchanged again: nothing to say.
    assert!(config::reload_warnings(&second.config.routes, &second).is_empty());
}
