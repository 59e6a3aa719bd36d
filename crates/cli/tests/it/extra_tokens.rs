//! `permatoken sandbox --extra-tokens N`: the extra tokens are made and served, and are printed only
//! into the file `--extra-tokens-json` names.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

#[test]
fn extra_tokens_go_to_the_json_file_only_and_are_served() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("extra.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .args(["sandbox", "--extra-tokens", "25", "--extra-tokens-json"])
        .arg(&file)
        .env_clear()
        .env("HOME", home.path())
        .env("TMPDIR", home.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert_ne!(
            lines.read_line(&mut line).unwrap(),
            0,
            "no banner: {banner}"
        );
        banner.push_str(&line);
        if line.starts_with("Ctrl-C stops it") {
            break;
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let tokens: Vec<String> = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens.len(), 25);
    assert!(banner.contains("25 extra tokens"), "{banner}");
    assert!(banner.contains(&file.display().to_string()), "{banner}");
    for token in &tokens {
        assert!(
            !banner.contains(token.as_str()),
            "an extra token was printed"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let addr = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("export PERMATOKEN_GRAPH_URL=http://"))
        .unwrap()
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        tokens[24]
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(json["system_user_id"].as_str().unwrap()),
        "{answer}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // The file flag alone is a usage error, and writes nothing.
    let out = Command::new(env!("CARGO_BIN_EXE_permatoken"))
        .args(["sandbox", "--extra-tokens-json"])
        .arg(home.path().join("other.json"))
        .env_clear()
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--extra-tokens <N>"));
    assert!(!home.path().join("other.json").exists());
}
