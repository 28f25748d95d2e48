//! The small catalog the hand-checked and generated manifests share.

pub const CATALOG: &str = r#"
[catalog.tools.scan]
classes = ["ScanTool"]
tactics = ["reconnaissance"]
[catalog.tools.code]
classes = ["CodeAnalysisTool"]
tactics = ["vulnerability_discovery"]
[catalog.tools.exploit]
classes = ["ExploitationTool"]
tactics = ["initial_access"]
[catalog.tools.db]
classes = ["DatabaseQuery"]
tactics = ["collection"]
data_source = { name = "DB", mode = "read" }
[catalog.tools.up]
classes = ["DataExfiltration"]
tactics = ["exfiltration"]
mode = "write_external"
[catalog.tools.docs]
classes = ["Benign"]
"#;
