//! Recursive-descent parser for policy files.
//!
//! Grammar (informal; `docs/policy-language.md` has the full reference):
//!
//! ```text
//! file      := policy*
//! policy    := "POLICY" [name] ":" clause+
//! clause    := "ACTION" ":" ("DENY" | "REQUIRE_HITL" | "ALLOW")
//!            | "TARGET" ":" ("agent_identity" | "session" | "user" | "delegation_root")
//!            | "IF" [":"] expr
//!            | "REASON" ":" string | "APPROVERS" ":" (name | string)
//!            | "MODE" ":" ("enforce" | "shadow") | "DEADLINE" ":" duration
//! expr      := and ("OR" and)*
//! and       := unary ("AND" unary)*
//! unary     := "NOT" unary | "(" expr ")" | predicate
//! ```

use crate::ast::*;
use crate::diagnostic::{closest, Diagnostic};
use crate::duration::{unit_hint, unit_ms};
use crate::lexer::{lex, Tok, Token};
use crate::source::{Source, Span};
use ipnet::IpNet;
use std::sync::Arc;

/// The result of parsing one source: every policy that parsed, and every problem found.
#[derive(Debug, Default)]
pub struct Parsed {
    pub policies: Vec<Policy>,
    pub diagnostics: Vec<Diagnostic>,
}

const CLAUSES: [&str; 7] = [
    "ACTION",
    "TARGET",
    "IF",
    "REASON",
    "APPROVERS",
    "MODE",
    "DEADLINE",
];
const PREDICATES: [&str; 20] = [
    "Tool_Call",
    "Trajectory_Contains",
    "Sequence",
    "DataSource",
    "Chain_Contains",
    "Agent",
    "User",
    "Session",
    "Root",
    "Tool",
    "Depth",
    "Arg",
    "Provenance",
    "Email_Domain",
    "Url_Host",
    "Length",
    "Lower",
    "Tokens",
    "ANY",
    "ALL",
];
const TEST_OPERATORS: &str =
    "`==`, `!=`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`, `MATCHES`, `STARTS_WITH`, `IN_CIDR` or `REGEX`";
const VALUE_TEST_OPERATORS: &str =
    "`FROM`, `IN Results(...)`, `==`, `!=`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`, `MATCHES`, `STARTS_WITH`, `IN_CIDR` or `REGEX`";

type PResult<T> = Result<T, Diagnostic>;

/// Parses every policy in `source`. Policies without a name get `<file stem>#<n>`.
pub fn parse(source: &Source) -> Parsed {
    let (tokens, lex_errors) = lex(&source.text);
    let stem = std::path::Path::new(&*source.name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("policy")
        .to_string();
    let mut parser = Parser {
        tokens,
        pos: 0,
        source,
        stem,
        count: 0,
    };
    let mut parsed = parser.file();
    // A parse error at a token the lexer already rejected says nothing new.
    parsed
        .diagnostics
        .retain(|d| !lex_errors.iter().any(|l| l.span.start == d.span.start));
    parsed.diagnostics.extend(lex_errors);
    parsed.diagnostics.sort_by_key(|d| d.span.start);
    parsed
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    source: &'a Source,
    stem: String,
    count: usize,
}

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        // The lexer always ends with Eof, so `last` is valid.
        &self.tokens[(self.pos + n).min(last)]
    }

    fn bump(&mut self) -> Token {
        let tok = self.peek().clone();
        if tok.tok != Tok::Eof {
            self.pos += 1;
        }
        tok
    }

    fn prev_end(&self) -> usize {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(0, |t| t.span.end)
    }

    fn at_kw(&self, kw: &str) -> bool {
        is_kw(&self.peek().tok, kw)
    }

    fn unexpected(&self, expected: &str) -> Diagnostic {
        let tok = self.peek();
        let d = Diagnostic::error(tok.span, format!("unexpected {}", tok.tok.describe()))
            .expected(expected);
        // `'ScanTool) AND Trajectory_Contains('x')`: a missing quote swallows code into a string.
        let previous = self.pos.checked_sub(1).and_then(|i| self.tokens.get(i));
        match previous.map(|t| &t.tok) {
            Some(Tok::Str(s)) if s.contains(')') || s.contains('(') => {
                d.hint("the string before this contains a parenthesis: is a closing quote missing?")
            }
            _ => d,
        }
    }

    fn expect(&mut self, want: Tok, expected: &str) -> PResult<Token> {
        if self.peek().tok == want {
            Ok(self.bump())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn expect_string(&mut self, what: &str) -> PResult<(String, Span)> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                let span = self.bump().span;
                Ok((s, span))
            }
            Tok::Ident(s) => Err(self.unexpected(what).hint(format!("quote it: '{s}'"))),
            _ => Err(self.unexpected(what)),
        }
    }

    fn file(&mut self) -> Parsed {
        let mut out = Parsed::default();
        loop {
            if self.peek().tok == Tok::Eof {
                break;
            }
            if !self.at_kw("POLICY") {
                let mut d = self.unexpected("`POLICY`");
                if let Tok::Ident(word) = &self.peek().tok {
                    if closest(word, ["POLICY"]).is_some() {
                        d = d.hint("did you mean `POLICY`?");
                    }
                }
                out.diagnostics.push(d);
                self.recover(self.pos);
                continue;
            }
            let start = self.pos;
            match self.policy() {
                Ok(p) => out.policies.push(p),
                Err(d) => {
                    out.diagnostics.push(d);
                    self.recover(start);
                }
            }
        }
        out
    }

    /// After an error in the policy starting at token `start`, skips to the next `POLICY`.
    fn recover(&mut self, start: usize) {
        self.pos = self
            .pos
            .max(start + 1)
            .min(self.tokens.len().saturating_sub(1));
        while self.peek().tok != Tok::Eof && !self.at_kw("POLICY") {
            self.bump();
        }
    }

    fn policy(&mut self) -> PResult<Policy> {
        let start = self.bump().span;
        self.count += 1;
        let id = match self.peek().tok.clone() {
            Tok::Ident(name) if !CLAUSES.iter().any(|c| c.eq_ignore_ascii_case(&name)) => {
                self.bump();
                Some(name)
            }
            Tok::Str(name) => {
                self.bump();
                Some(name)
            }
            _ => None,
        };
        self.expect(Tok::Colon, "`:` after `POLICY`")?;

        let mut action: Option<Action> = None;
        let mut target: Option<Target> = None;
        let mut condition: Option<Expr> = None;
        let mut reason = None;
        let mut approvers = None;
        let mut mode = None;
        let mut deadline = None;
        loop {
            let tok = self.peek().clone();
            let word = match &tok.tok {
                Tok::Eof => break,
                Tok::Ident(w) if w.eq_ignore_ascii_case("POLICY") => break,
                Tok::Ident(w) => w.to_ascii_uppercase(),
                _ => {
                    return Err(self.unexpected(
                        "a clause (ACTION, TARGET, IF, REASON, APPROVERS, MODE, DEADLINE) or the next POLICY",
                    ))
                }
            };
            let duplicate = |present: bool| -> PResult<()> {
                if present {
                    Err(Diagnostic::error(
                        tok.span,
                        format!("`{word}` given twice in one policy"),
                    ))
                } else {
                    Ok(())
                }
            };
            match word.as_str() {
                "ACTION" => {
                    duplicate(action.is_some())?;
                    self.bump();
                    self.expect(Tok::Colon, "`:` after ACTION")?;
                    action = Some(self.one_of(
                        &[
                            ("DENY", Action::Deny),
                            ("REQUIRE_HITL", Action::RequireHitl),
                            ("ALLOW", Action::Allow),
                        ],
                        "an action: DENY, REQUIRE_HITL or ALLOW",
                    )?);
                }
                "TARGET" => {
                    duplicate(target.is_some())?;
                    self.bump();
                    self.expect(Tok::Colon, "`:` after TARGET")?;
                    target = Some(self.one_of(
                        &[
                            ("agent_identity", Target::AgentIdentity),
                            ("session", Target::Session),
                            ("user", Target::User),
                            ("delegation_root", Target::DelegationRoot),
                        ],
                        "a target scope: agent_identity, session, user or delegation_root",
                    )?);
                }
                "IF" => {
                    duplicate(condition.is_some())?;
                    self.bump();
                    if self.peek().tok == Tok::Colon {
                        self.bump();
                    }
                    condition = Some(self.expr()?);
                }
                "REASON" => {
                    duplicate(reason.is_some())?;
                    self.bump();
                    self.expect(Tok::Colon, "`:` after REASON")?;
                    reason = Some(self.expect_string("the reason as a quoted string")?.0);
                }
                "APPROVERS" => {
                    duplicate(approvers.is_some())?;
                    self.bump();
                    self.expect(Tok::Colon, "`:` after APPROVERS")?;
                    approvers = Some(match self.peek().tok.clone() {
                        Tok::Ident(s) | Tok::Str(s) => {
                            self.bump();
                            s
                        }
                        _ => return Err(self.unexpected("an approver group name")),
                    });
                }
                "MODE" => {
                    duplicate(mode.is_some())?;
                    self.bump();
                    self.expect(Tok::Colon, "`:` after MODE")?;
                    mode = Some(self.one_of(
                        &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)],
                        "a mode: enforce or shadow",
                    )?);
                }
                "DEADLINE" => {
                    duplicate(deadline.is_some())?;
                    self.bump();
                    self.expect(Tok::Colon, "`:` after DEADLINE")?;
                    deadline = Some(self.duration()?);
                }
                _ => {
                    let words = CLAUSES.iter().copied().chain(["AND", "OR", "NOT"]);
                    let hint = closest(&word, words).map(|c| format!("did you mean `{c}`?"));
                    return Err(Diagnostic::error(tok.span, format!("unknown clause `{word}`"))
                        .expected("ACTION, TARGET, IF, REASON, APPROVERS, MODE, DEADLINE or the next POLICY")
                        .with_hint(hint));
                }
            }
        }
        let end = self.prev_end();
        let span = Span::new(start.start, end);
        let action = action.ok_or_else(|| {
            Diagnostic::error(start, "policy has no ACTION")
                .expected("`ACTION: DENY`, `ACTION: REQUIRE_HITL` or `ACTION: ALLOW`")
        })?;
        let condition = condition.ok_or_else(|| {
            Diagnostic::error(start, "policy has no IF condition").expected("`IF <condition>`")
        })?;
        Ok(Policy {
            id: id.unwrap_or_else(|| format!("{}#{}", self.stem, self.count)),
            action,
            target: target.unwrap_or(Target::AgentIdentity),
            condition,
            reason,
            approvers,
            mode: mode.unwrap_or(Mode::Enforce),
            deadline_ms: deadline,
            source: Arc::clone(&self.source.name),
            span,
            text: self.source.slice(span).to_string(),
        })
    }

    fn one_of<T: Copy>(&mut self, options: &[(&str, T)], expected: &str) -> PResult<T> {
        if let Tok::Ident(word) = &self.peek().tok {
            if let Some((_, v)) = options
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(word))
            {
                self.bump();
                return Ok(*v);
            }
            let lower = word.to_ascii_lowercase();
            let hint = closest(word, options.iter().map(|(n, _)| *n)).or_else(|| {
                options
                    .iter()
                    .map(|(n, _)| *n)
                    .find(|n| n.to_ascii_lowercase().starts_with(&lower) && lower.len() >= 3)
            });
            return Err(self
                .unexpected(expected)
                .with_hint(hint.map(|h| format!("did you mean `{h}`?"))));
        }
        Err(self.unexpected(expected))
    }

    fn expr(&mut self) -> PResult<Expr> {
        let mut items = vec![self.and_expr()?];
        while self.at_kw("OR") {
            self.bump();
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Or(Vec::new()))
        } else {
            Expr::Or(items)
        })
    }

    fn and_expr(&mut self) -> PResult<Expr> {
        let mut items = vec![self.unary()?];
        while self.at_kw("AND") {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::And(Vec::new()))
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> PResult<Expr> {
        if self.at_kw("NOT") {
            self.bump();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek().tok == Tok::LParen {
            let open = self.bump().span;
            let inner = self.expr()?;
            let at_end = self.peek().tok == Tok::Eof
                || self.at_kw("POLICY")
                || CLAUSES
                    .iter()
                    .any(|c| self.at_kw(c) && self.peek_at(1).tok == Tok::Colon);
            if at_end {
                return Err(Diagnostic::error(open, "unclosed `(`").expected("a matching `)`"));
            }
            if self.peek().tok != Tok::RParen {
                let mut d = self.unexpected("`)`, `AND` or `OR`");
                if let Tok::Ident(w) = &self.peek().tok {
                    if let Some(h) = closest(w, ["AND", "OR"]) {
                        d = d.hint(format!("did you mean `{h}`?"));
                    }
                }
                return Err(d);
            }
            self.bump();
            return Ok(inner);
        }
        self.predicate()
    }

    fn paren_string(&mut self, what: &str) -> PResult<(String, Span)> {
        self.expect(Tok::LParen, "`(`")?;
        let s = self.expect_string(what)?;
        self.expect(Tok::RParen, "`)`")?;
        Ok(s)
    }

    fn predicate(&mut self) -> PResult<Expr> {
        let tok = self.peek().clone();
        let name = match &tok.tok {
            Tok::Ident(name) => name.clone(),
            _ => return Err(self.unexpected(
                "a predicate such as Tool_Call('X'), Trajectory_Contains('X') or DataSource('D')",
            )),
        };
        let canonical = PREDICATES.iter().find(|p| p.eq_ignore_ascii_case(&name));
        let Some(canonical) = canonical else {
            let hint = closest(&name, PREDICATES).map(|p| format!("did you mean `{p}`?"));
            return Err(
                Diagnostic::error(tok.span, format!("unknown predicate `{name}`"))
                    .expected(format!("one of {}", PREDICATES.join(", ")))
                    .with_hint(hint),
            );
        };
        let pred = match *canonical {
            "ANY" | "ALL" | "Arg" | "Provenance" | "Email_Domain" | "Url_Host" | "Length"
            | "Lower" | "Tokens" => self.value_pred()?,
            _ => {
                self.bump();
                self.predicate_after(canonical, &tok)?
            }
        };
        Ok(Expr::Pred(pred, Span::new(tok.span.start, self.prev_end())))
    }

    fn predicate_after(&mut self, canonical: &str, tok: &Token) -> PResult<Pred> {
        let pred = match canonical {
            "Tool_Call" => self.tool_call()?,
            "Trajectory_Contains" => {
                let (pattern, _) = self.paren_string("a tool or class name in quotes")?;
                Pred::Contains {
                    pattern,
                    window_ms: self.within()?,
                }
            }
            "Sequence" => {
                self.expect(Tok::LParen, "`(`")?;
                let mut steps = vec![self.expect_string("a tool or class name in quotes")?.0];
                while self.peek().tok == Tok::Comma {
                    self.bump();
                    steps.push(self.expect_string("a tool or class name in quotes")?.0);
                }
                self.expect(Tok::RParen, "`,` or `)`")?;
                if steps.len() < 2 {
                    return Err(Diagnostic::error(
                        Span::new(tok.span.start, self.prev_end()),
                        "a Sequence needs at least two steps",
                    )
                    .hint("for a single tool use Trajectory_Contains('X')"));
                }
                Pred::Sequence {
                    steps,
                    window_ms: self.within()?,
                }
            }
            "DataSource" => {
                let (source, _) = self.paren_string("a data source name in quotes")?;
                let mode = if self.peek().tok == Tok::Eq {
                    self.bump();
                    Some(
                        self.expect_string("an access mode in quotes, e.g. 'read'")?
                            .0,
                    )
                } else {
                    None
                };
                Pred::DataSource {
                    source,
                    mode,
                    window_ms: self.within()?,
                }
            }
            "Chain_Contains" => Pred::ChainContains {
                principal: self
                    .paren_string("a principal in quotes, e.g. 'user:bob'")?
                    .0,
            },
            other => {
                let field = match other {
                    "Agent" => ContextField::Agent,
                    "User" => ContextField::User,
                    "Session" => ContextField::Session,
                    "Root" => ContextField::Root,
                    "Tool" => ContextField::Tool,
                    _ => ContextField::Depth,
                };
                Pred::Context {
                    field,
                    test: self.test()?,
                }
            }
        };
        Ok(pred)
    }

    /// `[ANY | ALL] <value> <value test>`.
    fn value_pred(&mut self) -> PResult<Pred> {
        let quant = if self.at_kw("ALL") {
            self.bump();
            Quant::All
        } else if self.at_kw("ANY") {
            self.bump();
            Quant::Any
        } else {
            Quant::Any
        };
        let value = self.value_expr()?;
        let test = self.value_test()?;
        Ok(Pred::Value { quant, value, test })
    }

    /// `Arg('/pointer')`, `Arg('Attribute')` or a function of one: `Url_Host(Arg('/url'))`.
    fn value_expr(&mut self) -> PResult<ValueExpr> {
        let tok = self.peek().clone();
        let Tok::Ident(name) = &tok.tok else {
            return Err(self.unexpected(
                "`Arg('/pointer')` or a function of it such as `Provenance(Arg('/to'))`",
            ));
        };
        if name.eq_ignore_ascii_case("Arg") {
            self.bump();
            let (arg, span) = self.paren_string(
                "a JSON pointer ('/to', '/recipients/*') or an attribute name in quotes",
            )?;
            if arg.is_empty() {
                return Err(Diagnostic::error(span, "an empty argument name")
                    .expected("a JSON pointer such as '/to' or an attribute name"));
            }
            return Ok(ValueExpr::Arg(arg));
        }
        let Some(f) = ValueFn::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(name))
        else {
            let names = std::iter::once("Arg").chain(ValueFn::ALL.iter().map(|f| f.as_str()));
            let hint = closest(name, names).map(|p| format!("did you mean `{p}`?"));
            return Err(Diagnostic::error(tok.span, format!("unknown value `{name}`"))
                .expected("`Arg('/pointer')`, `Provenance(...)`, `Email_Domain(...)`, `Url_Host(...)`, `Length(...)`, `Lower(...)` or `Tokens(...)`")
                .with_hint(hint));
        };
        self.bump();
        self.expect(Tok::LParen, "`(`")?;
        let inner = self.value_expr()?;
        self.expect(Tok::RParen, "`)`")?;
        Ok(ValueExpr::Call(f, Box::new(inner)))
    }

    fn source_name(&mut self) -> PResult<String> {
        let (name, span) =
            self.expect_string("a source in quotes: 'user', 'trusted', 'untrusted' or 'none'")?;
        if crate::provenance::source_bit(&name).is_none() {
            let hint = closest(&name, ["user", "trusted", "untrusted", "none"])
                .map(|h| format!("did you mean '{h}'?"));
            return Err(Diagnostic::error(span, format!("unknown source '{name}'"))
                .expected("'user', 'trusted', 'untrusted' or 'none'")
                .with_hint(hint));
        }
        Ok(name)
    }

    fn value_test(&mut self) -> PResult<ValueTest> {
        if self.at_kw("FROM") {
            self.bump();
            let mut sources = Vec::new();
            if self.peek().tok == Tok::LBracket {
                self.bump();
                sources.push(self.source_name()?);
                while self.peek().tok == Tok::Comma {
                    self.bump();
                    sources.push(self.source_name()?);
                }
                self.expect(Tok::RBracket, "`,` or `]`")?;
            } else {
                sources.push(self.source_name()?);
            }
            return Ok(ValueTest::From(sources));
        }
        if self.at_kw("IN") && is_kw(&self.peek_at(1).tok, "Results") {
            self.bump();
            let results = self.bump();
            self.expect(Tok::LParen, "`(`")?;
            let mut names = vec![self.expect_string("a tool or class name in quotes")?.0];
            while self.peek().tok == Tok::Comma {
                self.bump();
                names.push(self.expect_string("a tool or class name in quotes")?.0);
            }
            self.expect(Tok::RParen, "`,` or `)`")?;
            if names.is_empty() {
                return Err(Diagnostic::error(results.span, "Results() names no tool"));
            }
            return Ok(ValueTest::InResults(names));
        }
        if !self.at_test() {
            let mut d = self.unexpected(VALUE_TEST_OPERATORS);
            if let Tok::Ident(w) = &self.peek().tok {
                if let Some(h) = closest(
                    w,
                    ["FROM", "IN", "MATCHES", "STARTS_WITH", "IN_CIDR", "REGEX"],
                ) {
                    d = d.hint(format!("did you mean `{h}`?"));
                }
            }
            return Err(d);
        }
        Ok(ValueTest::Test(self.test()?))
    }

    fn tool_call(&mut self) -> PResult<Pred> {
        let (pattern, _) = self.paren_string("a tool or class name in quotes")?;
        if self.peek().tok == Tok::Dot {
            self.bump();
            let member = self.bump();
            let Tok::Ident(name) = member.tok else {
                return Err(Diagnostic::error(
                    member.span,
                    format!("unexpected {}", member.tok.describe()),
                )
                .expected("`Count`, `Distinct('attr')` or an attribute name"));
            };
            if name.eq_ignore_ascii_case("Count") {
                let (op, n, window_ms) = self.count_test(member.span)?;
                return Ok(Pred::Count {
                    pattern,
                    op,
                    n,
                    window_ms,
                });
            }
            if name.eq_ignore_ascii_case("Distinct") {
                let (attr, _) = self.paren_string("an attribute name in quotes")?;
                if self.peek().tok == Tok::Dot && is_kw(&self.peek_at(1).tok, "Count") {
                    self.bump();
                    self.bump();
                }
                let (op, n, window_ms) = self.count_test(member.span)?;
                return Ok(Pred::Distinct {
                    pattern,
                    attr,
                    op,
                    n,
                    window_ms,
                });
            }
            return Ok(Pred::Field {
                pattern,
                field: CallField::Attr(name),
                test: self.test()?,
            });
        }
        if self.at_test() {
            return Ok(Pred::Field {
                pattern,
                field: CallField::Mode,
                test: self.test()?,
            });
        }
        Ok(Pred::Call { pattern })
    }

    fn at_test(&self) -> bool {
        matches!(
            self.peek().tok,
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
        ) || self.at_kw("IN")
            || self.at_kw("MATCHES")
            || self.at_kw("STARTS_WITH")
            || self.at_kw("IN_CIDR")
            || self.at_kw("REGEX")
            || (self.at_kw("NOT") && is_kw(&self.peek_at(1).tok, "IN"))
    }

    fn cmp_op(&mut self) -> Option<CmpOp> {
        let op = match self.peek().tok {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            _ => return None,
        };
        self.bump();
        Some(op)
    }

    /// `> 100 requests/5min`: an operator, a whole number, an optional noun and a window.
    fn count_test(&mut self, member: Span) -> PResult<(CmpOp, u64, i64)> {
        let Some(op) = self.cmp_op() else {
            return Err(
                self.unexpected("a comparison (`>`, `>=`, `<`, `<=`, `==`, `!=`) after Count")
            );
        };
        let n = self.whole_number("a whole number")?;
        if matches!(self.peek().tok, Tok::Ident(_)) && self.peek_at(1).tok == Tok::Slash {
            self.bump();
        }
        if self.peek().tok != Tok::Slash {
            return Err(Diagnostic::error(
                Span::new(member.start, self.prev_end()),
                "a Count needs a window",
            )
            .expected("`/<duration>` after the number")
            .hint(format!("write e.g. `{} {n} requests/5min`", op.as_str())));
        }
        self.bump();
        let window = self.duration()?;
        Ok((op, n, window))
    }

    fn whole_number(&mut self, expected: &str) -> PResult<u64> {
        match self.peek().tok {
            Tok::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < 1e15 => {
                self.bump();
                Ok(n as u64)
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn within(&mut self) -> PResult<Option<i64>> {
        if self.at_kw("WITHIN") {
            self.bump();
            Ok(Some(self.duration()?))
        } else {
            Ok(None)
        }
    }

    /// `5min`, `30 s`, or a bare unit (`/min`) meaning one of it.
    fn duration(&mut self) -> PResult<i64> {
        let start = self.peek().span;
        let n = match self.peek().tok {
            Tok::Ident(_) => 1,
            _ => self.whole_number("a duration such as `5min`, `30s` or `1h`")?,
        };
        let unit_tok = self.peek().clone();
        let Tok::Ident(unit) = &unit_tok.tok else {
            return Err(self
                .unexpected("a time unit: ms, s, min, h or d")
                .hint(format!("write e.g. `{n}min`")));
        };
        let Some(ms) = unit_ms(unit) else {
            return Err(
                Diagnostic::error(unit_tok.span, format!("unknown time unit `{unit}`"))
                    .expected("one of ms, s, min, h, d")
                    .with_hint(unit_hint(unit).map(|h| format!("did you mean `{h}`? (`{n}{h}`)"))),
            );
        };
        self.bump();
        let total = (n as i64).checked_mul(ms).filter(|v| *v > 0);
        total.ok_or_else(|| {
            Diagnostic::error(
                Span::new(start.start, self.prev_end()),
                "duration must be positive and not absurdly long",
            )
        })
    }

    fn literal(&mut self) -> PResult<Literal> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                self.bump();
                Ok(Literal::Str(s))
            }
            Tok::Number(n) => {
                self.bump();
                Ok(Literal::Num(n))
            }
            Tok::Ident(s) => Err(self
                .unexpected("a quoted string or a number")
                .hint(format!("quote it: '{s}'"))),
            _ => Err(self.unexpected("a quoted string or a number")),
        }
    }

    fn literal_list(&mut self) -> PResult<Vec<Literal>> {
        self.expect(Tok::LBracket, "`[` starting a list")?;
        let mut items = Vec::new();
        if self.peek().tok != Tok::RBracket {
            items.push(self.literal()?);
            while self.peek().tok == Tok::Comma {
                self.bump();
                items.push(self.literal()?);
            }
        }
        self.expect(Tok::RBracket, "`,` or `]`")?;
        Ok(items)
    }

    fn test(&mut self) -> PResult<Test> {
        if let Some(op) = self.cmp_op() {
            return Ok(Test::Cmp(op, self.literal()?));
        }
        if self.at_kw("NOT") && is_kw(&self.peek_at(1).tok, "IN") {
            self.bump();
            self.bump();
            return Ok(Test::NotIn(self.literal_list()?));
        }
        if self.at_kw("IN") {
            self.bump();
            return Ok(Test::In(self.literal_list()?));
        }
        if self.at_kw("MATCHES") {
            self.bump();
            return Ok(Test::Matches(
                self.expect_string("a glob pattern in quotes")?.0,
            ));
        }
        if self.at_kw("STARTS_WITH") {
            self.bump();
            return Ok(Test::StartsWith(
                self.expect_string("a prefix in quotes")?.0,
            ));
        }
        if self.at_kw("REGEX") {
            self.bump();
            let (text, span) = self.expect_string("a regular expression in quotes")?;
            let re = regex::RegexBuilder::new(&text)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    let msg = e.to_string();
                    let last = msg
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_string();
                    Diagnostic::error(
                        span,
                        format!("`{text}` is not a valid regular expression: {last}"),
                    )
                    .expected(
                        "a pattern in the `regex` crate's syntax, e.g. '^[a-z]+@acme\\.example$'",
                    )
                })?;
            return Ok(Test::Regex(Pattern(re)));
        }
        if self.at_kw("IN_CIDR") {
            self.bump();
            let mut raw = Vec::new();
            if self.peek().tok == Tok::LBracket {
                self.bump();
                raw.push(self.expect_string("a CIDR in quotes")?);
                while self.peek().tok == Tok::Comma {
                    self.bump();
                    raw.push(self.expect_string("a CIDR in quotes")?);
                }
                self.expect(Tok::RBracket, "`,` or `]`")?;
            } else {
                raw.push(self.expect_string("a CIDR in quotes, e.g. '10.0.0.0/8'")?);
            }
            let nets = raw
                .into_iter()
                .map(|(text, span)| {
                    parse_net(&text).ok_or_else(|| {
                        Diagnostic::error(span, format!("`{text}` is not an IP network"))
                            .expected("an address or CIDR such as '10.0.0.0/8' or 'fd00::/8'")
                    })
                })
                .collect::<PResult<Vec<_>>>()?;
            return Ok(Test::InCidr(nets));
        }
        let mut d = self.unexpected(TEST_OPERATORS);
        if let Tok::Ident(w) = &self.peek().tok {
            if let Some(h) = closest(w, ["IN", "MATCHES", "STARTS_WITH", "IN_CIDR", "REGEX"]) {
                d = d.hint(format!("did you mean `{h}`?"));
            }
        }
        Err(d)
    }
}

/// An address (as a host network) or a CIDR.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}
