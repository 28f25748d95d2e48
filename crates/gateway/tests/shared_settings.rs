//! The server and the gateway read the engine's settings with the same keys and meanings: the
//! same text gives the same `Settings`, so a policy decides alike whichever component loads it.

use truststack_gateway::GatewayConfig;
use truststack_server::config::ServerConfig;
use truststack_testkit::write_file;

const SHARED: &str = r#"
default_decision = "deny"
unknown_tools = "allow"
approval_deadline = "90s"
provenance_bound = 4096
input_record = "hash"

[approver_groups]
secops = ["user:lead@acme.example"]
"#;

#[test]
fn the_same_engine_keys_give_the_same_settings_in_server_and_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "shared.toml", SHARED);
    let server = ServerConfig::load(&path).unwrap().engine_settings();
    let gateway = GatewayConfig::load(&path).unwrap().engine_settings();
    assert_eq!(server, gateway);
    assert_eq!(gateway.approval_deadline_ms, 90_000);
    assert_eq!(gateway.provenance_bound, 4096);
    assert_eq!(gateway.input_record, truststack_policy::RecordMode::Hash);
    assert!(gateway.enforces_approver_groups());
}

#[test]
fn the_defaults_agree_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "empty.toml", "");
    assert_eq!(
        ServerConfig::load(&path).unwrap().engine_settings(),
        GatewayConfig::load(&path).unwrap().engine_settings()
    );
}
