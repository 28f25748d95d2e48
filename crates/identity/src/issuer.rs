//! The issuer: a directory holding a trust domain's keys and revocations, which mints,
//! delegates, verifies and revokes credentials.
//!
//! ```text
//! <dir>/issuer.json        {"trust_domain": "acme.example", "issuer": "spiffe://acme.example",
//!                           "audience": "truststack"}
//! <dir>/keys/              signing and verification keys (see `keys`)
//! <dir>/revocations.json   the revocation list (see `revocation`)
//! ```

use crate::chain::{self, ChainError};
use crate::clock::{format_time, Clock, SystemClock};
use crate::credential::VerifiedCredential;
use crate::delegation::{self, DelegationError};
use crate::files::{ensure_private_dir, write_atomic};
use crate::id::{AgentId, Principal, TrustDomain, UserId};
use crate::keys::{KeyError, KeyStore};
use crate::revocation::{Revocation, RevocationError, RevocationList};
use crate::tools::ToolSet;
use crate::verify::{Verifier, VerifyError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Header};
use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CONFIG_FILE: &str = "issuer.json";
const KEYS_DIR: &str = "keys";
const REVOCATIONS_FILE: &str = "revocations.json";
/// The trust domain of an issuer created without one.
pub const DEFAULT_TRUST_DOMAIN: &str = "truststack.local";
/// The audience credentials are issued to unless told otherwise.
pub const DEFAULT_AUDIENCE: &str = "truststack";
/// The longest role or group name, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// What went wrong issuing, delegating, revoking, or opening the issuer directory.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// No `issuer.json` in the directory.
    #[error("{dir}: no issuer here; create one with `truststack identity init --dir {dir}`", dir = .dir.display())]
    NotInitialized {
        /// The directory.
        dir: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `issuer.json` cannot be read.
    #[error("{path}: not an issuer configuration: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// `init` with another trust domain than the existing issuer's.
    #[error("{dir}: the issuer already exists for trust domain `{existing}`, not `{requested}`", dir = .dir.display())]
    TrustDomainMismatch {
        /// The directory.
        dir: PathBuf,
        /// Its trust domain.
        existing: String,
        /// The one asked for.
        requested: String,
    },
    /// The keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The revocation list.
    #[error(transparent)]
    Revocations(#[from] RevocationError),
    /// An agent outside the issuer's trust domain.
    #[error(
        "{agent} is outside trust domain `{trust_domain}`; this issuer only names its own agents"
    )]
    ForeignTrustDomain {
        /// The agent.
        agent: String,
        /// The issuer's trust domain.
        trust_domain: String,
    },
    /// A credential for, or on behalf of, a revoked identity.
    #[error("identity {identity} is revoked; no credential can be issued for it or on its behalf")]
    IdentityRevoked {
        /// The revoked principal.
        identity: String,
    },
    /// The revocation's record could not be written, so it was not applied.
    #[error("the revocation was not recorded, so it was not applied (retry once the record can be written): {0}")]
    NotRecorded(String),
    /// A lifetime that overflows the clock.
    #[error("lifetime of {secs} s is out of range")]
    BadTtl {
        /// The lifetime in seconds.
        secs: u64,
    },
    /// An empty audience, or a bad role or group name.
    #[error("{what} `{value}` is not allowed (1 to {MAX_LABEL_LEN} bytes, no whitespace, control characters or commas)")]
    BadLabel {
        /// `audience`, `role` or `group`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The parent credential of a delegation was rejected.
    #[error("the parent credential is rejected: {0}")]
    Parent(#[source] VerifyError),
    /// The delegation is wider than its parent.
    #[error(transparent)]
    Delegation(#[from] DelegationError),
    /// The credential to mint has an inconsistent chain.
    #[error("refusing to mint an inconsistent credential: {0}")]
    Chain(#[from] ChainError),
    /// `jsonwebtoken` could not sign.
    #[error("signing failed: {detail}")]
    Sign {
        /// Its complaint.
        detail: String,
    },
}

/// `issuer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerConfig {
    /// The trust domain of the agents it names.
    pub trust_domain: TrustDomain,
    /// The `iss` of its credentials.
    pub issuer: String,
    /// The `aud` it issues to and accepts.
    pub audience: String,
}

/// A credential for an agent, acting for a human.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The agent (in the issuer's trust domain).
    pub agent: AgentId,
    /// The human it acts for.
    pub owner: UserId,
    /// Tool names or classes it may call.
    pub tools: ToolSet,
    /// How long the credential lives.
    pub ttl: Duration,
    /// The audience; the issuer's by default.
    pub audience: Option<String>,
}

/// A human's own credential, with roles and groups (approvers, admins).
#[derive(Debug, Clone)]
pub struct UserRequest {
    /// The human.
    pub user: UserId,
    /// Roles (`approver`, `admin`).
    pub roles: Vec<String>,
    /// Groups (`oncall`).
    pub groups: Vec<String>,
    /// How long the credential lives.
    pub ttl: Duration,
    /// The audience; the issuer's by default.
    pub audience: Option<String>,
}

/// A credential for a sub-agent, minted from its parent's.
#[derive(Debug, Clone)]
pub struct DelegationRequest {
    /// The sub-agent: a name placed below the parent's id (`recon` delegated from
    /// `spiffe://acme.example/agent/orch` is `spiffe://acme.example/agent/orch/recon`), or a
    /// full id that lies below it.
    pub agent: String,
    /// Its tools: within the parent's.
    pub tools: ToolSet,
    /// Its lifetime: ending no later than the parent's; the parent's expiry if `None`.
    pub ttl: Option<Duration>,
}

/// What a revocation names.
#[derive(Debug, Clone, Copy)]
pub enum Revoke<'a> {
    /// One credential (and every one delegated from it), by `jti`.
    Jti(&'a str),
    /// An identity: every credential it holds or that has it in its chain.
    Identity(&'a Principal),
}

/// A freshly minted credential.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The signed JWT.
    pub token: String,
    /// What it says.
    pub credential: VerifiedCredential,
    /// The `identity_issued` ledger record (without the token).
    pub record: Value,
}

/// An issuer directory, open.
pub struct Issuer {
    dir: PathBuf,
    config: IssuerConfig,
    keys: RwLock<KeyStore>,
    verifier: Verifier,
    clock: Arc<dyn Clock>,
    /// Serializes read-modify-write of the revocation list.
    revocation_lock: Mutex<()>,
    /// The revocation file's modification time and length when last read.
    revocations_seen: Mutex<Option<(std::time::SystemTime, u64)>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("keys", &*self.keys.read())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IssuerError + '_ {
    move |source| IssuerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check_label(what: &'static str, value: &str) -> Result<(), IssuerError> {
    let bad = value.is_empty()
        || value.len() > MAX_LABEL_LEN
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',');
    if bad {
        return Err(IssuerError::BadLabel {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn revocations_stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Issuer {
    /// Creates an issuer for `trust_domain` in `dir` (a key pair, `issuer.json`), or opens the
    /// one there if it has the same trust domain.
    pub fn init(dir: &Path, trust_domain: &TrustDomain) -> Result<Self, IssuerError> {
        let config_path = dir.join(CONFIG_FILE);
        if config_path.exists() {
            let issuer = Issuer::open(dir)?;
            if issuer.config.trust_domain != *trust_domain {
                return Err(IssuerError::TrustDomainMismatch {
                    dir: dir.to_path_buf(),
                    existing: issuer.config.trust_domain.to_string(),
                    requested: trust_domain.to_string(),
                });
            }
            return Ok(issuer);
        }
        ensure_private_dir(dir).map_err(io_err(dir))?;
        KeyStore::open_or_create(&dir.join(KEYS_DIR))?;
        let config = IssuerConfig {
            trust_domain: trust_domain.clone(),
            issuer: trust_domain.id(),
            audience: DEFAULT_AUDIENCE.to_string(),
        };
        let mut bytes = serde_json::to_vec_pretty(&config).map_err(|e| IssuerError::Config {
            path: config_path.clone(),
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&config_path, &bytes, 0o644).map_err(io_err(&config_path))?;
        Issuer::open(dir)
    }

    /// Opens the issuer in `dir`.
    pub fn open(dir: &Path) -> Result<Self, IssuerError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IssuerError::NotInitialized {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err(&config_path)(e)),
        };
        let config: IssuerConfig =
            serde_json::from_str(&text).map_err(|e| IssuerError::Config {
                path: config_path,
                detail: e.to_string(),
            })?;
        let keys = KeyStore::open(&dir.join(KEYS_DIR))?;
        let revocations = RevocationList::load(&dir.join(REVOCATIONS_FILE))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let verifier = Verifier::new(&config.issuer, &config.audience).with_clock(clock.clone());
        verifier.set_keys(keys.public_keys().clone());
        verifier.set_revocations(revocations);
        Ok(Issuer {
            dir: dir.to_path_buf(),
            config,
            keys: RwLock::new(keys),
            verifier,
            clock,
            revocation_lock: Mutex::new(()),
            revocations_seen: Mutex::new(revocations_stamp(&dir.join(REVOCATIONS_FILE))),
        })
    }

    /// Opens the issuer in `dir`, creating it for `trust_domain` on first use.
    pub fn open_or_init(dir: &Path, trust_domain: &TrustDomain) -> Result<Self, IssuerError> {
        if dir.join(CONFIG_FILE).exists() {
            Issuer::open(dir)
        } else {
            Issuer::init(dir, trust_domain)
        }
    }

    /// Uses `clock` for minting and verifying (tests, replays).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        let verifier =
            Verifier::new(&self.config.issuer, &self.config.audience).with_clock(clock.clone());
        verifier.set_keys(self.keys.read().public_keys().clone());
        verifier.set_revocations(self.verifier.revocations());
        self.verifier = verifier;
        self.clock = clock;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `issuer.json`.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The verifier of this issuer's credentials (its keys, audience and revocations).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies a credential of this issuer.
    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedCredential>, VerifyError> {
        self.verifier.verify(token)
    }

    /// Mints a credential for an agent acting for a human (chain: the human).
    pub fn issue_agent(&self, request: &AgentRequest) -> Result<Issued, IssuerError> {
        self.check_own(&request.agent)?;
        let owner = Principal::User(request.owner.clone());
        self.refuse_revoked(&[&owner, &Principal::Agent(request.agent.clone())])?;
        let (now, expires_at) = self.lifetime(request.ttl)?;
        self.mint(
            VerifiedCredential {
                subject: Principal::Agent(request.agent.clone()),
                chain: vec![owner],
                owner: request.owner.clone(),
                tools: request.tools.clone(),
                roles: Vec::new(),
                groups: Vec::new(),
                jti: new_jti(),
                ancestors: Vec::new(),
                issuer: self.config.issuer.clone(),
                audience: self.audience(request.audience.as_deref())?,
                issued_at: now,
                not_before: now,
                expires_at,
                kid: String::new(),
            },
            None,
        )
    }

    /// Mints a human's own credential with roles and groups.
    pub fn issue_user(&self, request: &UserRequest) -> Result<Issued, IssuerError> {
        for r in &request.roles {
            check_label("role", r)?;
        }
        for g in &request.groups {
            check_label("group", g)?;
        }
        let user = Principal::User(request.user.clone());
        self.refuse_revoked(&[&user])?;
        let (now, expires_at) = self.lifetime(request.ttl)?;
        let mut roles = request.roles.clone();
        roles.sort();
        roles.dedup();
        let mut groups = request.groups.clone();
        groups.sort();
        groups.dedup();
        self.mint(
            VerifiedCredential {
                subject: user,
                chain: Vec::new(),
                owner: request.user.clone(),
                tools: ToolSet::default(),
                roles,
                groups,
                jti: new_jti(),
                ancestors: Vec::new(),
                issuer: self.config.issuer.clone(),
                audience: self.audience(request.audience.as_deref())?,
                issued_at: now,
                not_before: now,
                expires_at,
                kid: String::new(),
            },
            None,
        )
    }

    /// Mints a credential for a sub-agent from the holder's own (verified here): tools within
    /// the parent's, expiry no later, chain = parent's chain + parent.
    pub fn delegate(
        &self,
        parent_token: &str,
        request: &DelegationRequest,
    ) -> Result<Issued, IssuerError> {
        let parent = self.verify(parent_token).map_err(IssuerError::Parent)?;
        let agent = delegation::child_id(&parent, &request.agent)?;
        self.check_own(&agent)?;
        let now = self.clock.now();
        let expires_at = match request.ttl {
            Some(ttl) => self.lifetime(ttl)?.1,
            None => parent.expires_at,
        };
        delegation::check(&parent, &agent, &request.tools, expires_at)?;
        let child = Principal::Agent(agent);
        self.refuse_revoked(&[&child])?;
        let mut chain = parent.chain.clone();
        chain.push(parent.subject.clone());
        let mut ancestors = parent.ancestors.clone();
        ancestors.push(parent.jti.clone());
        self.mint(
            VerifiedCredential {
                subject: child,
                chain,
                owner: parent.owner.clone(),
                tools: request.tools.clone(),
                roles: Vec::new(),
                groups: Vec::new(),
                jti: new_jti(),
                ancestors,
                issuer: self.config.issuer.clone(),
                audience: parent.audience.clone(),
                issued_at: now,
                not_before: now,
                expires_at,
                kid: String::new(),
            },
            Some(&parent.subject),
        )
    }

    /// Revokes one credential and everything delegated from it.
    pub fn revoke_jti(
        &self,
        jti: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<Revocation, IssuerError> {
        self.revoke(Revoke::Jti(jti), by, reason, |_| Ok(()))
    }

    /// Revokes an identity: every credential it holds or that has it in its chain.
    pub fn revoke_identity(
        &self,
        identity: &Principal,
        by: &str,
        reason: Option<String>,
    ) -> Result<Revocation, IssuerError> {
        self.revoke(Revoke::Identity(identity), by, reason, |_| Ok(()))
    }

    /// Revokes `what`, recording the revocation first: `record` writes it (to a ledger) and
    /// only once it has succeeded is the revocation list changed. A failed `record` leaves the
    /// list as it was ([`IssuerError::NotRecorded`]), so the revocation can be retried; a
    /// revocation is never in force without its record.
    pub fn revoke(
        &self,
        what: Revoke<'_>,
        by: &str,
        reason: Option<String>,
        record: impl FnOnce(&Revocation) -> Result<(), String>,
    ) -> Result<Revocation, IssuerError> {
        let _guard = self.revocation_lock.lock();
        let path = self.dir.join(REVOCATIONS_FILE);
        // Start from the file: another process may have revoked something since we opened it.
        let mut list = RevocationList::load(&path)?;
        let now = self.clock.now();
        let revocation = match what {
            Revoke::Jti(jti) => list.revoke_jti(jti, by, reason, now),
            Revoke::Identity(identity) => list.revoke_identity(identity, by, reason, now),
        }?;
        record(&revocation).map_err(IssuerError::NotRecorded)?;
        list.save(&path)?;
        self.verifier.set_revocations(list);
        Ok(revocation)
    }

    /// Takes up a revocation another process recorded (a replica sharing the ledger, whose
    /// issuer directory may be its own copy): in force here from now on, and kept in this
    /// directory's list. Returns whether it was new here.
    pub fn learn_revocation(&self, revocation: Revocation) -> Result<bool, IssuerError> {
        let _guard = self.revocation_lock.lock();
        let path = self.dir.join(REVOCATIONS_FILE);
        let mut list = RevocationList::load(&path)?;
        if !list.learn(revocation) {
            return Ok(false);
        }
        list.save(&path)?;
        self.verifier.set_revocations(list);
        Ok(true)
    }

    /// Re-reads `revocations.json` (revocations made by another process).
    pub fn reload_revocations(&self) -> Result<(), IssuerError> {
        let _guard = self.revocation_lock.lock();
        let list = RevocationList::load(&self.dir.join(REVOCATIONS_FILE))?;
        self.verifier.set_revocations(list);
        Ok(())
    }

    /// Re-reads `revocations.json` if it changed since it was last read (one `stat`), so a
    /// revocation made by another process (`truststack identity revoke`) takes effect on the
    /// next call a long-running verifier checks.
    /// Returns whether the list was re-read.
    pub fn refresh_revocations(&self) -> Result<bool, IssuerError> {
        let stamp = revocations_stamp(&self.dir.join(REVOCATIONS_FILE));
        let mut seen = self.revocations_seen.lock();
        if *seen == stamp {
            return Ok(false);
        }
        self.reload_revocations()?;
        *seen = stamp;
        Ok(true)
    }

    /// Makes a new signing key (old public keys stay trusted); returns its kid.
    pub fn rotate(&self) -> Result<String, IssuerError> {
        let mut keys = self.keys.write();
        let kid = keys.rotate()?;
        self.verifier.set_keys(keys.public_keys().clone());
        Ok(kid)
    }

    /// Stops trusting an old public key: the tokens it signed are rejected from now on.
    pub fn retire_key(&self, kid: &str) -> Result<(), IssuerError> {
        let mut keys = self.keys.write();
        keys.retire(kid)?;
        self.verifier.set_keys(keys.public_keys().clone());
        Ok(())
    }

    /// The kid of the signing key.
    pub fn active_kid(&self) -> String {
        self.keys.read().active_kid().to_string()
    }

    /// The signing key's file (PKCS#8 PEM, mode 0600).
    pub fn private_key_path(&self) -> PathBuf {
        self.keys.read().private_key_path()
    }

    /// The JWKS document of every trusted public key.
    pub fn jwks(&self) -> Value {
        // A JWK set is strings all the way down: serializing it cannot fail.
        serde_json::to_value(self.keys.read().jwks()).unwrap_or_else(|_| json!({"keys": []}))
    }

    fn check_own(&self, agent: &AgentId) -> Result<(), IssuerError> {
        if agent.trust_domain() != self.config.trust_domain.as_str() {
            return Err(IssuerError::ForeignTrustDomain {
                agent: agent.to_string(),
                trust_domain: self.config.trust_domain.to_string(),
            });
        }
        Ok(())
    }

    fn refuse_revoked(&self, principals: &[&Principal]) -> Result<(), IssuerError> {
        let revoked = self.verifier.revocations();
        match principals
            .iter()
            .find(|p| revoked.is_identity_revoked(p.as_str()))
        {
            Some(p) => Err(IssuerError::IdentityRevoked {
                identity: p.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn audience(&self, requested: Option<&str>) -> Result<String, IssuerError> {
        let audience = requested.unwrap_or(&self.config.audience);
        check_label("audience", audience)?;
        Ok(audience.to_string())
    }

    /// `(now, now + ttl)`.
    fn lifetime(&self, ttl: Duration) -> Result<(u64, u64), IssuerError> {
        let now = self.clock.now();
        let secs = ttl.as_secs();
        let expires_at = now
            .checked_add(secs)
            .filter(|_| secs > 0)
            .ok_or(IssuerError::BadTtl { secs })?;
        Ok((now, expires_at))
    }

    fn mint(
        &self,
        mut credential: VerifiedCredential,
        delegated_by: Option<&Principal>,
    ) -> Result<Issued, IssuerError> {
        chain::check(
            &credential.subject,
            &credential.chain,
            &credential.owner,
            &credential.jti,
            &credential.ancestors,
        )?;
        let keys = self.keys.read();
        credential.kid = keys.active_kid().to_string();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(credential.kid.clone());
        let token = jsonwebtoken::encode(&header, &credential.to_claims(), keys.encoding_key())
            .map_err(|e| IssuerError::Sign {
                detail: e.to_string(),
            })?;
        drop(keys);
        let record = issued_record(&credential, delegated_by);
        Ok(Issued {
            token,
            credential,
            record,
        })
    }
}

/// The `identity_issued` ledger record of a credential.
fn issued_record(c: &VerifiedCredential, delegated_by: Option<&Principal>) -> Value {
    let mut record = json!({
        "kind": "identity_issued",
        "time": format_time(c.issued_at),
        "jti": c.jti,
        "subject": c.subject,
        "owner": c.owner,
        "chain": c.chain,
        "tools": c.tools,
        "roles": c.roles,
        "groups": c.groups,
        "ancestors": c.ancestors,
        "audience": c.audience,
        "issued_at": c.issued_at,
        "not_before": c.not_before,
        "expires_at": c.expires_at,
        "kid": c.kid,
    });
    if let (Some(by), Value::Object(map)) = (delegated_by, &mut record) {
        map.insert("delegated_by".into(), Value::String(by.to_string()));
    }
    record
}
