//! The Python client (`clients/python`) and its LangGraph and OpenAI Agents SDK integrations,
//! tested by their pytest suite against this build's `truststack serve`, with the project's
//! Python (`.venv`, from `.ci/peers/requirements.txt`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn python_client_suite_passes_against_the_real_server() {
    let root = common::root();
    let client = root.join("clients/python");
    let out = truststack_testkit::python_command()
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&client)
        .env("TRUSTSTACK_BIN", env!("CARGO_BIN_EXE_truststack"))
        .env("PYTHONPATH", client.join("src"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pytest failed (exit {:?}):\n{}{}",
        out.status.code(),
        common::stdout(&out),
        common::stderr(&out)
    );
}
