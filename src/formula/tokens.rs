//! The formula's tokens: names (plain or quoted), numbers, operators.

use crate::bail;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Num(String),
    Tilde,
    Plus,
    Minus,
    Colon,
    Star,
    Slash,
    Bar,
    DoubleBar,
    LParen,
    RParen,
    Caret,
    Comma,
    Equals,
}

pub(super) fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'~' => out.push((Tok::Tilde, start)),
            b'+' => out.push((Tok::Plus, start)),
            b'-' => out.push((Tok::Minus, start)),
            b':' => out.push((Tok::Colon, start)),
            b'*' => out.push((Tok::Star, start)),
            b'/' => out.push((Tok::Slash, start)),
            b'^' => out.push((Tok::Caret, start)),
            b',' => out.push((Tok::Comma, start)),
            b'=' => out.push((Tok::Equals, start)),
            b'(' => out.push((Tok::LParen, start)),
            b')' => out.push((Tok::RParen, start)),
            b'|' => {
                if b.get(i + 1) == Some(&b'|') {
                    out.push((Tok::DoubleBar, start));
                    i += 1;
                } else {
                    out.push((Tok::Bar, start));
                }
            }
            b'`' | b'"' => {
                // Quoted column name: `my column`.
                let close = c;
                let mut j = i + 1;
                while j < b.len() && b[j] != close {
                    j += 1;
                }
                if j >= b.len() {
                    bail!("formula syntax error: unterminated quoted name at position {}\n  {}\n  {}^", start + 1, src, " ".repeat(start));
                }
                out.push((Tok::Ident(src[i + 1..j].to_string()), start));
                i = j;
            }
            // A number: digits with a point, and an exponent (`1e-3`, `.5`).
            _ if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
                    j += 1;
                }
                if j < b.len() && (b[j] == b'e' || b[j] == b'E') {
                    let mut k = j + 1;
                    if k < b.len() && (b[k] == b'+' || b[k] == b'-') {
                        k += 1;
                    }
                    if k < b.len() && b[k].is_ascii_digit() {
                        while k < b.len() && b[k].is_ascii_digit() {
                            k += 1;
                        }
                        j = k;
                    }
                }
                out.push((Tok::Num(src[i..j].to_string()), start));
                i = j;
                continue;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c == b'.' || c >= 0x80 => {
                let mut j = i;
                while j < b.len()
                    && (b[j].is_ascii_alphanumeric()
                        || b[j] == b'_'
                        || b[j] == b'.'
                        || b[j] >= 0x80)
                {
                    j += 1;
                }
                out.push((Tok::Ident(src[i..j].to_string()), start));
                i = j;
                continue;
            }
            _ => bail!(
                "formula syntax error: unexpected character '{}' at position {}\n  {}\n  {}^",
                c as char,
                start + 1,
                src,
                " ".repeat(start)
            ),
        }
        i += 1;
    }
    Ok(out)
}
