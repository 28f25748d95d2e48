//! What the CLI's end-to-end tests share: the real `truststack` binary, and reading its answers.
#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;
use std::process::{Command, Output};
use truststack_testkit::assert_contains;

/// The repository root (the examples are under it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary under test, with colours off.
pub fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_truststack"));
    command.env("NO_COLOR", "1");
    command
}

/// Runs `truststack ARGS` in the current directory.
pub fn truststack(args: &[&str]) -> Output {
    cli().args(args).output().unwrap()
}

/// Runs `truststack ARGS` from the repository root, as the documentation does.
pub fn truststack_from_root(args: &[&str]) -> Output {
    cli().args(args).current_dir(root()).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// Asserts success; the standard output, which must be UTF-8.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

/// Asserts exit status 2 (bad input) with `needle` in the error.
pub fn refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(out), stderr(out));
    assert_contains!(stderr(out), needle);
}
