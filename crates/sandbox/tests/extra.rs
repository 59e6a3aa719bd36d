//! `Options::extra_tokens`: a started sandbox serves many extra valid tokens like its scenario tokens.

use std::io::{Read, Write};

use permatoken_sandbox::{Options, Sandbox};
use serde_json::Value;

/// A GET over a real loopback socket: status and JSON body.
fn get(addr: std::net::SocketAddr, target: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    // The sandbox may answer chunked: the JSON is the line that opens with `{`.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {answer}"));
    (status, serde_json::from_str(json).unwrap())
}

#[test]
fn a_started_sandbox_answers_me_and_debug_token_for_its_extra_tokens() {
    let running = Sandbox::start_background(&Options {
        extra_tokens: 2_000,
        ..Options::default()
    })
    .unwrap();
    let extras = running.extra_tokens();
    assert_eq!(extras.len(), 2_000);
    let distinct: std::collections::HashSet<_> = extras.iter().map(|t| t.expose_secret()).collect();
    assert_eq!(distinct.len(), 2_000, "every extra token is its own");
    // The scenario tokens are still there and are not among the extras.
    let system_user = running.token("system-user").unwrap();
    assert!(!distinct.contains(system_user.expose_secret()));

    let app_token = format!(
        "{}%7C{}",
        running.app().id,
        running.app_secret().expose_secret()
    );
    for token in [&extras[0], &extras[1_234], &extras[1_999]] {
        let (status, me) = get(running.addr(), "/v21.0/me", Some(token.expose_secret()));
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["id"], running.system_user_id(), "{me}");
        let (status, debug) = get(
            running.addr(),
            &format!(
                "/v21.0/debug_token?input_token={}&access_token={app_token}",
                token.expose_secret()
            ),
            None,
        );
        assert_eq!(status, 200, "{debug}");
        let data = &debug["data"];
        assert_eq!(data["is_valid"], true, "{debug}");
        assert_eq!(data["type"], "SYSTEM_USER", "{debug}");
        assert_eq!(data["expires_at"], 0, "{debug}");
        assert_eq!(data["app_id"], running.app().id.to_string(), "{debug}");
        let scopes: Vec<_> = data["scopes"].as_array().unwrap().iter().collect();
        assert!(
            scopes.contains(&&Value::from("whatsapp_business_messaging")),
            "{debug}"
        );
    }
    // A token one character off is still refused, as Meta refuses it.
    let mut changed = extras[0].expose_secret().to_owned();
    let last = changed.pop().unwrap();
    changed.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _) = get(running.addr(), "/v21.0/me", Some(&changed));
    assert_ne!(status, 200);
}

#[cfg(unix)]
#[test]
fn extra_tokens_are_written_as_json_to_a_new_private_file_only() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new(&Options {
        extra_tokens: 3,
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extra.json");
    sandbox.write_extra_tokens(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let tokens: Vec<_> = sandbox
        .extra_tokens()
        .iter()
        .map(|t| Value::from(t.expose_secret()))
        .collect();
    assert_eq!(json["tokens"], Value::Array(tokens));
    assert_eq!(json["app_id"], sandbox.app().id.to_string());
    assert_eq!(json["system_user_id"], sandbox.system_user_id());
    // An existing file is refused and left as it was.
    std::fs::write(&path, "kept").unwrap();
    let err = sandbox.write_extra_tokens(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
    // Without extra tokens there are none.
    assert!(Sandbox::new(&Options::default()).extra_tokens().is_empty());
}
