//! Verification cost: a token never seen before (signature check, parsing, chain check, cache
//! insert) and a repeated token (served from the cache, lifetime and revocation re-checked).
//! Targets: ≤ 50 µs fresh, ≤ 2 µs cached. Baseline: the bare Ed25519 signature check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::Verifier as _;
use std::hint::black_box;
use std::time::Duration;
use truststack_identity::verify::DEFAULT_CACHE_CAPACITY;
use truststack_identity::{
    AgentId, AgentRequest, DelegationRequest, Issuer, ToolSet, TrustDomain, UserId,
};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("acme.example").unwrap();
    let issuer = Issuer::init(dir.path(), &td).unwrap();
    let orchestrator = issuer
        .issue_agent(&AgentRequest {
            agent: AgentId::new(&td, "orchestrator").unwrap(),
            owner: UserId::parse("user:alice@acme.example").unwrap(),
            tools: ToolSet::parse_list("ScanTool,CodeAnalysisTool,ExploitationTool").unwrap(),
            ttl: Duration::from_secs(3600),
            audience: None,
        })
        .unwrap();
    // Delegated tokens (a two-level chain), more of them than the cache holds, so cycling
    // through them in order never hits the cache.
    let pool: Vec<String> = (0..2 * DEFAULT_CACHE_CAPACITY)
        .map(|i| {
            issuer
                .delegate(
                    &orchestrator.token,
                    &DelegationRequest {
                        agent: format!("recon-{i}"),
                        tools: ToolSet::parse_list("ScanTool").unwrap(),
                        ttl: None,
                    },
                )
                .unwrap()
                .token
        })
        .collect();
    let mut group = c.benchmark_group("verify");
    // Baseline: the Ed25519 check alone (key already decompressed) over a token-sized message.
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let verifying_key = signing_key.verifying_key();
    let message = pool[0].rsplit_once('.').unwrap().0.as_bytes();
    let signature = ed25519_dalek::Signer::sign(&signing_key, message);
    group.bench_function("ed25519_signature_only", |b| {
        b.iter(|| {
            verifying_key
                .verify(black_box(message), black_box(&signature))
                .unwrap()
        })
    });
    let mut i = 0;
    group.bench_function("fresh_token", |b| {
        b.iter(|| {
            i = (i + 1) % pool.len();
            black_box(issuer.verify(black_box(&pool[i])).unwrap());
        })
    });
    let repeated = &pool[0];
    issuer.verify(repeated).unwrap();
    group.bench_function("cached_token", |b| {
        b.iter(|| black_box(issuer.verify(black_box(repeated)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
