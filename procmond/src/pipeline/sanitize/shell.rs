//! A small shell tokenizer for argv elements that hold a command line
//! (`sh -c "…"`, `ssh host "…"`, `-e "ssh -p 22"`).
//!
//! It only needs to find words (quotes kept, so that ranges map back onto the
//! argument), command boundaries (`;` `&&` `||` `|` `&` newline, `(` `)`,
//! backquotes) and redirection targets, which are not arguments. It never
//! fails: an unterminated quote runs to the end. Also the small word
//! classifiers the command reader uses (flag, assignment, `-c`).

/// One token of a snippet; ranges are byte offsets into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// A word, quotes included. `redirect`: a redirection target or fd number.
    Word {
        start: usize,
        end: usize,
        redirect: bool,
    },
    /// A command boundary; `pipe`: a `|` (or `|&`), stdout goes to the next command.
    Sep { pipe: bool },
}

/// Iterator over the tokens of a snippet.
#[derive(Debug)]
pub struct Tokens<'a> {
    b: &'a [u8],
    i: usize,
    redirect_next: bool,
}

impl<'a> Tokens<'a> {
    pub fn new(s: &'a str) -> Self {
        Self {
            b: s.as_bytes(),
            i: 0,
            redirect_next: false,
        }
    }

    fn eat(&mut self, set: &[u8]) {
        while self.i < self.b.len() && set.contains(&self.b[self.i]) {
            self.i += 1;
        }
    }
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

fn ends_word(c: u8) -> bool {
    is_blank(c)
        || matches!(
            c,
            b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'`' | b'<' | b'>'
        )
}

impl Iterator for Tokens<'_> {
    type Item = Tok;

    fn next(&mut self) -> Option<Tok> {
        let b = self.b;
        loop {
            while self.i < b.len() && is_blank(b[self.i]) {
                self.i += 1;
            }
            let c = *b.get(self.i)?;
            match c {
                b'&' if b.get(self.i + 1) == Some(&b'>') => {
                    self.i += 2;
                    self.eat(b">");
                    self.redirect_next = true;
                }
                b'\n' | b';' | b'|' | b'(' | b')' | b'`' | b'&' => {
                    let pipe = c == b'|' && b.get(self.i + 1) != Some(&b'|');
                    self.i += 1;
                    self.eat(b";|&");
                    self.redirect_next = false;
                    return Some(Tok::Sep { pipe });
                }
                b'<' | b'>' => {
                    self.i += 1;
                    self.eat(b"<>&|-");
                    self.redirect_next = true;
                }
                b'#' => {
                    while self.i < b.len() && b[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
        let start = self.i;
        while self.i < b.len() && !ends_word(b[self.i]) {
            match b[self.i] {
                b'\\' => self.i += 2,
                b'\'' => {
                    self.i += 1;
                    while self.i < b.len() && b[self.i] != b'\'' {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                b'"' => {
                    self.i += 1;
                    while self.i < b.len() && b[self.i] != b'"' {
                        if b[self.i] == b'\\' {
                            self.i += 1;
                        }
                        self.i += 1;
                    }
                    self.i += 1;
                }
                _ => self.i += 1,
            }
        }
        self.i = self.i.min(b.len());
        let end = self.i;
        let fd = end < b.len()
            && matches!(b[end], b'<' | b'>')
            && b[start..end].iter().all(u8::is_ascii_digit);
        let redirect = std::mem::take(&mut self.redirect_next) || fd;
        Some(Tok::Word {
            start,
            end,
            redirect,
        })
    }
}

/// The inside of a word that is one quoted string (`'a b'`, `"a b"`).
pub fn unquote(t: &str) -> Option<(usize, usize)> {
    let b = t.as_bytes();
    let q = *b.first()?;
    if b.len() < 2 || !(q == b'\'' || q == b'"') || b[b.len() - 1] != q {
        return None;
    }
    let mut i = 1;
    while i < b.len() - 1 {
        if b[i] == b'\\' && q == b'"' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return None;
        }
        i += 1;
    }
    (i == b.len() - 1).then_some((1, b.len() - 1))
}

/// A flag: starts with `-` and is not a negative number.
pub fn is_flag(t: &str) -> bool {
    let Some(rest) = t.strip_prefix('-') else {
        return false;
    };
    let number = !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && rest.as_bytes()[0].is_ascii_digit();
    !number
}

/// A word that starts with `-` but holds a byte no option name holds
/// (`-P@ss!`): a value, when a flag expects one.
pub fn dash_value(t: &str) -> bool {
    t.len() > 2
        && t.starts_with('-')
        && !t.starts_with("--")
        && t[1..].bytes().any(|b| {
            !(b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'=' | b',' | b':' | b'/' | b'+'))
        })
}

pub fn has_ws(t: &str) -> bool {
    t.bytes().any(|b| b.is_ascii_whitespace())
}

pub fn is_empty(t: &str) -> bool {
    t.bytes().all(|b| b.is_ascii_whitespace()) || t == "\"\"" || t == "''"
}

/// `NAME=value` as a shell variable assignment.
pub fn is_assignment(t: &str) -> bool {
    let b = t.as_bytes();
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    n > 0 && !b[0].is_ascii_digit() && b.get(n) == Some(&b'=')
}

/// `-c`, `-lc`, `-ec`, `--command`: the next word is a command line.
pub fn is_c_flag(t: &str) -> bool {
    t == "--command"
        || (t.len() <= 5
            && !t.starts_with("--")
            && t.ends_with('c')
            && t.len() > 1
            && t[1..].bytes().all(|b| b.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        Tokens::new(s)
            .map(|t| match t {
                Tok::Word {
                    start,
                    end,
                    redirect,
                } => format!("{}{}", if redirect { ">" } else { "" }, &s[start..end]),
                Tok::Sep { pipe: true } => "!".to_string(),
                Tok::Sep { pipe: false } => "|".to_string(),
            })
            .collect()
    }

    #[test]
    fn splits_words_commands_and_redirections() {
        assert_eq!(
            words("a 'b c' \"d \\\" e\"&&f;g|h 2>&1 >out <in"),
            [
                "a",
                "'b c'",
                "\"d \\\" e\"",
                "|",
                "f",
                "|",
                "g",
                "!",
                "h",
                ">2",
                ">1",
                ">out",
                ">in"
            ]
        );
        assert_eq!(
            words("x=$(mysql -pX) `y`"),
            ["x=$", "|", "mysql", "-pX", "|", "|", "y", "|"]
        );
        assert_eq!(
            words("a # c\nb &> f 'unterminated"),
            ["a", "|", "b", ">f", "'unterminated"]
        );
        assert_eq!(words("é\\"), ["é\\"]);
    }

    #[test]
    fn unquote_only_whole_quoted_words() {
        assert_eq!(unquote("'a b'"), Some((1, 4)));
        assert_eq!(unquote("\"a \\\" b\""), Some((1, 7)));
        assert_eq!(unquote("'a'b'"), None);
        assert_eq!(unquote("'"), None);
        assert_eq!(unquote("ab"), None);
    }
}
