//! Splits a YAML stream into documents at `---` / `...` markers, keeping each document's first
//! line number, so that parse errors and findings can point at the right place in the file.

/// One document of a stream: its text and where it starts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Chunk<'a> {
    /// 0-based index among the stream's documents (empty documents included).
    pub index: usize,
    /// 1-based line of the chunk's first text line (what `line` offsets are relative to).
    pub first_line: u64,
    /// 1-based line of the first line with content (not blank, not a comment).
    pub content_line: u64,
    pub text: &'a str,
    /// Whether the chunk has content besides blanks, comments and directives.
    pub has_content: bool,
}

fn is_marker(line: &str, marker: &str) -> Option<usize> {
    let rest = line.strip_prefix(marker)?;
    if rest.is_empty() || rest.starts_with([' ', '\t', '\r']) {
        Some(marker.len())
    } else {
        None
    }
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !(t.is_empty() || t.starts_with('#'))
}

fn push<'t>(
    out: &mut Vec<Chunk<'t>>,
    text: &'t str,
    range: std::ops::Range<usize>,
    first_line: u64,
    content_line: Option<u64>,
) {
    let index = out.len();
    out.push(Chunk {
        index,
        first_line,
        content_line: content_line.unwrap_or(first_line),
        text: text.get(range).unwrap_or_default(),
        has_content: content_line.is_some(),
    });
}

/// Splits `text` into document chunks. Directives (`%YAML`) before a `---` are dropped.
pub(crate) fn split(text: &str) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut start = 0usize; // byte offset of the current chunk
    let mut first_line = 1u64;
    let mut content_line = None;
    let mut explicit = false; // the current chunk was opened by `---`
    let mut offset = 0usize;
    for (line_no, line) in (1u64..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        let next = offset + line.len();
        if let Some(n) = is_marker(bare, "---") {
            // Close the current chunk unless it is an implicit one with nothing in it.
            if explicit || content_line.is_some() {
                push(&mut out, text, start..offset, first_line, content_line);
            }
            explicit = true;
            start = offset + n;
            first_line = line_no;
            content_line = is_content(bare.get(n..).unwrap_or_default()).then_some(line_no);
        } else if is_marker(bare, "...").is_some() {
            if explicit || content_line.is_some() {
                push(&mut out, text, start..offset, first_line, content_line);
            }
            explicit = false;
            content_line = None;
            start = next;
            first_line = line_no + 1;
        } else if bare.starts_with('%') && content_line.is_none() {
            // A directive belongs to the stream, not the document text.
            start = next;
            first_line = line_no + 1;
        } else if content_line.is_none() && is_content(bare) {
            content_line = Some(line_no);
        }
        offset = next;
    }
    if explicit || content_line.is_some() {
        push(&mut out, text, start..text.len(), first_line, content_line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_counts_lines() {
        let t = "a: 1\n---\n# c\nb: 2\n--- \n---\nc: 3\n...\n";
        let c = split(t);
        assert_eq!(c.len(), 4);
        assert_eq!((c[0].index, c[0].first_line, c[0].content_line), (0, 1, 1));
        assert_eq!((c[1].first_line, c[1].content_line), (2, 4));
        assert!(c[1].text.contains("b: 2"));
        assert!(!c[2].has_content);
        assert_eq!((c[3].index, c[3].content_line), (3, 7));
    }

    #[test]
    fn leading_marker_and_inline_content() {
        let c = split("---\nkind: A\n--- {kind: B}\n");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].content_line, 3);
        assert!(c[1].text.contains("{kind: B}"));
        assert!(split("").is_empty());
        assert!(split("# only a comment\n").is_empty());
    }

    #[test]
    fn markers_need_a_separator() {
        let c = split("a: |\n  ---x\nb: ---\n");
        assert_eq!(c.len(), 1);
    }
}
