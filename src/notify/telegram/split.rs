//! HTML for parse mode: escaping, and splitting a long message on line boundaries into parts
//! of at most a limit of visible characters, closing and reopening the tags open across a cut.

/// Escapes text for HTML parse mode (`&`, `<`, `>`, `"`).
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone)]
pub(super) enum Tok {
    /// An opening tag: name and the raw tag text.
    Open(String, String),
    Close(String),
    /// Visible text (a character or an entity) and its UTF-16 length.
    Text(String, usize),
    Newline,
}

pub(super) fn tokenize(html: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        if rest.starts_with('<')
            && let Some(end) = rest.find('>')
        {
            let raw = &rest[..=end];
            let inner = &raw[1..raw.len() - 1];
            if let Some(name) = inner.strip_prefix('/') {
                out.push(Tok::Close(name.trim().to_ascii_lowercase()));
            } else {
                let name_end = inner
                    .find(|c: char| c.is_whitespace() || c == '/')
                    .unwrap_or(inner.len());
                out.push(Tok::Open(
                    inner[..name_end].to_ascii_lowercase(),
                    raw.to_string(),
                ));
            }
            i += end + 1;
            continue;
        }
        if rest.starts_with('&')
            && let Some(semi) = rest[1..].find(';')
            && semi > 0
            && semi <= 10
            && rest[1..=semi]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '#')
        {
            out.push(Tok::Text(rest[..semi + 2].to_string(), 1));
            i += semi + 2;
            continue;
        }
        let c = rest.chars().next().expect("in bounds");
        if c == '\n' {
            out.push(Tok::Newline);
        } else {
            out.push(Tok::Text(c.to_string(), c.len_utf16()));
        }
        i += c.len_utf8();
    }
    out
}

pub(super) struct Splitter {
    limit: usize,
    parts: Vec<String>,
    cur: String,
    cur_len: usize,
    has_content: bool,
    stack: Vec<(String, String)>,
}

impl Splitter {
    fn push(&mut self, t: &Tok) {
        match t {
            Tok::Open(name, raw) => {
                self.cur.push_str(raw);
                self.stack.push((name.clone(), raw.clone()));
                self.has_content = true;
            }
            Tok::Close(name) => {
                self.cur.push_str(&format!("</{name}>"));
                if let Some(pos) = self.stack.iter().rposition(|(n, _)| n == name) {
                    self.stack.remove(pos);
                }
            }
            Tok::Text(s, n) => {
                self.cur.push_str(s);
                self.cur_len += n;
                self.has_content = true;
            }
            Tok::Newline => {
                self.cur.push('\n');
                self.cur_len += 1;
            }
        }
    }

    fn flush(&mut self) {
        let mut part = std::mem::take(&mut self.cur);
        // Drop trailing newlines before closing the open tags.
        while part.ends_with('\n') {
            part.pop();
        }
        for (name, _) in self.stack.iter().rev() {
            part.push_str(&format!("</{name}>"));
        }
        let visible_any = tokenize(&part)
            .iter()
            .any(|t| matches!(t, Tok::Text(s, _) if !s.trim().is_empty()));
        if visible_any {
            self.parts.push(part);
        }
        self.cur = self.stack.iter().map(|(_, raw)| raw.as_str()).collect();
        self.cur_len = 0;
        self.has_content = false;
    }
}

/// Splits Telegram HTML into parts of at most `limit` visible characters (UTF-16 units), on line
/// boundaries where possible. A cut never falls inside a tag or an entity: the tags open at the
/// cut are closed at the end of one part and reopened at the start of the next, so every part is
/// valid HTML on its own. Lines longer than `limit` are cut between characters.
pub(crate) fn split_message(html: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(1);
    let toks = tokenize(html);
    let mut lines: Vec<Vec<Tok>> = vec![Vec::new()];
    for t in toks {
        if matches!(t, Tok::Newline) {
            lines.push(Vec::new());
        } else if let Some(l) = lines.last_mut() {
            l.push(t);
        }
    }
    let mut s = Splitter {
        limit,
        parts: Vec::new(),
        cur: String::new(),
        cur_len: 0,
        has_content: false,
        stack: Vec::new(),
    };
    for line in &lines {
        let line_len: usize = line
            .iter()
            .map(|t| if let Tok::Text(_, n) = t { *n } else { 0 })
            .sum();
        let sep = usize::from(s.has_content);
        if s.cur_len + sep + line_len <= s.limit {
            if sep == 1 {
                s.push(&Tok::Newline);
            }
            for t in line {
                s.push(t);
            }
            continue;
        }
        if s.cur_len > 0 {
            s.flush();
        } else if sep == 1 {
            s.push(&Tok::Newline);
        }
        for t in line {
            if let Tok::Text(_, n) = t
                && s.cur_len + n > s.limit
                && s.cur_len > 0
            {
                s.flush();
            }
            s.push(t);
        }
    }
    s.flush();
    s.parts
}
