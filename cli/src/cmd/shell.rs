//! `dfs shell`: the client verbs at a prompt, on one connection pool, with a working
//! directory (`cd`, `pwd`, relative paths), `help`, history kept across sessions and
//! Tab completion of verbs and remote paths. When stdin is not a terminal it reads
//! commands from it, one per line, for scripts.
//!
//! The line editor blocks, so the loop runs on a blocking thread and drives each
//! verb (and each completion's listing) on the runtime with `Handle::block_on`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use dfs_client::{Client, FileKind};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::{Context as LineContext, Helper, Highlighter, Hinter, Validator};

use crate::args::{Cli, Command, TrashCommand};
use crate::Context;

/// History entries kept.
const HISTORY: usize = 1000;
/// Entries of a directory offered by one completion.
const COMPLETIONS: u32 = 1000;

/// Verbs the shell does not run: servers, and itself.
const NOT_HERE: &[&str] = &["master", "chunkserver", "up", "tls", "shell"];

/// Runs the shell until `exit`, Ctrl-D or the end of stdin. Fails (after running
/// everything) when a command read from a script failed.
pub(crate) async fn shell(client: &Client, ctx: &Context) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Handle::current();
    let (client, master) = (client.clone(), ctx.master.clone());
    let ctx = ctx.clone();
    let failed = tokio::task::spawn_blocking(move || {
        let mut session = Session {
            client,
            ctx,
            runtime,
            cwd: "/".to_string(),
            failures: 0,
            script_input: false,
        };
        if std::io::stdin().is_terminal() {
            session.interactive(&master)
        } else {
            session.script()
        }
    })
    .await??;
    if failed > 0 {
        anyhow::bail!("{failed} commands failed");
    }
    Ok(())
}

struct Session {
    client: Client,
    ctx: Context,
    runtime: tokio::runtime::Handle,
    cwd: String,
    failures: u64,
    /// Commands come from stdin, so no verb may read it.
    script_input: bool,
}

/// What one line asks for.
enum Step {
    Go,
    Exit,
}

impl Session {
    fn interactive(&mut self, master: &str) -> anyhow::Result<u64> {
        let config = rustyline::Config::builder()
            .max_history_size(HISTORY)?
            .history_ignore_dups(true)?
            .auto_add_history(true)
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor =
            rustyline::Editor::<ShellHelper, rustyline::history::DefaultHistory>::with_config(
                config,
            )?;
        editor.set_helper(Some(ShellHelper {
            client: self.client.clone(),
            runtime: self.runtime.clone(),
            cwd: std::sync::Arc::new(std::sync::Mutex::new(self.cwd.clone())),
        }));
        let history = history_path();
        if let Some(h) = &history {
            // None yet on a first run.
            let _ = editor.load_history(h);
        }
        eprintln!("dfs shell on {master}: `help` lists the verbs, Tab completes, Ctrl-D leaves");
        loop {
            if let Some(helper) = editor.helper_mut() {
                *helper
                    .cwd
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = self.cwd.clone();
            }
            let line = match editor.readline(&format!("dfs:{}> ", self.cwd)) {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if let Step::Exit = self.run_line(&line) {
                break;
            }
        }
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = editor.save_history(h) {
                eprintln!("dfs: {}: history not saved: {e}", h.display());
            }
        }
        // Interactive mistakes were seen and answered; they do not fail the shell.
        Ok(0)
    }

    fn script(&mut self) -> anyhow::Result<u64> {
        self.script_input = true;
        let mut line = String::new();
        // One line at a time, the lock released in between.
        while {
            line.clear();
            std::io::stdin().read_line(&mut line)? > 0
        } {
            if let Step::Exit = self.run_line(line.trim_end_matches(['\n', '\r'])) {
                break;
            }
        }
        Ok(self.failures)
    }

    /// Runs one line; errors are printed (`dfs: ...`) and counted.
    fn run_line(&mut self, line: &str) -> Step {
        let words = match split(line) {
            Ok(w) => w,
            Err(e) => {
                self.fail(&e);
                return Step::Go;
            }
        };
        let Some(first) = words.first() else {
            return Step::Go;
        };
        match first.as_str() {
            "exit" | "quit" => return Step::Exit,
            "pwd" => out(&format!("{}\n", self.cwd)),
            "cd" => {
                let to = resolve(&self.cwd, words.get(1).map_or("/", String::as_str));
                match self.runtime.block_on(self.client.stat(&to)) {
                    Ok(s) if s.kind == FileKind::Dir => self.cwd = s.path,
                    Ok(s) => self.fail(&format!("{}: not a directory", s.path)),
                    Err(e) => self.fail(&e.to_string()),
                }
            }
            "help" => help(words.get(1).map(String::as_str)),
            verb if NOT_HERE.contains(&verb) => {
                self.fail(&format!("`{verb}` is not run inside the shell"))
            }
            _ => self.run_verb(words),
        }
        Step::Go
    }

    fn run_verb(&mut self, words: Vec<String>) {
        let args = std::iter::once("dfs".to_string()).chain(words);
        let matches = match Cli::command().try_get_matches_from(args) {
            Ok(m) => m,
            // clap's own help and version output are answers, not failures.
            Err(e) if !e.use_stderr() => {
                let _ = e.print();
                return;
            }
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("bad usage");
                return self.fail(first.trim_start_matches("error: "));
            }
        };
        for global in ["master", "key_file", "tls_ca"] {
            if matches.value_source(global) == Some(ValueSource::CommandLine) {
                return self.fail(&format!(
                    "--{} is fixed for the shell; start `dfs shell` with it",
                    global.replace('_', "-")
                ));
            }
        }
        let cli = match Cli::from_arg_matches(&matches) {
            Ok(c) => c,
            Err(e) => return self.fail(&e.to_string()),
        };
        if matches!(cli.command, Command::Mount { .. } | Command::Umount { .. }) {
            return self
                .fail("mount and umount are not shell verbs; run `dfs mount` outside the shell");
        }
        let reads_stdin = match &cli.command {
            Command::Put { local, .. } => local.iter().any(|l| l == "-"),
            Command::Append { local, .. } => local == "-",
            _ => false,
        };
        if reads_stdin && self.script_input {
            return self.fail("'-' (stdin) is the shell's script here; name a local file");
        }
        let command = absolutize(cli.command, &self.cwd);
        let result = self
            .runtime
            .block_on(crate::verb(&self.client, &self.ctx, command));
        if let Err(e) = result {
            self.fail(&crate::explain(&e, &self.ctx.master));
        }
    }

    fn fail(&mut self, message: &str) {
        self.failures += 1;
        eprintln!("dfs: {message}");
    }
}

/// Prints the verbs, or one verb's full help.
fn help(verb: Option<&str>) {
    let mut cli = Cli::command();
    match verb {
        Some(v) => match cli.find_subcommand_mut(v) {
            Some(sub) => {
                let text = sub.clone().bin_name(format!("dfs {v}")).render_long_help();
                out(&format!("{text}\n"));
            }
            None => eprintln!("dfs: no verb `{v}`; `help` lists them"),
        },
        None => {
            out("Verbs (`help VERB` for one):\n");
            for sub in cli.get_subcommands() {
                let name = sub.get_name();
                if NOT_HERE.contains(&name) {
                    continue;
                }
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                out(&format!("  {name:<12} {about}\n"));
            }
            out("Shell: cd DIR, pwd, help [VERB], exit. Paths may be relative to the working directory.\n");
        }
    }
}

/// Prints to stdout; a closed stdout ends nothing here (the next verb reports it).
fn out(text: &str) {
    let _ = crate::cmd::print_text(text);
}

/// Where history is kept: next to the config file.
fn history_path() -> Option<PathBuf> {
    dfs_cli::credentials::config_dir().map(|d| d.join("shell_history"))
}

/// `path` taken from the working directory `cwd` (`-` stays stdin/stdout).
fn resolve(cwd: &str, path: &str) -> String {
    if path.starts_with('/') || path == "-" {
        path.to_string()
    } else if cwd == "/" {
        format!("/{path}")
    } else {
        format!("{cwd}/{path}")
    }
}

/// The command with each remote path taken from `cwd`, and a missing PATH that
/// defaults to `/` defaulting to `cwd` instead.
fn absolutize(command: Command, cwd: &str) -> Command {
    let r = |p: String| resolve(cwd, &p);
    let here = |p: Option<String>| Some(p.map_or(cwd.to_string(), |p| resolve(cwd, &p)));
    let all = |ps: Vec<String>| ps.into_iter().map(|p| resolve(cwd, &p)).collect();
    match command {
        Command::Put {
            local,
            remote,
            recursive,
            replication,
            force,
            parallel,
        } => Command::Put {
            local,
            remote: r(remote),
            recursive,
            replication,
            force,
            parallel,
        },
        Command::Get {
            remote,
            local,
            recursive,
            parallel,
        } => Command::Get {
            remote: all(remote),
            local,
            recursive,
            parallel,
        },
        Command::Cp {
            src,
            dst,
            recursive,
            replication,
            force,
            through_client,
            parallel,
        } => Command::Cp {
            src: all(src),
            dst: r(dst),
            recursive,
            replication,
            force,
            through_client,
            parallel,
        },
        Command::Checksum {
            paths,
            local: false,
            chunk_size,
            json,
        } => Command::Checksum {
            paths: all(paths),
            local: false,
            chunk_size,
            json,
        },
        Command::Cat { remote } => Command::Cat { remote: r(remote) },
        Command::Sync {
            local,
            remote,
            watch,
            delete,
            checksum,
            replication,
            parallel,
            json,
        } => Command::Sync {
            local,
            remote: r(remote),
            watch,
            delete,
            checksum,
            replication,
            parallel,
            json,
        },
        Command::Append {
            local,
            remote,
            replication,
        } => Command::Append {
            local,
            remote: r(remote),
            replication,
        },
        Command::Head {
            remote,
            bytes,
            lines,
        } => Command::Head {
            remote: r(remote),
            bytes,
            lines,
        },
        Command::Tail {
            remote,
            follow,
            bytes,
            interval,
        } => Command::Tail {
            remote: r(remote),
            follow,
            bytes,
            interval,
        },
        Command::Ls {
            long,
            recursive,
            human,
            directory,
            path,
            json,
            help,
        } => Command::Ls {
            long,
            recursive,
            human,
            directory,
            path: here(path),
            json,
            help,
        },
        Command::Mkdir { parents, path } => Command::Mkdir {
            parents,
            path: r(path),
        },
        Command::Rm {
            recursive,
            skip_trash,
            path,
        } => Command::Rm {
            recursive,
            skip_trash,
            path: r(path),
        },
        Command::Touch { paths } => Command::Touch { paths: all(paths) },
        Command::Rmdir { path } => Command::Rmdir { path: r(path) },
        Command::Chmod { mode, paths } => Command::Chmod {
            mode,
            paths: all(paths),
        },
        Command::Chown { owner, paths } => Command::Chown {
            owner,
            paths: all(paths),
        },
        Command::Du {
            summarize,
            human,
            path,
            json,
            help,
        } => Command::Du {
            summarize,
            human,
            path: here(path),
            json,
            help,
        },
        Command::Count { path, json } => Command::Count {
            path: here(path),
            json,
        },
        Command::Tree { path, depth } => Command::Tree {
            path: here(path),
            depth,
        },
        Command::Mv { src, dst } => Command::Mv {
            src: r(src),
            dst: r(dst),
        },
        Command::Stat { path, json } => Command::Stat {
            path: r(path),
            json,
        },
        Command::Fsck { path, json } => Command::Fsck {
            path: here(path),
            json,
        },
        Command::Setrep {
            wait,
            replication,
            path,
        } => Command::Setrep {
            wait,
            replication,
            path: r(path),
        },
        Command::Trash {
            command: TrashCommand::Restore { path },
        } => Command::Trash {
            command: TrashCommand::Restore { path: r(path) },
        },
        other => other,
    }
}

/// Splits a line into words: spaces separate, single and double quotes group, a
/// backslash escapes the next character (outside single quotes).
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => match chars.next() {
                Some(n) => {
                    word.push(n);
                    in_word = true;
                }
                None => return Err("a line cannot end in a backslash".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Tab completion: verbs for the first word, remote paths after it.
#[derive(Helper, Hinter, Highlighter, Validator)]
struct ShellHelper {
    client: Client,
    runtime: tokio::runtime::Handle,
    cwd: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &LineContext<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        if before[..start].trim().is_empty() {
            let mut verbs: Vec<String> = Cli::command()
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .filter(|n| !NOT_HERE.contains(&n.as_str()))
                .chain(["cd", "pwd", "help", "exit"].map(String::from))
                .filter(|n| n.starts_with(word))
                .collect();
            verbs.sort();
            return Ok((
                start,
                verbs.into_iter().map(|v| pair(format!("{v} "))).collect(),
            ));
        }
        let cwd = self
            .cwd
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (dir_part, prefix) = match word.rfind('/') {
            Some(i) => (&word[..=i], &word[i + 1..]),
            None => ("", word),
        };
        let dir = if dir_part.is_empty() {
            cwd
        } else {
            resolve(&cwd, dir_part.trim_end_matches('/')).replace("//", "/")
        };
        let dir = if dir.is_empty() { "/".to_string() } else { dir };
        let listed = self
            .runtime
            .block_on(self.client.list_page(&dir, None, COMPLETIONS));
        let Ok((entries, _)) = listed else {
            return Ok((start, Vec::new()));
        };
        let found = entries
            .into_iter()
            .filter(|e| e.name.starts_with(prefix))
            .map(|e| {
                let tail = if e.kind == FileKind::Dir { "/" } else { " " };
                pair(format!("{dir_part}{}{tail}", escape(&e.name)))
            })
            .collect();
        Ok((start, found))
    }
}

fn pair(s: String) -> Pair {
    Pair {
        display: s.trim_end().to_string(),
        replacement: s,
    }
}

/// A name as one word of a shell line.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_whitespace() || matches!(c, '\\' | '\'' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_quotes_and_escapes() {
        assert_eq!(split("ls  -l /a").unwrap(), ["ls", "-l", "/a"]);
        assert_eq!(
            split("put 'a b' \"c d\" e\\ f").unwrap(),
            ["put", "a b", "c d", "e f"]
        );
        assert_eq!(split("x '' y").unwrap(), ["x", "", "y"]);
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
        assert!(split("'open").is_err());
        assert!(split("end\\").is_err());
        assert_eq!(
            split(&format!("ls {}", escape("a b'c"))).unwrap(),
            ["ls", "a b'c"]
        );
    }

    #[test]
    fn resolves_relative_paths() {
        assert_eq!(resolve("/", "a"), "/a");
        assert_eq!(resolve("/d", "a/b"), "/d/a/b");
        assert_eq!(resolve("/d", "/x"), "/x");
        assert_eq!(resolve("/d", "-"), "-");
        assert_eq!(resolve("/d", ".."), "/d/..");
    }
}
