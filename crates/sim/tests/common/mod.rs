//! The small catalog the hand-checked and generated manifests share.

pub const CATALOG: &str = r#"
[catalog.tools]
scan = { classes = ["ScanTool"], tactics = ["reconnaissance"] }
code = { classes = ["CodeAnalysisTool"], tactics = ["vulnerability_discovery"] }
exploit = { classes = ["ExploitationTool"], tactics = ["initial_access"] }
db = { classes = ["DatabaseQuery"], tactics = ["collection"], data_source = { name = "DB", mode = "read" } }
up = { classes = ["DataExfiltration"], tactics = ["exfiltration"], mode = "write_external" }
docs = { classes = ["Benign"] }
"#;
