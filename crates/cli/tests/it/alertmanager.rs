//! An `alertmanager` route as a user writes it: `watch --check-config` accepts it (warning of plain
//! http like any route) and refuses one without a usable `url`, naming line and column.

use crate::harness::Test;

const TOKEN: &str = "[[token]]\nname = \"orders\"\nenv_file = \"orders.env\"\n\n";

#[test]
fn check_config_takes_an_alertmanager_route_and_refuses_one_without_a_url() {
    let good = Test::new()
        .write(
            "permatoken.toml",
            &format!(
                "{TOKEN}[[alert]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://alertmanager:9093\"\n"
            ),
        )
        .args(["watch", "--config", "permatoken.toml", "--check-config", "--json"])
        .run();
    good.assert_code(0);
    let json = good.json();
    assert_eq!(json["routes"], serde_json::json!(["am"]), "{json}");
    assert!(
        json["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("route `am` sends alerts over plain http:// to `alertmanager`")),
        "{json}"
    );

    for (route, said) in [
        (
            "kind = \"alertmanager\"\n",
            "permatoken.toml:7:8: route `am` needs `url`, or `url_file`",
        ),
        (
            "kind = \"alertmanager\"\nurl = \"ftp://alertmanager:9093\"\n",
            "permatoken.toml:8:7: route `am`: the `url` is not usable: its scheme is `ftp`",
        ),
        (
            "kind = \"alertmanger\"\nurl = \"http://alertmanager:9093\"\n",
            "did you mean `alertmanager`?",
        ),
    ] {
        let bad = Test::new()
            .write(
                "permatoken.toml",
                &format!("{TOKEN}[[alert]]\nname = \"am\"\n{route}"),
            )
            .args(["watch", "--config", "permatoken.toml", "--check-config"])
            .run();
        bad.assert_code(3);
        assert!(bad.stderr.contains(said), "{said}: {}", bad.stderr);
    }
}
