//! Printing for people: aligned tables, one-line errors.

/// `text` with control characters (newlines included) made visible, so an error or a value
/// from the database can never spill onto a second line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A table with a header row, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let cell = one_line(&cell);
            out.push_str(&cell);
            out.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut headers.iter().map(|h| h.to_string()));
    for row in rows {
        out.push_str(&line(&mut row.iter().cloned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_stay_one_line_per_row() {
        let t = table(&["A", "BB"], &[vec!["x\ny".into(), "1".into()]]);
        assert_eq!(t, "A    BB\nx y  1\n");
    }
}
