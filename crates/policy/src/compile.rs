//! Compiling policies into a [`Bundle`]: symbols for tool names and classes, a per-tool index of
//! the policies that can fire and the monitors that must be updated, and the evaluation of a
//! policy for one call against its scope's monitor states.

use crate::ast::{
    CallField, CmpOp, ContextField, Expr, Literal, Policy, Pred, Quant, Target, Test, ValueExpr,
    ValueFn, ValueTest,
};
use crate::catalog::{Catalog, ToolSpec, UNKNOWN_CLASS};
use crate::explanation::{Explained, Explanation};
use crate::glob::glob_match;
use crate::ip_class;
use crate::monitor::{MonitorId, MonitorSpec, MonitorState};
use crate::provenance::{self, ProvenanceIndex, Seen};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// An interned tool name or class.
pub type Sym = u32;

/// The call being decided, as the evaluator sees it.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub tool: &'a str,
    pub args: &'a Value,
    /// Who makes the call.
    pub who: crate::principals::Principals<'a>,
    /// Milliseconds since the Unix epoch, on the engine's clock.
    pub now: i64,
}

/// What the bundle knows about one tool name, precomputed so a decision does one lookup.
#[derive(Debug, Clone)]
pub struct ToolInfo {
    /// The tool's own name and its classes (or `Unknown`), as symbols.
    syms: Vec<Sym>,
    /// Whether the catalog lists the tool.
    pub known: bool,
    spec: Option<ToolSpec>,
    /// Policies whose condition can hold for a call to this tool, in bundle order.
    pub candidates: Vec<usize>,
    /// Per target, the monitors a call to this tool updates when admitted, with the sequence
    /// steps it matches.
    updates: [Vec<MonitorUpdate>; 4],
    /// The bits of the bundle's `Results('X')` patterns this tool matches.
    result_bits: u64,
}

#[derive(Debug, Clone)]
struct MonitorUpdate {
    monitor: MonitorId,
    /// For sequences: which steps the tool matches.
    steps: Vec<bool>,
    /// For distinct counts: the attribute to read.
    attr: Option<String>,
}

impl ToolInfo {
    fn matches(&self, sym: Sym) -> bool {
        self.syms.contains(&sym)
    }

    pub fn spec(&self) -> Option<&ToolSpec> {
        self.spec.as_ref()
    }
}

#[derive(Debug, Clone)]
enum Atom {
    Call(Sym),
    Count {
        pattern: Sym,
        monitor: MonitorId,
        op: CmpOp,
        n: u64,
        window_ms: i64,
    },
    Distinct {
        pattern: Sym,
        monitor: MonitorId,
        attr: String,
        op: CmpOp,
        n: u64,
        window_ms: i64,
    },
    Field {
        pattern: Sym,
        field: CallField,
        test: Test,
    },
    Contains {
        pattern: Sym,
        monitor: MonitorId,
        window_ms: Option<i64>,
    },
    Sequence {
        steps: Vec<Sym>,
        monitor: MonitorId,
        window_ms: Option<i64>,
    },
    Taint {
        source: String,
        mode: Option<String>,
        monitor: MonitorId,
        window_ms: Option<i64>,
    },
    ChainContains(String),
    Context {
        field: ContextField,
        test: Test,
    },
    Value {
        quant: Quant,
        value: ValueExpr,
        test: CValueTest,
        /// The scope's provenance index, when the value or the test reads it.
        index: Option<MonitorId>,
    },
}

#[derive(Debug, Clone)]
enum CValueTest {
    Test(Test),
    /// Source bits, and whether `none` (seen nowhere) counts.
    From {
        mask: u8,
        none: bool,
    },
    /// `Results` bits.
    InResults(u64),
}

impl CValueTest {
    /// Whether one value passes, and what the index knows of it when the test read the index.
    /// `lookups`, when given, keeps what the index said of each argument for the rest of the
    /// call.
    fn on(
        &self,
        v: Arg<'_>,
        index: Option<&ProvenanceIndex>,
        lookups: Option<&mut Lookups>,
    ) -> (bool, Option<Seen>) {
        match self {
            CValueTest::Test(t) => (test_value(t, Some(v.value())), None),
            CValueTest::From { mask, none } => {
                let known = seen(v, index, lookups);
                let holds = known.sources & mask != 0 || (*none && known.sources == 0);
                (holds, Some(known))
            }
            CValueTest::InResults(bits) => {
                let known = seen(v, index, lookups);
                (known.results & bits != 0, Some(known))
            }
        }
    }
}

/// What the provenance index knew of each argument value one decision looked up, so that a
/// value several atoms test (of one policy or of several) is looked up once. Kept for one call:
/// a value is known by its place in the call's arguments and the index by its address, both
/// fixed while the call is decided (its scopes are locked); values computed from arguments
/// (a domain, a host) are looked up each time.
#[derive(Debug, Default)]
pub struct Lookups(Vec<(usize, usize, Seen)>);

/// A value a test reads: one of the call's arguments (at a place fixed for the call), or one
/// computed from them.
#[derive(Clone, Copy)]
enum Arg<'v> {
    InCall(&'v Value),
    Computed(&'v Value),
}

impl<'v> From<&'v Cow<'_, Value>> for Arg<'v> {
    /// The values of a value expression borrow the call's arguments, or are computed.
    fn from(v: &'v Cow<'_, Value>) -> Self {
        match v {
            Cow::Borrowed(value) => Arg::InCall(value),
            Cow::Owned(value) => Arg::Computed(value),
        }
    }
}

impl<'v> Arg<'v> {
    fn value(self) -> &'v Value {
        match self {
            Arg::InCall(v) | Arg::Computed(v) => v,
        }
    }
}

impl Lookups {
    fn seen(&mut self, v: Arg<'_>, index: Option<&ProvenanceIndex>) -> Seen {
        let (Arg::InCall(value), Some(ix)) = (v, index) else {
            return lookup(index, v.value());
        };
        let key = (
            std::ptr::from_ref::<Value>(value) as usize,
            std::ptr::from_ref(ix) as usize,
        );
        if let Some(&(_, _, seen)) = self.0.iter().find(|(v, i, _)| (*v, *i) == key) {
            return seen;
        }
        let seen = ix.lookup(value);
        self.0.push((key.0, key.1, seen));
        seen
    }
}

/// How many distinct `Results('X')` patterns a bundle may use (one bit each).
pub const MAX_RESULT_PATTERNS: usize = 64;

#[derive(Debug, Clone)]
enum CExpr {
    And(Vec<CExpr>),
    Or(Vec<CExpr>),
    Not(Box<CExpr>),
    /// An atom, its source text (for explanations) and its place among the policy's atoms.
    Atom(Box<Atom>, Arc<str>, usize),
}

/// A policy ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub policy: Policy,
    expr: CExpr,
    /// How many atoms `expr` holds.
    atoms: usize,
}

/// What evaluating one policy for one call keeps for its explanation: each atom's outcome, by
/// its place among the policy's atoms, and the call's index lookups.
struct Kept<'c, 'l> {
    outcomes: Vec<Option<Outcome<'c>>>,
    lookups: &'l mut Lookups,
}

/// A value atom's parts for one call: what its truth and its explanation are made of.
struct ValueAtom<'a, 'c> {
    quant: Quant,
    test: &'a CValueTest,
    index: Option<&'a ProvenanceIndex>,
    values: Vec<Cow<'c, Value>>,
}

/// An atom's value for one call, kept from evaluating a condition for its explanation.
enum Outcome<'c> {
    /// Its truth and the monitor value behind it, if any.
    Plain(bool, Option<Value>),
    /// A value atom's truth, its values and, for the tests that read the index, what the index
    /// knows of each.
    Values(bool, Vec<(Cow<'c, Value>, Option<Seen>)>),
}

impl Outcome<'_> {
    fn holds(&self) -> bool {
        match self {
            Outcome::Plain(holds, _) | Outcome::Values(holds, _) => *holds,
        }
    }

    /// The truth and the value an explanation shows: a value atom's values, each with its
    /// strongest source where the test read the index.
    fn explained(self) -> Explained {
        match self {
            Outcome::Plain(holds, None) => Explained::Holds(holds),
            Outcome::Plain(holds, Some(value)) => Explained::Value { holds, value },
            Outcome::Values(holds, values) => Explained::Values {
                holds,
                values: values
                    .into_iter()
                    .map(|(v, seen)| {
                        (
                            v.into_owned(),
                            seen.map(|s| provenance::strongest(s.sources)),
                        )
                    })
                    .collect(),
            },
        }
    }
}

/// Policies compiled against a catalog, with their monitor layout. Immutable once built; the
/// engine keeps the per-scope states.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub policies: Vec<CompiledPolicy>,
    pub catalog: Catalog,
    /// `sha256:<hex>` over the policy sources and the catalog.
    pub hash: String,
    tools: HashMap<String, ToolInfo>,
    unknown: ToolInfo,
    /// Policy id → its position in `policies` (ids are unique in a bundle).
    by_id: HashMap<String, usize>,
    /// Per target: the monitors and their capacities.
    monitors: [Vec<(MonitorSpec, usize)>; 4],
    /// Per target: the provenance index among the monitors, if a policy reads one.
    provenance: [Option<MonitorId>; 4],
    /// Bytes one scope's provenance index may hold (see [`crate::provenance`]).
    pub provenance_bound: usize,
    /// Predicates that read the provenance index are unknown (the proving ground, which has no
    /// inputs or results): a policy whose condition then has no definite value is taken at the
    /// attacker's best — a DENY or REQUIRE_HITL does not fire, an ALLOW does. Sound: every
    /// trajectory the engine could admit, the proving ground admits.
    pub provenance_unknown: bool,
}

struct Compiler<'c> {
    catalog: &'c Catalog,
    symbols: HashMap<String, Sym>,
    monitors: [Vec<(MonitorSpec, usize)>; 4],
    /// `Results('X')` patterns, one bit each.
    results: Vec<Sym>,
    /// Atoms of the policy being compiled so far.
    atoms: usize,
}

impl Compiler<'_> {
    fn sym(&mut self, name: &str) -> Sym {
        let next = self.symbols.len() as Sym;
        *self.symbols.entry(name.to_string()).or_insert(next)
    }

    fn monitor(&mut self, target: Target, spec: MonitorSpec, capacity: usize) -> MonitorId {
        let list = &mut self.monitors[target.index()];
        if let Some(i) = list.iter().position(|(s, _)| *s == spec) {
            if let Some(entry) = list.get_mut(i) {
                entry.1 = entry.1.max(capacity);
            }
            return i;
        }
        list.push((spec, capacity));
        list.len() - 1
    }

    /// `text` is the policy's text, which starts at byte `offset` of its source.
    fn expr(&mut self, target: Target, e: &Expr, text: &str, offset: usize) -> CExpr {
        match e {
            Expr::And(items) => CExpr::And(
                items
                    .iter()
                    .map(|i| self.expr(target, i, text, offset))
                    .collect(),
            ),
            Expr::Or(items) => CExpr::Or(
                items
                    .iter()
                    .map(|i| self.expr(target, i, text, offset))
                    .collect(),
            ),
            Expr::Not(inner) => CExpr::Not(Box::new(self.expr(target, inner, text, offset))),
            Expr::Pred(p, span) => {
                let range = span.start.saturating_sub(offset)..span.end.saturating_sub(offset);
                let label = Arc::from(text.get(range).unwrap_or(""));
                self.atoms += 1;
                CExpr::Atom(Box::new(self.atom(target, p)), label, self.atoms - 1)
            }
        }
    }

    /// Ring and distinct monitors keep N+1 entries for `> N`, enough to tell every comparison
    /// with N apart.
    fn capacity(op: CmpOp, n: u64) -> usize {
        let needed = match op {
            CmpOp::Gt | CmpOp::Le | CmpOp::Eq | CmpOp::Ne => n.saturating_add(1),
            CmpOp::Ge | CmpOp::Lt => n,
        };
        usize::try_from(needed).unwrap_or(usize::MAX)
    }

    fn atom(&mut self, target: Target, p: &Pred) -> Atom {
        match p {
            Pred::Call { pattern } => Atom::Call(self.sym(pattern)),
            Pred::Count {
                pattern,
                op,
                n,
                window_ms,
            } => {
                let pattern = self.sym(pattern);
                let spec = MonitorSpec::Ring {
                    pattern,
                    window_ms: *window_ms,
                };
                // The call being decided is the +1; the ring holds the admitted ones.
                let monitor = self.monitor(target, spec, Self::capacity(*op, *n));
                Atom::Count {
                    pattern,
                    monitor,
                    op: *op,
                    n: *n,
                    window_ms: *window_ms,
                }
            }
            Pred::Distinct {
                pattern,
                attr,
                op,
                n,
                window_ms,
            } => {
                let pattern = self.sym(pattern);
                let spec = MonitorSpec::Distinct {
                    pattern,
                    attr: attr.clone(),
                    window_ms: *window_ms,
                };
                let monitor = self.monitor(target, spec, Self::capacity(*op, *n));
                Atom::Distinct {
                    pattern,
                    monitor,
                    attr: attr.clone(),
                    op: *op,
                    n: *n,
                    window_ms: *window_ms,
                }
            }
            Pred::Field {
                pattern,
                field,
                test,
            } => Atom::Field {
                pattern: self.sym(pattern),
                field: field.clone(),
                test: test.clone(),
            },
            Pred::Contains { pattern, window_ms } => {
                let pattern = self.sym(pattern);
                let monitor = self.monitor(target, MonitorSpec::Last { pattern }, 0);
                Atom::Contains {
                    pattern,
                    monitor,
                    window_ms: *window_ms,
                }
            }
            Pred::Sequence { steps, window_ms } => {
                let steps: Vec<Sym> = steps.iter().map(|s| self.sym(s)).collect();
                let monitor = self.monitor(
                    target,
                    MonitorSpec::Sequence {
                        steps: steps.clone(),
                    },
                    0,
                );
                Atom::Sequence {
                    steps,
                    monitor,
                    window_ms: *window_ms,
                }
            }
            Pred::DataSource {
                source,
                mode,
                window_ms,
            } => {
                let spec = MonitorSpec::Taint {
                    source: source.clone(),
                    mode: mode.clone(),
                };
                let monitor = self.monitor(target, spec, 0);
                Atom::Taint {
                    source: source.clone(),
                    mode: mode.clone(),
                    monitor,
                    window_ms: *window_ms,
                }
            }
            Pred::ChainContains { principal } => Atom::ChainContains(principal.clone()),
            Pred::Context { field, test } => Atom::Context {
                field: *field,
                test: test.clone(),
            },
            Pred::Value { quant, value, test } => {
                let test = match test {
                    ValueTest::Test(t) => CValueTest::Test(t.clone()),
                    ValueTest::From(sources) => {
                        let bits: Vec<u8> = sources
                            .iter()
                            .filter_map(|s| provenance::source_bit(s))
                            .collect();
                        CValueTest::From {
                            mask: bits.iter().fold(0, |m, b| m | b),
                            none: bits.contains(&0),
                        }
                    }
                    ValueTest::InResults(tools) => {
                        let bits = tools.iter().fold(0u64, |bits, t| {
                            let sym = self.sym(t);
                            let i = match self.results.iter().position(|r| *r == sym) {
                                Some(i) => i,
                                None => {
                                    self.results.push(sym);
                                    self.results.len() - 1
                                }
                            };
                            // `check` refuses bundles with more patterns than bits; were one
                            // compiled anyway, the extra patterns would match nothing (the
                            // membership fails, which policies use to hold calls).
                            bits | 1u64.checked_shl(i as u32).unwrap_or(0)
                        });
                        CValueTest::InResults(bits)
                    }
                };
                let needs = value.needs_index() || !matches!(test, CValueTest::Test(_));
                let index = needs.then(|| self.monitor(target, MonitorSpec::Provenance, 0));
                Atom::Value {
                    quant: *quant,
                    value: value.clone(),
                    test,
                    index,
                }
            }
        }
    }

    /// The tool symbols a call must match (at least one of) for the condition to hold; `None`
    /// when any call can.
    fn trigger(e: &CExpr) -> Option<BTreeSet<Sym>> {
        match e {
            // Every conjunct's set is necessary on its own. Intersecting the sets would be wrong:
            // a call matches several symbols (its name and its classes), so `Tool_Call('NetTool')
            // AND Tool_Call('exploit_runner')` must still trigger on exploit_runner.
            CExpr::And(items) => items
                .iter()
                .filter_map(Self::trigger)
                .min_by_key(BTreeSet::len),
            CExpr::Or(items) => items
                .iter()
                .map(Self::trigger)
                .collect::<Option<Vec<_>>>()
                .map(|sets| sets.into_iter().flatten().collect()),
            CExpr::Not(_) => None,
            CExpr::Atom(atom, _, _) => match &**atom {
                Atom::Call(p)
                | Atom::Count { pattern: p, .. }
                | Atom::Distinct { pattern: p, .. }
                | Atom::Field { pattern: p, .. } => Some(BTreeSet::from([*p])),
                _ => None,
            },
        }
    }

    fn tool_info(
        &self,
        syms: Vec<Sym>,
        spec: Option<ToolSpec>,
        known: bool,
        triggers: &[Option<BTreeSet<Sym>>],
    ) -> ToolInfo {
        let candidates = triggers
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.as_ref()
                    .is_none_or(|set| syms.iter().any(|s| set.contains(s)))
            })
            .map(|(i, _)| i)
            .collect();
        let data_source = spec.as_ref().and_then(|s| s.data_source.clone());
        let updates = std::array::from_fn(|t| {
            self.monitors[t]
                .iter()
                .enumerate()
                .filter_map(|(monitor, (m, _))| {
                    let (applies, steps, attr) = match m {
                        MonitorSpec::Last { pattern } | MonitorSpec::Ring { pattern, .. } => {
                            (syms.contains(pattern), Vec::new(), None)
                        }
                        MonitorSpec::Distinct { pattern, attr, .. } => {
                            (syms.contains(pattern), Vec::new(), Some(attr.clone()))
                        }
                        MonitorSpec::Sequence { steps } => {
                            let hits: Vec<bool> = steps.iter().map(|s| syms.contains(s)).collect();
                            (hits.iter().any(|h| *h), hits, None)
                        }
                        MonitorSpec::Provenance => (false, Vec::new(), None),
                        MonitorSpec::Taint { source, mode } => (
                            data_source
                                .as_ref()
                                .is_some_and(|d| taint_matches(source, mode, &d.name, &d.mode)),
                            Vec::new(),
                            None,
                        ),
                    };
                    applies.then_some(MonitorUpdate {
                        monitor,
                        steps,
                        attr,
                    })
                })
                .collect()
        });
        let result_bits = self
            .results
            .iter()
            .take(MAX_RESULT_PATTERNS)
            .enumerate()
            .filter(|(_, r)| syms.contains(r))
            .fold(0u64, |bits, (i, _)| bits | (1u64 << i));
        ToolInfo {
            syms,
            known,
            spec,
            candidates,
            updates,
            result_bits,
        }
    }
}

fn taint_matches(source: &str, mode: &Option<String>, name: &str, access: &str) -> bool {
    source == name && mode.as_deref().is_none_or(|m| m == access)
}

impl Bundle {
    /// Compiles parsed policies against a catalog. `hash` identifies the bundle's sources.
    pub fn compile(policies: Vec<Policy>, catalog: Catalog, hash: String) -> Bundle {
        let mut c = Compiler {
            catalog: &catalog,
            symbols: HashMap::new(),
            monitors: Default::default(),
            results: Vec::new(),
            atoms: 0,
        };
        let unknown_sym = c.sym(UNKNOWN_CLASS);
        let compiled: Vec<CompiledPolicy> = policies
            .into_iter()
            .map(|policy| {
                c.atoms = 0;
                let expr = c.expr(
                    policy.target,
                    &policy.condition,
                    &policy.text,
                    policy.span.start,
                );
                CompiledPolicy {
                    expr,
                    atoms: c.atoms,
                    policy,
                }
            })
            .collect();
        let triggers: Vec<Option<BTreeSet<Sym>>> = compiled
            .iter()
            .map(|p| Compiler::trigger(&p.expr))
            .collect();
        let mut tools = HashMap::new();
        let catalog_tools: Vec<(String, ToolSpec)> = c
            .catalog
            .tools
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (name, spec) in catalog_tools {
            let mut syms = vec![c.sym(&name)];
            for class in &spec.classes {
                let s = c.sym(class);
                if !syms.contains(&s) {
                    syms.push(s);
                }
            }
            let info = c.tool_info(syms, Some(spec), true, &triggers);
            tools.insert(name, info);
        }
        // Names that policies use but the catalog does not list: a call to such a tool still
        // matches by name, and is also `Unknown`.
        let phantom: Vec<(String, Sym)> = c
            .symbols
            .iter()
            .filter(|(name, _)| !tools.contains_key(*name) && name.as_str() != UNKNOWN_CLASS)
            .map(|(n, s)| (n.clone(), *s))
            .collect();
        for (name, sym) in phantom {
            let info = c.tool_info(vec![sym, unknown_sym], None, false, &triggers);
            tools.insert(name, info);
        }
        let unknown = c.tool_info(vec![unknown_sym], None, false, &triggers);
        let monitors = c.monitors;
        let provenance = std::array::from_fn(|t| {
            monitors[t]
                .iter()
                .position(|(spec, _)| *spec == MonitorSpec::Provenance)
        });
        let by_id = compiled
            .iter()
            .enumerate()
            .map(|(i, p)| (p.policy.id.clone(), i))
            .collect();
        Bundle {
            policies: compiled,
            catalog,
            hash,
            tools,
            unknown,
            by_id,
            monitors,
            provenance,
            provenance_bound: provenance::DEFAULT_BOUND,
            provenance_unknown: false,
        }
    }

    /// The policy with this id.
    pub fn policy(&self, id: &str) -> Option<&CompiledPolicy> {
        self.by_id.get(id).and_then(|&i| self.policies.get(i))
    }

    /// What the bundle knows about a tool name (a shared `Unknown` entry for unlisted tools).
    pub fn tool(&self, name: &str) -> &ToolInfo {
        self.tools.get(name).unwrap_or(&self.unknown)
    }

    /// Whether any policy targets this scope kind (so the engine can skip its state).
    pub fn uses_target(&self, target: Target) -> bool {
        self.policies.iter().any(|p| p.policy.target == target)
    }

    /// Fresh monitor states for a scope of kind `target`.
    pub fn new_states(&self, target: Target) -> Vec<MonitorState> {
        self.monitors[target.index()]
            .iter()
            .map(|(spec, cap)| match spec {
                MonitorSpec::Provenance => MonitorState::new(spec, self.provenance_bound),
                _ => MonitorState::new(spec, *cap),
            })
            .collect()
    }

    /// Whether any policy reads the provenance index of scopes of kind `target`: if none does,
    /// inputs and results are not indexed there.
    pub fn indexes(&self, target: Target) -> bool {
        self.provenance[target.index()].is_some()
    }

    /// What the provenance index among one scope's `states` knows of `value`; `None` when no
    /// policy indexes scopes of kind `target`.
    pub fn provenance_of(
        &self,
        target: Target,
        states: &[MonitorState],
        value: &Value,
    ) -> Option<Seen> {
        match states.get(self.provenance[target.index()]?)? {
            MonitorState::Provenance(index) => Some(index.lookup(value)),
            _ => None,
        }
    }

    fn index_mut<'s>(
        &self,
        target: Target,
        states: &'s mut [MonitorState],
    ) -> Option<&'s mut ProvenanceIndex> {
        match states.get_mut(self.provenance[target.index()]?)? {
            MonitorState::Provenance(index) => Some(index),
            _ => None,
        }
    }

    /// Indexes a human's instruction and its structured values in one scope's states.
    pub fn observe_input(
        &self,
        target: Target,
        text: &str,
        values: &Value,
        states: &mut [MonitorState],
    ) {
        let Some(index) = self.index_mut(target, states) else {
            return;
        };
        index.index_input(text);
        walk(values, &mut |v| match v {
            Value::String(s) => index.index_text(s, provenance::USER, 0),
            other => index.index_scalar(other, provenance::USER, 0),
        });
    }

    /// Indexes a tool's result in one scope's states, each value with the trust the catalog
    /// gives the tool's output (or the field it is in). A result of no named tool, or of a
    /// tool the catalog does not list, is untrusted.
    pub fn observe_result(
        &self,
        target: Target,
        tool: Option<&str>,
        result: &Value,
        states: &mut [MonitorState],
    ) {
        let Some(index) = self.index_mut(target, states) else {
            return;
        };
        let info = tool.map_or(&self.unknown, |t| self.tool(t));
        let (trust, fields) = match info.spec() {
            Some(spec) => (spec.output.source(), &spec.output_fields),
            None => (provenance::UNTRUSTED, &BTreeMap::new()),
        };
        let bits = info.result_bits;
        if fields.is_empty() {
            walk_keys(result, &mut |v| index_leaf(index, v, trust, bits));
            return;
        }
        let patterns: Vec<(Vec<&str>, u8)> = fields
            .iter()
            .map(|(p, t)| (p.split('/').skip(1).collect(), t.source()))
            .collect();
        let mut path = Vec::new();
        walk_fields(result, &mut path, trust, &patterns, &mut |v, trust| {
            index_leaf(index, v, trust, bits)
        });
    }

    /// Whether `policy`'s condition holds for `call`; `states` are the monitor states of the
    /// policy's target scope.
    pub fn evaluate(
        &self,
        policy: usize,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
    ) -> bool {
        let Some(p) = self.policies.get(policy) else {
            return false;
        };
        if !self.provenance_unknown {
            return self.eval(&p.expr, call, info, states);
        }
        match self.eval_tri(&p.expr, call, info, states) {
            Some(holds) => holds,
            None => p.policy.action == crate::ast::Action::Allow,
        }
    }

    /// Three-valued evaluation with predicates over the provenance index unknown (`None`).
    fn eval_tri(
        &self,
        e: &CExpr,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
    ) -> Option<bool> {
        match e {
            CExpr::And(items) => {
                let mut unknown = false;
                for i in items {
                    match self.eval_tri(i, call, info, states) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            CExpr::Or(items) => {
                let mut unknown = false;
                for i in items {
                    match self.eval_tri(i, call, info, states) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            CExpr::Not(inner) => self.eval_tri(inner, call, info, states).map(|b| !b),
            CExpr::Atom(atom, _, _) => match &**atom {
                Atom::Value { index: Some(_), .. } => None,
                other => Some(self.holds(other, call, info, states)),
            },
        }
    }

    fn eval(
        &self,
        e: &CExpr,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
    ) -> bool {
        match e {
            CExpr::And(items) => items.iter().all(|i| self.eval(i, call, info, states)),
            CExpr::Or(items) => items.iter().any(|i| self.eval(i, call, info, states)),
            CExpr::Not(inner) => !self.eval(inner, call, info, states),
            CExpr::Atom(atom, _, _) => self.holds(atom, call, info, states),
        }
    }

    /// [`Bundle::eval`] keeping each atom's outcome in `memo` (by its place) for the
    /// explanation.
    fn eval_memo<'c>(
        &self,
        e: &CExpr,
        call: &CallContext<'c>,
        info: &ToolInfo,
        states: &[MonitorState],
        kept: &mut Kept<'c, '_>,
    ) -> bool {
        match e {
            CExpr::And(items) => items
                .iter()
                .all(|i| self.eval_memo(i, call, info, states, kept)),
            CExpr::Or(items) => items
                .iter()
                .any(|i| self.eval_memo(i, call, info, states, kept)),
            CExpr::Not(inner) => !self.eval_memo(inner, call, info, states, kept),
            CExpr::Atom(atom, _, place) => {
                let outcome = self.outcome(atom, call, info, states, kept.lookups);
                let holds = outcome.holds();
                if let Some(slot) = kept.outcomes.get_mut(*place) {
                    *slot = Some(outcome);
                }
                holds
            }
        }
    }

    /// An atom's truth alone. A value atom's is found without building its explanation (the
    /// values with their sources), which only a fired policy's explanation needs.
    fn holds(
        &self,
        atom: &Atom,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
    ) -> bool {
        let Some(ValueAtom {
            quant,
            test,
            index,
            values,
        }) = self.value_atom(atom, call, info, states, None)
        else {
            return self.plain(atom, call, info, states).0;
        };
        let one = |v: &Cow<Value>| test.on(v.into(), index, None).0;
        match quant {
            Quant::Any => values.iter().any(one),
            Quant::All => values.iter().all(one),
        }
    }

    /// Every atom of a policy with its value for this call: what made it fire.
    pub fn explain(
        &self,
        policy: usize,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
    ) -> Explanation {
        let mut out = Vec::new();
        if let Some(p) = self.policies.get(policy) {
            let mut lookups = Lookups::default();
            let mut kept = Kept {
                outcomes: Vec::new(),
                lookups: &mut lookups,
            };
            self.explain_expr(&p.expr, call, info, states, &mut kept, &mut out);
        }
        Explanation::new(out)
    }

    /// Whether `policy`'s condition holds for `call` ([`Bundle::evaluate`]) and, when it does,
    /// its explanation ([`Bundle::explain`]), with each atom evaluated once for both. Give every
    /// policy evaluated for one call the same `lookups`.
    pub fn evaluate_explained(
        &self,
        policy: usize,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
        lookups: &mut Lookups,
    ) -> Option<Explanation> {
        let p = self.policies.get(policy)?;
        if self.provenance_unknown {
            return self
                .evaluate(policy, call, info, states)
                .then(|| self.explain(policy, call, info, states));
        }
        let mut kept = Kept {
            outcomes: (0..p.atoms).map(|_| None).collect(),
            lookups,
        };
        if !self.eval_memo(&p.expr, call, info, states, &mut kept) {
            return None;
        }
        let mut out = Vec::with_capacity(p.atoms);
        self.explain_expr(&p.expr, call, info, states, &mut kept, &mut out);
        Some(Explanation::new(out))
    }

    /// Explains every atom of `e` into `out`, taking an atom's outcome from `kept` where the
    /// evaluation left one.
    fn explain_expr<'c>(
        &self,
        e: &CExpr,
        call: &CallContext<'c>,
        info: &ToolInfo,
        states: &[MonitorState],
        kept: &mut Kept<'c, '_>,
        out: &mut Vec<(Arc<str>, Explained)>,
    ) {
        match e {
            CExpr::And(items) | CExpr::Or(items) => {
                for i in items {
                    self.explain_expr(i, call, info, states, kept, out);
                }
            }
            CExpr::Not(inner) => self.explain_expr(inner, call, info, states, kept, out),
            CExpr::Atom(atom, label, place) => {
                let outcome = match kept.outcomes.get_mut(*place).and_then(Option::take) {
                    Some(outcome) => outcome,
                    None => self.outcome(atom, call, info, states, kept.lookups),
                };
                out.push((label.clone(), outcome.explained()));
            }
        }
    }

    /// An atom's outcome: what its explanation is made of.
    fn outcome<'c>(
        &self,
        atom: &Atom,
        call: &CallContext<'c>,
        info: &ToolInfo,
        states: &[MonitorState],
        lookups: &mut Lookups,
    ) -> Outcome<'c> {
        let Some(ValueAtom {
            quant,
            test,
            index,
            values,
        }) = self.value_atom(atom, call, info, states, Some(&mut *lookups))
        else {
            let (holds, value) = self.plain(atom, call, info, states);
            return Outcome::Plain(holds, value);
        };
        let (mut any, mut all) = (false, true);
        let mut shown = Vec::with_capacity(values.len());
        for v in values {
            let (holds, seen) = test.on((&v).into(), index, Some(&mut *lookups));
            any |= holds;
            all &= holds;
            shown.push((v, seen));
        }
        let holds = match quant {
            Quant::Any => any,
            Quant::All => all,
        };
        Outcome::Values(holds, shown)
    }

    /// A value atom's quantifier, test, provenance index and values for `call`; `None` for an
    /// atom of any other kind.
    fn value_atom<'a, 'c>(
        &self,
        atom: &'a Atom,
        call: &CallContext<'c>,
        info: &ToolInfo,
        states: &'a [MonitorState],
        lookups: Option<&mut Lookups>,
    ) -> Option<ValueAtom<'a, 'c>> {
        let Atom::Value {
            quant,
            value,
            test,
            index,
        } = atom
        else {
            return None;
        };
        let index = provenance_index(*index, states);
        Some(ValueAtom {
            quant: *quant,
            test,
            index,
            values: self.values(value, call, info, index, lookups),
        })
    }

    /// The truth and, where it has one, the monitor value behind an atom that is not a value
    /// atom (those have an [`Outcome::Values`]).
    fn plain(
        &self,
        atom: &Atom,
        call: &CallContext,
        info: &ToolInfo,
        states: &[MonitorState],
    ) -> (bool, Option<Value>) {
        let state = |m: &MonitorId| states.get(*m);
        let in_window = |t: i64, w: Option<i64>| w.is_none_or(|w| t > call.now.saturating_sub(w));
        match atom {
            Atom::Call(p) => (info.matches(*p), None),
            Atom::Count {
                pattern,
                monitor,
                op,
                n,
                window_ms,
            } => {
                if !info.matches(*pattern) {
                    return (false, None);
                }
                let count = state(monitor).map_or(0, |s| s.ring_count(call.now, *window_ms)) + 1;
                (op.holds_u64(count, *n), Some(Value::from(count)))
            }
            Atom::Distinct {
                pattern,
                monitor,
                attr,
                op,
                n,
                window_ms,
            } => {
                if !info.matches(*pattern) {
                    return (false, None);
                }
                let value = self
                    .catalog
                    .attribute(info.spec(), attr, call.args)
                    .map(|v| value_key(&v));
                let count = state(monitor).map_or(0, |s| {
                    s.distinct_count(call.now, *window_ms, value.as_deref())
                });
                (op.holds_u64(count, *n), Some(Value::from(count)))
            }
            Atom::Field {
                pattern,
                field,
                test,
            } => {
                if !info.matches(*pattern) {
                    return (false, None);
                }
                let value = match field {
                    CallField::Mode => info.spec().and_then(|s| s.mode.clone()).map(Value::String),
                    CallField::Attr(name) => self.catalog.attribute(info.spec(), name, call.args),
                };
                (test_value(test, value.as_ref()), value)
            }
            Atom::Contains {
                pattern,
                monitor,
                window_ms,
            } => {
                let earlier = state(monitor)
                    .and_then(MonitorState::last_time)
                    .is_some_and(|t| in_window(t, *window_ms));
                (info.matches(*pattern) || earlier, None)
            }
            Atom::Sequence {
                steps,
                monitor,
                window_ms,
            } => {
                let start = state(monitor).and_then(|s| {
                    s.sequence_start(|k| steps.get(k).is_some_and(|sym| info.matches(*sym)))
                });
                (start.is_some_and(|s| in_window(s, *window_ms)), None)
            }
            Atom::Taint {
                source,
                mode,
                monitor,
                window_ms,
            } => {
                let current = info
                    .spec()
                    .and_then(|s| s.data_source.as_ref())
                    .is_some_and(|d| taint_matches(source, mode, &d.name, &d.mode));
                let earlier = state(monitor)
                    .and_then(MonitorState::last_time)
                    .is_some_and(|t| in_window(t, *window_ms));
                (current || earlier, None)
            }
            Atom::ChainContains(p) => (call.who.involves(p), None),
            Atom::Context { field, test } => {
                let value = call
                    .who
                    .field(*field)
                    .unwrap_or_else(|| Value::from(call.tool));
                (test_value(test, Some(&value)), Some(value))
            }
            // Value atoms have an outcome of their own (see `outcome`).
            Atom::Value { .. } => (false, None),
        }
    }

    /// The values of a value expression for the call being decided. `lookups`, when given,
    /// keeps what the index says of each argument for the rest of the call.
    fn values<'c>(
        &self,
        value: &ValueExpr,
        call: &CallContext<'c>,
        info: &ToolInfo,
        index: Option<&ProvenanceIndex>,
        mut lookups: Option<&mut Lookups>,
    ) -> Vec<Cow<'c, Value>> {
        match value {
            ValueExpr::Arg(arg) => self.catalog.arg_values_in(info.spec(), arg, call.args),
            ValueExpr::Call(ValueFn::Tokens, inner) => {
                let mut out = Vec::new();
                for v in self.values(inner, call, info, index, lookups) {
                    match v.as_ref() {
                        Value::String(s) => {
                            provenance::each_value(s, |t| out.push(Cow::Owned(Value::from(t))));
                        }
                        other => out.extend(
                            provenance::normalize_value(other).map(|t| Cow::Owned(Value::from(t))),
                        ),
                    }
                }
                out
            }
            ValueExpr::Call(f, inner) => {
                let inner = self.values(inner, call, info, index, lookups.as_deref_mut());
                let mut out = Vec::with_capacity(inner.len());
                for v in &inner {
                    out.extend(apply(*f, v.into(), index, lookups.as_deref_mut()).map(Cow::Owned));
                }
                out
            }
        }
    }

    /// Records an admitted call in one scope's monitor states.
    pub fn admit(
        &self,
        target: Target,
        call: &CallContext,
        info: &ToolInfo,
        states: &mut [MonitorState],
    ) {
        for update in &info.updates[target.index()] {
            let value = update
                .attr
                .as_ref()
                .and_then(|a| self.catalog.attribute(info.spec(), a, call.args))
                .map(|v| value_key(&v));
            if let Some(state) = states.get_mut(update.monitor) {
                state.admit(
                    call.now,
                    |k| update.steps.get(k).copied().unwrap_or(false),
                    value.as_deref(),
                );
            }
        }
    }

    /// Records a data access reported by an observation in one scope's states.
    pub fn observe_access(
        &self,
        target: Target,
        source: &str,
        mode: &str,
        now: i64,
        states: &mut [MonitorState],
    ) {
        for (i, (spec, _)) in self.monitors[target.index()].iter().enumerate() {
            if let MonitorSpec::Taint { source: s, mode: m } = spec {
                if taint_matches(s, m, source, mode) {
                    if let Some(state) = states.get_mut(i) {
                        state.admit(now, |_| false, None);
                    }
                }
            }
        }
    }

    /// The monitor layout of a target, for tooling and memory accounting.
    pub fn monitor_specs(&self, target: Target) -> &[(MonitorSpec, usize)] {
        &self.monitors[target.index()]
    }
}

/// What the index knows of a value; without an index (no policy of the scope reads one), a
/// value has been seen nowhere. `lookups`, when given, keeps it for the rest of the call.
fn seen(v: Arg<'_>, index: Option<&ProvenanceIndex>, lookups: Option<&mut Lookups>) -> Seen {
    match lookups {
        Some(lookups) => lookups.seen(v, index),
        None => lookup(index, v.value()),
    }
}

fn lookup(index: Option<&ProvenanceIndex>, v: &Value) -> Seen {
    index.map(|ix| ix.lookup(v)).unwrap_or_default()
}

/// A value function applied to one value; `None` when it has no answer (the domain of a text
/// that is not an email), which makes every test on it fail.
fn apply(
    f: ValueFn,
    arg: Arg<'_>,
    index: Option<&ProvenanceIndex>,
    lookups: Option<&mut Lookups>,
) -> Option<Value> {
    let v = arg.value();
    let text = || match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    match f {
        ValueFn::Provenance => Some(Value::from(provenance::strongest(
            seen(arg, index, lookups).sources,
        ))),
        ValueFn::EmailDomain => provenance::email_domain(&text()?).map(Value::String),
        ValueFn::UrlHost => provenance::url_host(&text()?).map(Value::String),
        ValueFn::Length => Some(Value::from(match v {
            Value::String(s) => s.chars().count(),
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            Value::Null => 0,
            other => other.to_string().chars().count(),
        })),
        ValueFn::Lower => text().map(|t| Value::String(t.to_lowercase())),
        // Expanded in `values`: a value holds many tokens.
        ValueFn::Tokens => Some(v.clone()),
    }
}

/// Every scalar of a JSON value, depth first.
fn walk(v: &Value, f: &mut impl FnMut(&Value)) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, f)),
        Value::Object(map) => map.values().for_each(|i| walk(i, f)),
        Value::Null => {}
        scalar => f(scalar),
    }
}

/// Every scalar and every object key of a JSON value (keys of results are often data: a map
/// from hotel names to ratings).
fn walk_keys(v: &Value, f: &mut impl FnMut(&Value)) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk_keys(i, f)),
        Value::Object(map) => {
            for (k, i) in map {
                f(&Value::String(k.clone()));
                walk_keys(i, f);
            }
        }
        Value::Null => {}
        scalar => f(scalar),
    }
}

fn path_matches(pattern: &[&str], path: &[String]) -> bool {
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(path)
            .all(|(p, s)| *p == "*" || *p == s.as_str())
}

/// [`walk_keys`] with the trust of each scalar: the trust of the deepest output field whose
/// pointer matches its path (or a parent's), else `trust`.
fn walk_fields(
    v: &Value,
    path: &mut Vec<String>,
    trust: u8,
    patterns: &[(Vec<&str>, u8)],
    f: &mut impl FnMut(&Value, u8),
) {
    let here = patterns
        .iter()
        .find(|(p, _)| path_matches(p, path))
        .map_or(trust, |(_, t)| *t);
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                walk_fields(item, path, here, patterns, f);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                f(&Value::String(k.clone()), here);
                path.push(k.replace('~', "~0").replace('/', "~1"));
                walk_fields(item, path, here, patterns, f);
                path.pop();
            }
        }
        Value::Null => {}
        scalar => f(scalar, here),
    }
}

fn index_leaf(index: &mut ProvenanceIndex, v: &Value, trust: u8, bits: u64) {
    match v {
        Value::String(s) => index.index_text(s, trust, bits),
        other => index.index_scalar(other, trust, bits),
    }
}

/// A JSON value as the string key used for equality and distinct counting.
pub fn value_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn compare(value: &Value, lit: &Literal) -> Option<std::cmp::Ordering> {
    match (value, lit) {
        (Value::String(s), Literal::Str(l)) => Some(s.as_str().cmp(l.as_str())),
        (Value::Number(n), Literal::Num(l)) => n.as_f64()?.partial_cmp(l),
        (Value::String(s), Literal::Num(l)) => s.trim().parse::<f64>().ok()?.partial_cmp(l),
        (Value::Bool(b), Literal::Str(l)) => {
            Some(if *b { "true" } else { "false" }.cmp(l.as_str()))
        }
        _ => None,
    }
}

/// Applies a test to a value; a missing value fails every test.
///
/// A list (a JSON array, such as the recipients of a mail) passes a test when it has elements
/// and every one of them passes: `to MATCHES '*@acme.example'` holds only when all recipients are
/// ours, so an allow-list cannot be widened by adding one outside address, and `NOT (… MATCHES …)`
/// holds when any element is outside. `!=` and `NOT IN` are the negations of `==` and `IN`: they
/// hold when some element differs. An empty list fails every test, like a missing value.
pub fn test_value(test: &Test, value: Option<&Value>) -> bool {
    let Some(value) = value else { return false };
    let equal = |v: &Value, lit: &Literal| compare(v, lit) == Some(std::cmp::Ordering::Equal);
    match test {
        Test::Cmp(CmpOp::Ne, lit) => !is_empty_list(value) && !every(value, &|v| equal(v, lit)),
        Test::NotIn(list) => {
            !is_empty_list(value) && !every(value, &|v| list.iter().any(|l| equal(v, l)))
        }
        Test::Cmp(op, lit) => every(value, &|v| compare(v, lit).is_some_and(|o| op.holds(o))),
        Test::In(list) => every(value, &|v| list.iter().any(|l| equal(v, l))),
        Test::Matches(glob) => every(value, &|v| glob_match(glob, &value_key(v))),
        Test::StartsWith(prefix) => every(value, &|v| value_key(v).starts_with(prefix.as_str())),
        Test::InCidr(nets) => every(value, &|v| ip_class::within_any(&value_key(v), nets)),
        Test::Regex(p) => every(value, &|v| p.0.is_match(&value_key(v))),
    }
}

/// Whether a value, or every element of a list value (which must have some), passes.
fn every(value: &Value, pass: &dyn Fn(&Value) -> bool) -> bool {
    match value {
        Value::Array(items) => !items.is_empty() && items.iter().all(|v| every(v, pass)),
        other => pass(other),
    }
}

fn is_empty_list(value: &Value) -> bool {
    matches!(value, Value::Array(items) if items.is_empty())
}

/// The provenance index a value atom reads: its monitor's state, when it has one.
fn provenance_index(monitor: Option<usize>, states: &[MonitorState]) -> Option<&ProvenanceIndex> {
    monitor.and_then(|m| match states.get(m) {
        Some(MonitorState::Provenance(ix)) => Some(&**ix),
        _ => None,
    })
}
