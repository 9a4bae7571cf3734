//! pollux-top: a live view of a running pollux over its RPC socket, like SPDK's spdk_top.
//!
//! Every second (`-d`) it calls the stats RPCs (`framework_get_reactors`,
//! `thread_get_pollers`, `bdev_get_iostat`, `nvmf_get_subsystems`,
//! `nvmf_subsystem_get_controllers`, `nvmf_subsystem_get_qpairs`) and shows four tabs:
//! reactors (busy %, sleeping or polling), pollers (runs and busy runs per second),
//! subsystems with their controllers and queue pairs, bdevs (IOPS, MiB/s, p50/p99 latency).
//! Keys: Tab / Right and Shift-Tab / Left switch tabs, 1-4 pick one, `s` sorts by the next
//! column, `r` reverses the order, `q` / Esc / Ctrl-C quit. When pollux goes away the
//! screen says so and it retries every interval; a terminal resize redraws at once.
//! `--once` prints one snapshot (two samples an interval apart) as text, `--once --json`
//! as JSON, and exits (status 1 when pollux does not answer).

#![forbid(unsafe_code)]

mod client;
mod snapshot;
mod tables;

use clap::Parser;
use client::RpcClient;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Tabs};
use ratatui::{DefaultTerminal, Frame};
use snapshot::{Sample, Snapshot};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tables::TITLES;

#[derive(Parser, Debug)]
#[command(
    name = "pollux-top",
    version,
    about = "Live view of a running pollux: reactors, pollers, subsystems, bdevs"
)]
struct Args {
    /// pollux's JSON-RPC socket (as rpc.py's -s / pollux's -r).
    #[arg(
        short = 'r',
        long = "rpc-socket",
        visible_short_alias = 's',
        default_value = "/var/tmp/pollux.sock"
    )]
    rpc_socket: PathBuf,
    /// Seconds between refreshes.
    #[arg(short = 'd', long = "delay", default_value_t = 1.0)]
    delay: f64,
    /// Seconds to wait for each RPC answer.
    #[arg(short = 't', long = "timeout", default_value_t = 5.0)]
    timeout: f64,
    /// Print one snapshot and exit.
    #[arg(long)]
    once: bool,
    /// With --once: the snapshot as JSON.
    #[arg(long, requires = "once")]
    json: bool,
}

fn seconds(v: f64, what: &str) -> Duration {
    if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
        eprintln!("pollux-top: {what} must be a number of seconds in (0, 3600], not {v}");
        std::process::exit(2);
    }
    Duration::from_secs_f64(v)
}

fn sample(args: &Args, timeout: Duration) -> Result<Sample, String> {
    let mut c = RpcClient::connect(&args.rpc_socket, timeout)?;
    Sample::take(&mut c)
}

fn main() {
    let args = Args::parse();
    let delay = seconds(args.delay, "--delay");
    let timeout = seconds(args.timeout, "--timeout");
    if args.once {
        let snap = sample(&args, timeout).and_then(|first| {
            std::thread::sleep(delay);
            sample(&args, timeout).map(|second| Snapshot::between(&first, &second))
        });
        match snap {
            Ok(s) if args.json => {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default())
            }
            Ok(s) => {
                for tab in 0..TITLES.len() {
                    let mut v = tables::view(&s, tab);
                    let (col, desc) = v.default_sort;
                    v.sort(col, desc);
                    println!("{}", v.to_text());
                }
            }
            Err(e) => {
                eprintln!("pollux-top: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let mut terminal = ratatui::init();
    let result = App::new(args, delay, timeout).run(&mut terminal);
    ratatui::restore();
    if let Err(e) = result {
        eprintln!("pollux-top: {e}");
        std::process::exit(1);
    }
}

struct App {
    args: Args,
    delay: Duration,
    timeout: Duration,
    tab: usize,
    /// Per tab: the chosen sort column and order (None: the view's default).
    sort: [Option<(usize, bool)>; 4],
    prev: Option<Sample>,
    snap: Option<Snapshot>,
    updated: Option<Instant>,
    error: Option<String>,
}

impl App {
    fn new(args: Args, delay: Duration, timeout: Duration) -> App {
        App {
            args,
            delay,
            timeout,
            tab: 0,
            sort: [None; 4],
            prev: None,
            snap: None,
            updated: None,
            error: None,
        }
    }

    fn refresh(&mut self) {
        match sample(&self.args, self.timeout) {
            Ok(cur) => {
                // The first sample after a (re)connection shows counters with zero rates
                // until the next one.
                let prev = self.prev.take().unwrap_or_else(|| cur.clone());
                self.snap = Some(Snapshot::between(&prev, &cur));
                self.prev = Some(cur);
                self.updated = Some(Instant::now());
                self.error = None;
            }
            Err(e) => {
                self.prev = None;
                self.error = Some(e);
            }
        }
    }

    fn run(&mut self, terminal: &mut DefaultTerminal) -> std::io::Result<()> {
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                self.refresh();
                next = Instant::now() + self.delay;
            }
            terminal.draw(|f| self.draw(f))?;
            let wait = next.saturating_duration_since(Instant::now());
            if !event::poll(wait)? {
                continue;
            }
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Tab | KeyCode::Right => self.tab = (self.tab + 1) % TITLES.len(),
                    KeyCode::BackTab | KeyCode::Left => {
                        self.tab = (self.tab + TITLES.len() - 1) % TITLES.len()
                    }
                    KeyCode::Char(c @ '1'..='4') => self.tab = c as usize - '1' as usize,
                    KeyCode::Char('s') => self.next_sort_column(),
                    KeyCode::Char('r') => self.reverse_sort(),
                    _ => {}
                },
                // Redrawn at the top of the loop with the new size.
                Event::Resize(_, _) => {}
                _ => {}
            }
        }
    }

    fn current_sort(&self) -> (usize, bool) {
        let default = self
            .snap
            .as_ref()
            .map(|s| tables::view(s, self.tab).default_sort)
            .unwrap_or((0, false));
        self.sort[self.tab].unwrap_or(default)
    }

    fn next_sort_column(&mut self) {
        let columns = self
            .snap
            .as_ref()
            .map_or(1, |s| tables::view(s, self.tab).header.len());
        let (col, desc) = self.current_sort();
        self.sort[self.tab] = Some(((col + 1) % columns, desc));
    }

    fn reverse_sort(&mut self) {
        let (col, desc) = self.current_sort();
        self.sort[self.tab] = Some((col, !desc));
    }

    fn draw(&self, f: &mut Frame) {
        let [tabs_area, body, status] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(3),
            Constraint::Length(2),
        ])
        .areas(f.area());
        let titles: Vec<String> = TITLES
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{} {t}", i + 1))
            .collect();
        let tabs = Tabs::new(titles)
            .select(self.tab)
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" pollux-top  {} ", self.args.rpc_socket.display())),
            )
            .highlight_style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        f.render_widget(tabs, tabs_area);

        match &self.snap {
            Some(s) => {
                let mut v = tables::view(s, self.tab);
                let (col, desc) = self.current_sort();
                v.sort(col, desc);
                let header = Row::new(v.header.iter().enumerate().map(|(i, h)| {
                    let mark = match (i == col, desc) {
                        (true, true) => " v",
                        (true, false) => " ^",
                        _ => "",
                    };
                    Cell::from(format!("{h}{mark}"))
                }))
                .style(Style::default().add_modifier(Modifier::BOLD));
                let mut rows = Vec::new();
                for l in &v.lines {
                    rows.push(Row::new(l.cells.iter().map(|c| Cell::from(c.clone()))));
                    for d in &l.details {
                        rows.push(
                            Row::new([Cell::from(format!("  - {d}"))])
                                .style(Style::default().fg(Color::DarkGray)),
                        );
                    }
                }
                let widths = v.widths.iter().map(|w| Constraint::Length(*w));
                let stale = if self.error.is_some() { " (stale)" } else { "" };
                let table = Table::new(rows, widths).header(header).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" {}{stale} ", v.title)),
                );
                f.render_widget(table, body);
            }
            None => {
                let p = Paragraph::new("waiting for the first answer from pollux...")
                    .block(Block::default().borders(Borders::ALL));
                f.render_widget(p, body);
            }
        }

        let mut lines = Vec::new();
        if let Some(e) = &self.error {
            lines.push(Line::from(Span::styled(
                format!(
                    "pollux is not answering at {}: {e}; retrying every {:.1} s",
                    self.args.rpc_socket.display(),
                    self.delay.as_secs_f64()
                ),
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            )));
        } else {
            let age = self
                .updated
                .map(|u| format!("updated {:.1} s ago", u.elapsed().as_secs_f64()))
                .unwrap_or_default();
            lines.push(Line::from(format!(
                "connected, refresh every {:.1} s, {age}",
                self.delay.as_secs_f64()
            )));
        }
        lines.push(Line::from(
            "q quit  Tab/Left/Right switch  1-4 tab  s sort column  r reverse",
        ));
        f.render_widget(Paragraph::new(lines), status);
    }
}
