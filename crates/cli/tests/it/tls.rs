//! Real TLS: the sandbox serves HTTPS with a CA made at run time; `--ca-file` trusts it, and without it
//! the certificate is refused at once (not retried as if it were an outage).

use permatoken_sandbox::Options;

use crate::harness::{Test, sandbox, sandbox_with};

#[test]
fn https_with_the_ca_file_works_and_without_it_is_refused() {
    let sandbox = sandbox_with(&Options {
        tls: true,
        ..Options::default()
    });
    assert!(sandbox.url().starts_with("https://127.0.0.1:"));
    let ca = sandbox.ca_pem().expect("a CA made at start").to_owned();
    let trusted = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .write("ca.pem", &ca)
        .args(["check", "--json", "--ca-file", "ca.pem"])
        .run();
    trusted.assert_code(0);
    assert_eq!(trusted.json()["token"]["valid"], true);
    let requests = sandbox.requests().len();
    assert_eq!(requests, 2);

    let refused = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .args(["check", "--json"])
        .run();
    refused.assert_code(3);
    assert_eq!(refused.codes(), ["graph_unreachable", "graph_unreachable"]);
    let message = refused.json()["findings"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("certificate"), "{message}");
    assert!(
        refused.stdout.contains("--ca-file"),
        "the fix names the option"
    );
    assert_eq!(
        sandbox.requests().len(),
        requests,
        "no request got through the refused handshake"
    );
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_clear_error() {
    let sandbox = sandbox_with(&Options {
        tls: true,
        ..Options::default()
    });
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .write("ca.pem", "not a certificate")
        .args(["check", "--ca-file", "ca.pem"])
        .run();
    out.assert_code(3);
    assert!(out.stderr.contains("BEGIN CERTIFICATE"), "{}", out.stderr);
}

#[test]
fn a_ca_file_larger_than_any_bundle_is_refused_with_exit_3_before_any_call() {
    let sandbox = sandbox();
    // ~1.1 MiB: far more than a bundle of every public root (~220 KiB).
    let big = "-----BEGIN CERTIFICATE-----\n".repeat(40_000);
    let out = Test::against(&sandbox)
        .dotenv(&sandbox, "system-user", true)
        .write("ca.pem", &big)
        .args(["check", "--ca-file", "ca.pem"])
        .run();
    out.assert_code(3);
    assert!(
        out.stderr.contains(
            "cannot read the CA file `ca.pem`: it is larger than 1 MiB, more than any bundle of CA certificates"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: --ca-file takes a PEM file"),
        "{}",
        out.stderr
    );
    assert!(sandbox.requests().is_empty(), "stopped before any call");
}
