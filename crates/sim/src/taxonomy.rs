//! The risk taxonomy: MITRE ATT&CK Enterprise tactics, one TrustStack extension, and the phases
//! of the GTG-1002 campaign written over them.
//!
//! Catalog tools carry `tactics = [...]`; goals are written over tactics (ordered sequences) or
//! data flows. `vulnerability_discovery` is not an ATT&CK tactic: it is how the GTG-1002 report
//! names the step between reconnaissance and exploitation, and TrustStack keeps it as its own
//! tactic (closest ATT&CK notion: Reconnaissance TA0043, technique T1595.002 Vulnerability
//! Scanning) so that a goal can require it separately from plain reconnaissance.

use serde::{Deserialize, Serialize};

/// A tactic of the risk taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tactic {
    Reconnaissance,
    ResourceDevelopment,
    InitialAccess,
    Execution,
    Persistence,
    PrivilegeEscalation,
    DefenseEvasion,
    CredentialAccess,
    Discovery,
    LateralMovement,
    Collection,
    CommandAndControl,
    Exfiltration,
    Impact,
    /// TrustStack extension (not an ATT&CK tactic).
    VulnerabilityDiscovery,
}

impl Tactic {
    /// Every tactic, ATT&CK Enterprise order, then the extension.
    pub const ALL: [Tactic; 15] = [
        Tactic::Reconnaissance,
        Tactic::ResourceDevelopment,
        Tactic::InitialAccess,
        Tactic::Execution,
        Tactic::Persistence,
        Tactic::PrivilegeEscalation,
        Tactic::DefenseEvasion,
        Tactic::CredentialAccess,
        Tactic::Discovery,
        Tactic::LateralMovement,
        Tactic::Collection,
        Tactic::CommandAndControl,
        Tactic::Exfiltration,
        Tactic::Impact,
        Tactic::VulnerabilityDiscovery,
    ];

    /// The name used in catalogs and manifests (`credential_access`).
    pub fn name(self) -> &'static str {
        match self {
            Tactic::Reconnaissance => "reconnaissance",
            Tactic::ResourceDevelopment => "resource_development",
            Tactic::InitialAccess => "initial_access",
            Tactic::Execution => "execution",
            Tactic::Persistence => "persistence",
            Tactic::PrivilegeEscalation => "privilege_escalation",
            Tactic::DefenseEvasion => "defense_evasion",
            Tactic::CredentialAccess => "credential_access",
            Tactic::Discovery => "discovery",
            Tactic::LateralMovement => "lateral_movement",
            Tactic::Collection => "collection",
            Tactic::CommandAndControl => "command_and_control",
            Tactic::Exfiltration => "exfiltration",
            Tactic::Impact => "impact",
            Tactic::VulnerabilityDiscovery => "vulnerability_discovery",
        }
    }

    /// The human title (`Credential Access`).
    pub fn title(self) -> &'static str {
        match self {
            Tactic::Reconnaissance => "Reconnaissance",
            Tactic::ResourceDevelopment => "Resource Development",
            Tactic::InitialAccess => "Initial Access",
            Tactic::Execution => "Execution",
            Tactic::Persistence => "Persistence",
            Tactic::PrivilegeEscalation => "Privilege Escalation",
            Tactic::DefenseEvasion => "Defense Evasion",
            Tactic::CredentialAccess => "Credential Access",
            Tactic::Discovery => "Discovery",
            Tactic::LateralMovement => "Lateral Movement",
            Tactic::Collection => "Collection",
            Tactic::CommandAndControl => "Command and Control",
            Tactic::Exfiltration => "Exfiltration",
            Tactic::Impact => "Impact",
            Tactic::VulnerabilityDiscovery => "Vulnerability Discovery",
        }
    }

    /// The MITRE ATT&CK Enterprise tactic id; for the extension, `TS-VD` (TrustStack's own).
    pub fn attack_id(self) -> &'static str {
        match self {
            Tactic::Reconnaissance => "TA0043",
            Tactic::ResourceDevelopment => "TA0042",
            Tactic::InitialAccess => "TA0001",
            Tactic::Execution => "TA0002",
            Tactic::Persistence => "TA0003",
            Tactic::PrivilegeEscalation => "TA0004",
            Tactic::DefenseEvasion => "TA0005",
            Tactic::CredentialAccess => "TA0006",
            Tactic::Discovery => "TA0007",
            Tactic::LateralMovement => "TA0008",
            Tactic::Collection => "TA0009",
            Tactic::CommandAndControl => "TA0011",
            Tactic::Exfiltration => "TA0010",
            Tactic::Impact => "TA0040",
            Tactic::VulnerabilityDiscovery => "TS-VD",
        }
    }

    /// Whether the tactic is a TrustStack extension rather than an ATT&CK tactic.
    pub fn is_extension(self) -> bool {
        self == Tactic::VulnerabilityDiscovery
    }

    /// The closest ATT&CK notion, for the extension; the tactic itself otherwise.
    pub fn attack_mapping(self) -> String {
        if self.is_extension() {
            "TrustStack extension; closest ATT&CK: TA0043 Reconnaissance, \
             T1595.002 Active Scanning: Vulnerability Scanning"
                .to_string()
        } else {
            format!("{} {}", self.attack_id(), self.title())
        }
    }

    /// Where the tactic falls in a campaign (the GTG-1002 phase order), for sorting tools when
    /// an identity is split.
    pub fn campaign_rank(self) -> u8 {
        match self {
            Tactic::ResourceDevelopment => 0,
            Tactic::Reconnaissance => 1,
            Tactic::Discovery => 2,
            Tactic::VulnerabilityDiscovery => 3,
            Tactic::InitialAccess => 4,
            Tactic::Execution => 5,
            Tactic::PrivilegeEscalation => 6,
            Tactic::Persistence => 7,
            Tactic::DefenseEvasion => 8,
            Tactic::LateralMovement => 9,
            Tactic::CredentialAccess => 10,
            Tactic::Collection => 11,
            Tactic::CommandAndControl => 12,
            Tactic::Exfiltration => 13,
            Tactic::Impact => 14,
        }
    }

    /// A short label for generated identity names (`recon`, `exploit`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Tactic::Reconnaissance | Tactic::Discovery => "recon",
            Tactic::ResourceDevelopment => "resources",
            Tactic::VulnerabilityDiscovery => "analysis",
            Tactic::InitialAccess | Tactic::Execution | Tactic::PrivilegeEscalation => "exploit",
            Tactic::Persistence => "persistence",
            Tactic::DefenseEvasion => "evasion",
            Tactic::CredentialAccess => "credentials",
            Tactic::LateralMovement => "lateral",
            Tactic::Collection => "data",
            Tactic::CommandAndControl => "c2",
            Tactic::Exfiltration => "egress",
            Tactic::Impact => "impact",
        }
    }

    /// Parses a tactic by name (`credential_access`, `credential-access`, `Credential Access`)
    /// or ATT&CK id (`TA0006`), case-insensitively.
    pub fn parse(text: &str) -> Option<Tactic> {
        let norm = name_key(text);
        let norm = norm.replace("_&_", "_and_");
        Tactic::ALL.into_iter().find(|t| {
            t.name() == norm
                || t.attack_id().eq_ignore_ascii_case(text.trim())
                || (norm == "command_and_control" && *t == Tactic::CommandAndControl)
        })
    }

    /// The closest known tactic name, for "did you mean" hints.
    pub fn suggest(text: &str) -> Option<&'static str> {
        let lower = text.to_ascii_lowercase();
        Tactic::ALL
            .iter()
            .map(|t| (distance(&lower, t.name()), t.name()))
            .filter(|(d, name)| *d <= name.len() / 3 + 1)
            .min()
            .map(|(_, n)| n)
            .or_else(|| Phase::parse(text).map(|p| p.name()))
    }
}

impl std::fmt::Display for Tactic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Levenshtein distance, for hints.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// A phase of the GTG-1002 campaign as the source article lists them: "reconnaissance,
/// vulnerability discovery, exploitation, lateral movement, credential harvesting, data
/// analysis, exfiltration". Each phase is satisfied by a call to a tool tagged with any of its
/// tactics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Reconnaissance,
    VulnerabilityDiscovery,
    Exploitation,
    LateralMovement,
    CredentialHarvesting,
    DataAnalysis,
    Exfiltration,
}

impl Phase {
    /// The seven phases in the article's order.
    pub const ALL: [Phase; 7] = [
        Phase::Reconnaissance,
        Phase::VulnerabilityDiscovery,
        Phase::Exploitation,
        Phase::LateralMovement,
        Phase::CredentialHarvesting,
        Phase::DataAnalysis,
        Phase::Exfiltration,
    ];

    /// The phases the built-in `gtg1002-chain` goal requires unless the manifest says otherwise:
    /// the campaign from first scan to data leaving the network. Lateral movement and credential
    /// harvesting amplify an intrusion but are not needed for the harm (an exploited host with
    /// database access suffices), so they are optional by default.
    pub const CHAIN_DEFAULT: [Phase; 5] = [
        Phase::Reconnaissance,
        Phase::VulnerabilityDiscovery,
        Phase::Exploitation,
        Phase::DataAnalysis,
        Phase::Exfiltration,
    ];

    /// The phases of the built-in `gtg1002-escalation` goal: the escalation from reconnaissance
    /// into exploitation that the seed's chain-of-command policy guards.
    pub const ESCALATION: [Phase; 3] = [
        Phase::Reconnaissance,
        Phase::VulnerabilityDiscovery,
        Phase::Exploitation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Reconnaissance => "reconnaissance",
            Phase::VulnerabilityDiscovery => "vulnerability_discovery",
            Phase::Exploitation => "exploitation",
            Phase::LateralMovement => "lateral_movement",
            Phase::CredentialHarvesting => "credential_harvesting",
            Phase::DataAnalysis => "data_analysis",
            Phase::Exfiltration => "exfiltration",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Phase::Reconnaissance => "reconnaissance",
            Phase::VulnerabilityDiscovery => "vulnerability discovery",
            Phase::Exploitation => "exploitation",
            Phase::LateralMovement => "lateral movement",
            Phase::CredentialHarvesting => "credential harvesting",
            Phase::DataAnalysis => "data analysis",
            Phase::Exfiltration => "exfiltration",
        }
    }

    /// The tactics that satisfy the phase.
    pub fn tactics(self) -> &'static [Tactic] {
        match self {
            Phase::Reconnaissance => &[Tactic::Reconnaissance, Tactic::Discovery],
            Phase::VulnerabilityDiscovery => &[Tactic::VulnerabilityDiscovery],
            Phase::Exploitation => &[
                Tactic::InitialAccess,
                Tactic::Execution,
                Tactic::PrivilegeEscalation,
            ],
            Phase::LateralMovement => &[Tactic::LateralMovement],
            Phase::CredentialHarvesting => &[Tactic::CredentialAccess],
            Phase::DataAnalysis => &[Tactic::Collection],
            Phase::Exfiltration => &[Tactic::Exfiltration],
        }
    }

    /// Parses a phase name (`credential_harvesting`, `data analysis`), case-insensitively.
    pub fn parse(text: &str) -> Option<Phase> {
        let norm = name_key(text);
        Phase::ALL.into_iter().find(|p| p.name() == norm)
    }
}

/// A name as tactics and phases are matched: trimmed, lowercase, `-` and spaces as `_`.
fn name_key(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tactics_parse_by_name_id_and_title() {
        for t in Tactic::ALL {
            assert_eq!(Tactic::parse(t.name()), Some(t));
            assert_eq!(Tactic::parse(t.title()), Some(t));
            assert_eq!(Tactic::parse(t.attack_id()), Some(t));
        }
        assert_eq!(
            Tactic::parse("Command & Control"),
            Some(Tactic::CommandAndControl)
        );
        assert_eq!(
            Tactic::parse("credential-access"),
            Some(Tactic::CredentialAccess)
        );
        assert_eq!(Tactic::parse("ta0010"), Some(Tactic::Exfiltration));
        assert_eq!(Tactic::parse("hacking"), None);
    }

    #[test]
    fn attack_ids_are_the_enterprise_ones() {
        let ids: Vec<&str> = Tactic::ALL.iter().map(|t| t.attack_id()).collect();
        for id in [
            "TA0043", "TA0042", "TA0001", "TA0002", "TA0003", "TA0004", "TA0005", "TA0006",
            "TA0007", "TA0008", "TA0009", "TA0011", "TA0010", "TA0040",
        ] {
            assert!(ids.contains(&id), "{id}");
        }
        assert!(Tactic::VulnerabilityDiscovery.is_extension());
        assert!(!Tactic::Discovery.is_extension());
    }

    #[test]
    fn hints_for_near_misses() {
        assert_eq!(Tactic::suggest("reconnaisance"), Some("reconnaissance"));
        assert_eq!(Tactic::suggest("exfiltraton"), Some("exfiltration"));
        assert_eq!(Tactic::suggest("data_analysis"), Some("data_analysis"));
    }

    #[test]
    fn every_phase_has_tactics() {
        for p in Phase::ALL {
            assert!(!p.tactics().is_empty());
            assert_eq!(Phase::parse(p.title()), Some(p));
        }
    }
}
