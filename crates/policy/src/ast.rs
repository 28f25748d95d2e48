//! The syntax tree of a policy file.

use crate::source::Span;
use ipnet::IpNet;
use std::sync::Arc;

/// What a policy does when its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Deny,
    RequireHitl,
    Allow,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "DENY",
            Action::RequireHitl => "REQUIRE_HITL",
            Action::Allow => "ALLOW",
        }
    }
}

/// Whose trajectory a policy looks at.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AgentIdentity,
    Session,
    User,
    DelegationRoot,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::AgentIdentity,
        Target::Session,
        Target::User,
        Target::DelegationRoot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::AgentIdentity => "agent_identity",
            Target::Session => "session",
            Target::User => "user",
            Target::DelegationRoot => "delegation_root",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Shadow,
}

/// One policy as written.
#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub action: Action,
    pub target: Target,
    pub condition: Expr,
    pub reason: Option<String>,
    pub approvers: Option<String>,
    pub mode: Mode,
    /// How long a held call waits for an approver before it is refused.
    pub deadline_ms: Option<i64>,
    /// The file the policy came from.
    pub source: Arc<str>,
    /// Where the policy is in its file.
    pub span: Span,
    /// The policy's text, for explanations and the bundle hash.
    pub text: String,
}

/// A boolean condition over the call being decided and its scope's trajectory.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Pred(Pred, Span),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Applies the operator to an ordering.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }

    /// Applies the operator to two counts.
    pub fn holds_u64(self, lhs: u64, rhs: u64) -> bool {
        self.holds(lhs.cmp(&rhs))
    }
}

/// A literal in a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
}

impl std::fmt::Display for Literal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "'{s}'"),
            Literal::Num(n) => write!(f, "{n}"),
        }
    }
}

/// A test applied to one value (an attribute, the tool's mode, the agent, ...).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Cmp(CmpOp, Literal),
    In(Vec<Literal>),
    NotIn(Vec<Literal>),
    /// `*` matches any run of characters, `?` exactly one.
    Matches(String),
    StartsWith(String),
    InCidr(Vec<IpNet>),
    /// `REGEX 'pattern'`: the value (as text) has a match of the pattern (`regex` crate syntax;
    /// anchor with `^...$` for a whole-value match).
    Regex(Pattern),
}

/// A compiled regular expression, compared by its source text.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Whether a test over a list of values needs one value to pass or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quant {
    /// `ANY` (the default): at least one value passes.
    Any,
    /// `ALL`: every value passes (an empty list passes).
    All,
}

/// A function over a call's argument values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueFn {
    /// `Provenance(v)`: the strongest source `v` was seen in: `user`, `trusted`, `untrusted` or
    /// `none`.
    Provenance,
    /// `Email_Domain(v)`: the domain of an email address, lowercased.
    EmailDomain,
    /// `Url_Host(v)`: the host of a URL, lowercased, without `www.` or port.
    UrlHost,
    /// `Length(v)`: characters of a string, elements of a list or object.
    Length,
    /// `Lower(v)`: the text lowercased.
    Lower,
    /// `Tokens(v)`: the values a text holds, as the provenance index finds them (emails, URLs
    /// and hosts, numbers and ids, quoted strings, names), normalised: one value each.
    Tokens,
}

impl ValueFn {
    pub const ALL: [ValueFn; 6] = [
        ValueFn::Provenance,
        ValueFn::EmailDomain,
        ValueFn::UrlHost,
        ValueFn::Length,
        ValueFn::Lower,
        ValueFn::Tokens,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ValueFn::Provenance => "Provenance",
            ValueFn::EmailDomain => "Email_Domain",
            ValueFn::UrlHost => "Url_Host",
            ValueFn::Length => "Length",
            ValueFn::Lower => "Lower",
            ValueFn::Tokens => "Tokens",
        }
    }
}

/// Values read from the call being decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueExpr {
    /// `Arg('/recipients/*')`: a JSON pointer into the arguments, where a `*` token stands for
    /// every element of a list (or value of an object); `Arg('Recipient')`: a catalog attribute
    /// (or else the argument of that name).
    Arg(String),
    Call(ValueFn, Box<ValueExpr>),
}

impl ValueExpr {
    /// Whether reading the value needs the scope's provenance index.
    pub fn needs_index(&self) -> bool {
        match self {
            ValueExpr::Arg(_) => false,
            ValueExpr::Call(f, inner) => *f == ValueFn::Provenance || inner.needs_index(),
        }
    }
}

/// What is asked of each value of a [`ValueExpr`].
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTest {
    /// Any of the tests on plain values (`==`, `IN [...]`, `MATCHES`, `REGEX`, ...).
    Test(Test),
    /// `FROM 'user'`, `FROM ['user', 'trusted']`: the value was seen in one of these sources
    /// (`none`: seen nowhere).
    From(Vec<String>),
    /// `IN Results('search_hotels', ...)`: the value was in an earlier result of a tool or
    /// class.
    InResults(Vec<String>),
}

/// Which value of the call a `Tool_Call('X')` test reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallField {
    /// The tool's catalog `mode` (`Tool_Call('X') == 'write_external'`).
    Mode,
    /// A catalog attribute, or else the call argument of that name.
    Attr(String),
}

/// A fact about the call's identity context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextField {
    Agent,
    User,
    Session,
    Root,
    Tool,
    Depth,
}

impl ContextField {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextField::Agent => "Agent",
            ContextField::User => "User",
            ContextField::Session => "Session",
            ContextField::Root => "Root",
            ContextField::Tool => "Tool",
            ContextField::Depth => "Depth",
        }
    }
}

/// An atomic predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// `Tool_Call('X')`: the call being decided matches X (tool name or class).
    Call { pattern: String },
    /// `Tool_Call('X').Count > N requests/W`: admitted X calls in `(now - W, now]`, this one
    /// included; the call being decided must match X.
    Count {
        pattern: String,
        op: CmpOp,
        n: u64,
        window_ms: i64,
    },
    /// `Tool_Call('X').Distinct('attr') > N values/W`: distinct values of `attr` among admitted X
    /// calls in the window, this one included; the call being decided must match X.
    Distinct {
        pattern: String,
        attr: String,
        op: CmpOp,
        n: u64,
        window_ms: i64,
    },
    /// `Tool_Call('X').Attr == 'v'`, `Tool_Call('X') == 'mode'`: the call matches X and the value
    /// passes the test.
    Field {
        pattern: String,
        field: CallField,
        test: Test,
    },
    /// `Trajectory_Contains('X') [WITHIN W]`.
    Contains {
        pattern: String,
        window_ms: Option<i64>,
    },
    /// `Sequence('A', 'B', 'C') [WITHIN W]`: calls matching A, then B, then C, in that order.
    Sequence {
        steps: Vec<String>,
        window_ms: Option<i64>,
    },
    /// `DataSource('D') [== 'mode'] [WITHIN W]`: the scope has accessed D (taint).
    DataSource {
        source: String,
        mode: Option<String>,
        window_ms: Option<i64>,
    },
    /// `Chain_Contains('user:bob')`: the principal is in the call's delegation chain.
    ChainContains { principal: String },
    /// `Agent MATCHES 'spiffe://acme.example/agent/*'`, `Depth > 2`, ...
    Context { field: ContextField, test: Test },
    /// `[ANY | ALL] <value> <test>`: `Arg('/to') FROM 'user'`,
    /// `Provenance(Arg('/iban')) == 'untrusted'`, `Arg('/hotel') IN Results('search_hotels')`,
    /// `ALL Email_Domain(Arg('/recipients/*')) == 'acme.example'`, `Arg('/amount') > 1000`.
    Value {
        quant: Quant,
        value: ValueExpr,
        test: ValueTest,
    },
}
