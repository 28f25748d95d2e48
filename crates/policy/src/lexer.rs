//! Tokens of the policy language.
//!
//! Strings may be quoted with straight or typographic quotes (`'`, `‘`, `’`, `"`, `“`, `”`), so
//! policies pasted from a document parse exactly as printed.

use crate::diagnostic::Diagnostic;
use crate::source::Span;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Number(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Colon,
    Slash,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// A character or string the lexer rejected (already reported).
    Error,
    Eof,
}

impl Tok {
    /// How the token is named in "expected ..., found ..." messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Number(n) => format!("number {n}"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Dot => "`.`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Slash => "`/`".into(),
            Tok::Eq => "`==`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::Error => "invalid input".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

fn is_single_quote(c: char) -> bool {
    matches!(c, '\'' | '‘' | '’' | '‚' | '′')
}

fn is_double_quote(c: char) -> bool {
    matches!(c, '"' | '“' | '”' | '„' | '″')
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Splits a policy text into tokens. Lexical errors are reported and leave a [`Tok::Error`] in
/// the stream, so the parser can go on and report later problems too.
pub fn lex(text: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        let single = |tok: Tok, len: usize| Token {
            tok,
            span: Span::new(start, start + len),
        };
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' || (c == '/' && text.get(start..start + 2) == Some("//")) {
            while let Some(&(_, c)) = chars.peek() {
                if c == '\n' {
                    break;
                }
                chars.next();
            }
            continue;
        }
        if is_single_quote(c) || is_double_quote(c) {
            chars.next();
            let closes: fn(char) -> bool = if is_single_quote(c) {
                is_single_quote
            } else {
                is_double_quote
            };
            let mut value = String::new();
            let mut end = None;
            for (i, ch) in chars.by_ref() {
                if closes(ch) {
                    end = Some(i + ch.len_utf8());
                    break;
                }
                if ch == '\n' {
                    break;
                }
                value.push(ch);
            }
            match end {
                Some(end) => tokens.push(Token {
                    tok: Tok::Str(value),
                    span: Span::new(start, end),
                }),
                None => {
                    let span = Span::new(start, start + c.len_utf8());
                    errors.push(
                        Diagnostic::error(span, "unterminated string")
                            .expected("a closing quote on the same line"),
                    );
                    tokens.push(Token {
                        tok: Tok::Error,
                        span,
                    });
                }
            }
            continue;
        }
        if c.is_ascii_digit() {
            let mut end = start;
            let mut seen_dot = false;
            while let Some(&(i, ch)) = chars.peek() {
                let next_is_digit = text
                    .get(i + 1..)
                    .and_then(|s| s.chars().next())
                    .is_some_and(|n| n.is_ascii_digit());
                if ch.is_ascii_digit() || (ch == '.' && !seen_dot && next_is_digit) {
                    seen_dot |= ch == '.';
                    end = i + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            let literal = text.get(start..end).unwrap_or("");
            let span = Span::new(start, end);
            let tok = match literal.parse::<f64>() {
                Ok(value) => Tok::Number(value),
                Err(_) => {
                    errors.push(Diagnostic::error(span, format!("bad number `{literal}`")));
                    Tok::Error
                }
            };
            tokens.push(Token { tok, span });
            continue;
        }
        if is_ident_start(c) {
            let mut end = start;
            while let Some(&(i, ch)) = chars.peek() {
                if is_ident_continue(ch) {
                    end = i + ch.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(Token {
                tok: Tok::Ident(text.get(start..end).unwrap_or("").to_string()),
                span: Span::new(start, end),
            });
            continue;
        }
        chars.next();
        let next = chars.peek().map(|&(_, c)| c);
        let two = |tok: Tok| Token {
            tok,
            span: Span::new(start, start + 2),
        };
        let token = match (c, next) {
            ('(', _) => single(Tok::LParen, 1),
            (')', _) => single(Tok::RParen, 1),
            ('[', _) => single(Tok::LBracket, 1),
            (']', _) => single(Tok::RBracket, 1),
            (',', _) => single(Tok::Comma, 1),
            ('.', _) => single(Tok::Dot, 1),
            (':', _) => single(Tok::Colon, 1),
            ('/', _) => single(Tok::Slash, 1),
            ('=', Some('=')) | ('!', Some('=')) | ('<', Some('=')) | ('>', Some('=')) => {
                chars.next();
                two(match c {
                    '=' => Tok::Eq,
                    '!' => Tok::Ne,
                    '<' => Tok::Le,
                    _ => Tok::Ge,
                })
            }
            ('<', _) => single(Tok::Lt, 1),
            ('>', _) => single(Tok::Gt, 1),
            _ => {
                let doubled = matches!((c, next), ('&', Some('&')) | ('|', Some('|')));
                if doubled {
                    chars.next();
                }
                let span = Span::new(start, start + c.len_utf8() * if doubled { 2 } else { 1 });
                let hint = match (c, next) {
                    ('=', _) => Some("comparison is written `==`"),
                    ('&', _) => Some("conjunction is written `AND`"),
                    ('|', _) => Some("disjunction is written `OR`"),
                    ('!', _) => Some("negation is written `NOT`"),
                    _ => None,
                };
                errors.push(
                    Diagnostic::error(span, format!("unexpected character `{c}`"))
                        .expected("a predicate, an operator, a string or a number")
                        .with_hint(hint.map(String::from)),
                );
                Token {
                    tok: Tok::Error,
                    span,
                }
            }
        };
        tokens.push(token);
    }
    tokens.push(Token {
        tok: Tok::Eof,
        span: Span::new(text.len(), text.len()),
    });
    (tokens, errors)
}
