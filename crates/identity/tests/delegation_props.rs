//! Properties of delegation: along any chain of delegation requests (random tool subsets and
//! supersets, random lifetimes, time passing), tools and expiry only ever narrow, the chain
//! grows by exactly the parent, and every request that would widen is refused with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use truststack_identity::{
    AgentId, AgentRequest, DelegationError, DelegationRequest, Issued, Issuer, IssuerError,
    ManualClock, ToolSet, TrustDomain, UserId, VerifyError,
};

const T0: u64 = 1_794_560_400;
const UNIVERSE: [&str; 5] = [
    "ScanTool",
    "CodeAnalysisTool",
    "ExploitationTool",
    "http_get",
    "*",
];

struct Fixture {
    _dir: tempfile::TempDir,
    issuer: Issuer,
    clock: Arc<ManualClock>,
    td: TrustDomain,
}

thread_local! {
    static FIXTURE: Fixture = {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::new("acme.example").unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let issuer = Issuer::init(dir.path(), &td).unwrap().with_clock(clock.clone());
        Fixture { _dir: dir, issuer, clock, td }
    };
}

fn tools() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(UNIVERSE.to_vec(), 0..=UNIVERSE.len())
}

#[derive(Debug, Clone)]
struct Step {
    tools: Vec<&'static str>,
    ttl: Option<u64>,
    wait: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (tools(), proptest::option::of(1u64..=7200), 0u64..=900).prop_map(|(tools, ttl, wait)| Step {
        tools,
        ttl,
        wait,
    })
}

fn root(f: &Fixture, tools: &[&str], ttl: u64) -> Issued {
    f.issuer
        .issue_agent(&AgentRequest {
            agent: AgentId::new(&f.td, "root").unwrap(),
            owner: UserId::parse("user:alice@acme.example").unwrap(),
            tools: ToolSet::new(tools.iter().copied()).unwrap(),
            ttl: Duration::from_secs(ttl),
            audience: None,
        })
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn delegation_only_narrows(
        root_tools in tools(),
        root_ttl in 1u64..=7200,
        steps in proptest::collection::vec(step(), 1..=6),
    ) {
        FIXTURE.with(|f| {
            f.clock.set(T0);
            let mut current = root(f, &root_tools, root_ttl);
            for (i, s) in steps.iter().enumerate() {
                f.clock.advance(s.wait);
                let now = T0 + steps.iter().take(i + 1).map(|s| s.wait).sum::<u64>();
                let parent = current.credential.clone();
                let requested = ToolSet::new(s.tools.iter().copied()).unwrap();
                let result = f.issuer.delegate(&current.token, &DelegationRequest {
                    agent: format!("a{i}"),
                    tools: requested.clone(),
                    ttl: s.ttl.map(Duration::from_secs),
                });
                let not_covered: Vec<String> = requested
                    .as_slice()
                    .iter()
                    .filter(|t| !parent.tools.is_any() && !parent.tools.as_slice().contains(t))
                    .cloned()
                    .collect();
                let requested_exp = s.ttl.map_or(parent.expires_at, |t| now + t);
                if now >= parent.expires_at {
                    prop_assert!(matches!(
                        result,
                        Err(IssuerError::Parent(VerifyError::Expired { .. }))
                    ), "{result:?}");
                    break;
                } else if !not_covered.is_empty() {
                    match result {
                        Err(IssuerError::Delegation(DelegationError::WidensTools {
                            not_covered: got, ..
                        })) => prop_assert_eq!(got, not_covered),
                        other => prop_assert!(false, "widening tools accepted: {other:?}"),
                    }
                } else if requested_exp > parent.expires_at {
                    prop_assert!(matches!(
                        result,
                        Err(IssuerError::Delegation(DelegationError::ExtendsExpiry { .. }))
                    ), "{result:?}");
                } else {
                    let child = result.unwrap();
                    let c = f.issuer.verify(&child.token).unwrap();
                    prop_assert!(c.tools.is_within(&parent.tools));
                    prop_assert!(c.expires_at <= parent.expires_at);
                    let mut chain = parent.chain.clone();
                    chain.push(parent.subject.clone());
                    prop_assert_eq!(&c.chain, &chain);
                    prop_assert_eq!(&c.owner, &parent.owner);
                    prop_assert_eq!(c.ancestors.last(), Some(&parent.jti));
                    for t in c.tools.as_slice() {
                        prop_assert!(parent.tools.covers(t));
                    }
                    current = child;
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn every_widening_request_is_refused(
        parent_tools in tools().prop_filter("not *", |t| !t.contains(&"*")),
        extra in proptest::sample::select(UNIVERSE.to_vec()),
        keep in tools(),
        ttl in 1u64..=7200,
        beyond in 1u64..=3600,
    ) {
        FIXTURE.with(|f| {
            f.clock.set(T0);
            let parent = root(f, &parent_tools, ttl);
            let within: Vec<&str> = keep.iter().copied().filter(|t| parent_tools.contains(t)).collect();
            let request = |tools: Vec<&str>, ttl: Option<u64>| f.issuer.delegate(&parent.token, &DelegationRequest {
                agent: "child".into(),
                tools: ToolSet::new(tools).unwrap(),
                ttl: ttl.map(Duration::from_secs),
            });
            if !parent_tools.contains(&extra) {
                let mut wider = within.clone();
                wider.push(extra);
                let widened = matches!(
                    request(wider, None),
                    Err(IssuerError::Delegation(DelegationError::WidensTools { .. }))
                );
                prop_assert!(widened);
            }
            let later = matches!(
                request(within.clone(), Some(ttl + beyond)),
                Err(IssuerError::Delegation(DelegationError::ExtendsExpiry { .. }))
            );
            prop_assert!(later);
            prop_assert!(request(within, Some(ttl)).is_ok());
            Ok(())
        })?;
    }
}
