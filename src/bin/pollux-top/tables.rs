//! The four views (reactors, pollers, subsystems, bdevs) as sortable text tables, shared by
//! the terminal UI and the plain `--once` output.

use crate::snapshot::Snapshot;
use std::cmp::Ordering;

/// A value a column sorts by.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Num(f64),
    Text(String),
}

impl Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Num(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Num(_)) => Ordering::Greater,
        }
    }
}

/// One row: its cells, one sort key per column, and detail lines shown under it.
#[derive(Debug, Clone)]
pub struct Line {
    pub cells: Vec<String>,
    pub keys: Vec<Key>,
    pub details: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct View {
    pub title: &'static str,
    pub header: Vec<&'static str>,
    /// Column widths (characters) for the terminal.
    pub widths: Vec<u16>,
    pub lines: Vec<Line>,
    /// The column sorted by when the user has not chosen, and whether descending.
    pub default_sort: (usize, bool),
}

pub const TITLES: [&str; 4] = ["Reactors", "Pollers", "Subsystems", "Bdevs"];

fn n(v: f64) -> Key {
    Key::Num(v)
}

fn t(s: &str) -> Key {
    Key::Text(s.to_string())
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

fn f0(v: f64) -> String {
    format!("{v:.0}")
}

impl View {
    /// Sorts the lines by `col` (descending when `desc`).
    pub fn sort(&mut self, col: usize, desc: bool) {
        let col = col.min(self.header.len().saturating_sub(1));
        self.lines.sort_by(|a, b| {
            let o = a.keys[col].cmp(&b.keys[col]);
            if desc {
                o.reverse()
            } else {
                o
            }
        });
    }

    /// The table as plain text (header, rows, details indented).
    pub fn to_text(&self) -> String {
        let mut out = format!("== {} ==\n", self.title);
        let row = |cells: &[String]| {
            let mut s = String::new();
            for (c, w) in cells.iter().zip(&self.widths) {
                s.push_str(&format!("{:<width$} ", c, width = *w as usize));
            }
            s.trim_end().to_string() + "\n"
        };
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        out.push_str(&row(&header));
        for l in &self.lines {
            out.push_str(&row(&l.cells));
            for d in &l.details {
                out.push_str(&format!("    {d}\n"));
            }
        }
        out
    }
}

/// The view of tab `tab` (0..4) of `s`.
pub fn view(s: &Snapshot, tab: usize) -> View {
    match tab {
        0 => reactors(s),
        1 => pollers(s),
        2 => subsystems(s),
        _ => bdevs(s),
    }
}

fn reactors(s: &Snapshot) -> View {
    let lines = s
        .reactors
        .iter()
        .map(|r| Line {
            cells: vec![
                r.lcore.to_string(),
                f1(r.busy_pct),
                r.state.clone(),
                f1(r.sleep_pct),
                f0(r.messages_per_s),
                if r.in_interrupt { "sleep" } else { "poll" }.to_string(),
                r.busy_ticks.to_string(),
                r.idle_ticks.to_string(),
            ],
            keys: vec![
                n(r.lcore as f64),
                n(r.busy_pct),
                t(&r.state),
                n(r.sleep_pct),
                n(r.messages_per_s),
                n(f64::from(u8::from(r.in_interrupt))),
                n(r.busy_ticks as f64),
                n(r.idle_ticks as f64),
            ],
            details: vec![],
        })
        .collect();
    View {
        title: TITLES[0],
        header: vec![
            "Core", "Busy %", "State", "Sleep %", "Msgs/s", "Idle", "Busy ns", "Idle ns",
        ],
        widths: vec![5, 7, 9, 8, 8, 6, 16, 16],
        lines,
        default_sort: (0, false),
    }
}

fn pollers(s: &Snapshot) -> View {
    let lines = s
        .pollers
        .iter()
        .map(|p| Line {
            cells: vec![
                p.thread.clone(),
                p.name.clone(),
                p.id.to_string(),
                p.kind.clone(),
                f0(p.runs_per_s),
                f0(p.busy_per_s),
                p.run_count.to_string(),
                p.busy_count.to_string(),
            ],
            keys: vec![
                t(&p.thread),
                t(&p.name),
                n(p.id as f64),
                t(&p.kind),
                n(p.runs_per_s),
                n(p.busy_per_s),
                n(p.run_count as f64),
                n(p.busy_count as f64),
            ],
            details: vec![],
        })
        .collect();
    View {
        title: TITLES[1],
        header: vec![
            "Reactor", "Poller", "Id", "Type", "Runs/s", "Busy/s", "Runs", "Busy",
        ],
        widths: vec![11, 34, 4, 7, 10, 10, 14, 14],
        lines,
        default_sort: (4, true),
    }
}

fn subsystems(s: &Snapshot) -> View {
    let lines = s
        .subsystems
        .iter()
        .map(|x| Line {
            cells: vec![
                x.nqn.clone(),
                x.subtype.clone(),
                x.namespaces.to_string(),
                x.listeners.to_string(),
                x.controllers.len().to_string(),
                x.qpairs.to_string(),
            ],
            keys: vec![
                t(&x.nqn),
                t(&x.subtype),
                n(x.namespaces as f64),
                n(x.listeners as f64),
                n(x.controllers.len() as f64),
                n(x.qpairs as f64),
            ],
            details: x
                .controllers
                .iter()
                .map(|c| {
                    // The host NQN last: the terminal may cut it.
                    format!(
                        "controller {}, {} I/O qpairs, host {}",
                        c.cntlid, c.num_io_qpairs, c.hostnqn
                    )
                })
                .collect(),
        })
        .collect();
    View {
        title: TITLES[2],
        header: vec!["NQN", "Type", "NS", "Listeners", "Ctrlrs", "Qpairs"],
        widths: vec![44, 10, 4, 10, 7, 7],
        lines,
        default_sort: (0, false),
    }
}

fn bdevs(s: &Snapshot) -> View {
    let lines = s
        .bdevs
        .iter()
        .map(|b| Line {
            cells: vec![
                b.name.clone(),
                f0(b.iops),
                f1(b.mib_s),
                f0(b.read_iops),
                f0(b.write_iops),
                f1(b.read_p50_us),
                f1(b.read_p99_us),
                f1(b.write_p50_us),
                f1(b.write_p99_us),
            ],
            keys: vec![
                t(&b.name),
                n(b.iops),
                n(b.mib_s),
                n(b.read_iops),
                n(b.write_iops),
                n(b.read_p50_us),
                n(b.read_p99_us),
                n(b.write_p50_us),
                n(b.write_p99_us),
            ],
            details: vec![],
        })
        .collect();
    View {
        title: TITLES[3],
        header: vec![
            "Bdev", "IOPS", "MiB/s", "Rd IOPS", "Wr IOPS", "Rd p50us", "Rd p99us", "Wr p50us",
            "Wr p99us",
        ],
        widths: vec![20, 10, 9, 10, 10, 9, 9, 9, 9],
        lines,
        default_sort: (1, true),
    }
}
