//! The SVG bar chart of `--report`: the headline metric per scenario, candidate against
//! baseline.

use std::fmt::Write as _;

use super::{fmt_num, Comparison, Row};

impl Comparison {
    /// A grouped horizontal bar chart of the headline metric per scenario; each scenario's bars
    /// are scaled to the larger of the two, since units differ between rows.
    pub fn svg(&self) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.scenario != "verify" && (r.cand.is_some() || r.base.is_some()))
            .collect();
        let (width, left, bar_w, row_h, top) = (880.0, 170.0, 520.0, 46.0, 70.0);
        let height = top + row_h * rows.len() as f64 + 30.0;
        let (cc, bc) = ("#2b6cb0", "#dd6b20");
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="{width}" height="{height}" fill="white"/><text x="{}" y="24" font-size="16" font-weight="bold">{} vs {}: throughput per scenario (medians of {} runs; bars scaled per row)</text>"#,
            10,
            esc(&self.candidate),
            esc(&self.baseline),
            self.runs
        );
        let _ = writeln!(
            s,
            r#"<rect x="10" y="38" width="14" height="12" fill="{cc}"/><text x="30" y="48">{}</text><rect x="140" y="38" width="14" height="12" fill="{bc}"/><text x="160" y="48">{}</text>"#,
            esc(&self.candidate),
            esc(&self.baseline)
        );
        for (i, row) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let cv = row.cand.map_or(0.0, |s| s.value);
            let bv = row.base.map_or(0.0, |s| s.value);
            let max = cv.max(bv).max(f64::MIN_POSITIVE);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y + 22.0,
                esc(&row.scenario)
            );
            for (j, (v, color)) in [(cv, cc), (bv, bc)].into_iter().enumerate() {
                let by = y + 4.0 + 18.0 * j as f64;
                let w = (bar_w * v / max).max(1.0);
                let _ = writeln!(
                    s,
                    r#"<rect x="{left}" y="{by}" width="{w:.1}" height="16" fill="{color}"/><text x="{:.1}" y="{:.1}">{} {}</text>"#,
                    left + w + 6.0,
                    by + 12.5,
                    fmt_num(v),
                    row.unit
                );
            }
            if let Some(r) = row.ratio() {
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end" font-weight="bold">{r:.2}×</text>"#,
                    width - 10.0,
                    y + 22.0
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
