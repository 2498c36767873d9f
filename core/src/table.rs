//! Plain-text tables for the terminal: what `scan` and `prewarm` print.

/// `rows` (the header first) in columns two spaces apart, each line trimmed at the end;
/// widths count characters, so `…` is one.
pub fn align_columns<const N: usize, S: AsRef<str>>(rows: &[[S; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.as_ref().chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let cell = cell.as_ref();
            line.push_str(cell);
            if i + 1 < N {
                let pad = width - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A digest (`sha256:…`) cut to its first 12 hex digits, as `docker images` shows it;
/// anything else as it is.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 && hex.is_char_boundary(12) => {
            format!("{algorithm}:{}…", &hex[..12])
        }
        _ => digest.to_owned(),
    }
}

/// `bytes` as people read sizes: `512 B`, `2.1 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a displayed size needs no more than 3 digits
    let value = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", value / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", value / 1_048_576.0),
        _ => format!("{:.1} GiB", value / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_lines_end_without_blanks() {
        let table = align_columns(&[["A", "BB", "C"], ["ccc…", "", "x"], ["d", "e", ""]]);
        assert_eq!(table, "A     BB  C\nccc…      x\nd     e\n");
    }

    #[test]
    fn digests_are_cut_to_twelve_digits() {
        let long = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(short_digest(&long), "sha256:abababababab…");
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
        assert_eq!(short_digest("-"), "-");
        assert_eq!(short_digest("sha256:ééééééééé"), "sha256:éééééé…");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(2_202_010), "2.1 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
