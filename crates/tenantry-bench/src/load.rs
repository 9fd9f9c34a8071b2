//! The load generators: pgbench (SQL baselines and the RLS side) and wrk (the HTTP API), run as child processes with scripts written here, their throughput parsed from their output.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context};

/// Where the external tools are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `pgbench`.
    pub pgbench: PathBuf,
    /// `wrk`.
    pub wrk: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Tools {
    /// Finds pgbench (PATH, then the PostgreSQL bindir) and wrk (PATH), or says
    /// exactly what to install.
    pub fn find(pg_bindir: Option<&Path>) -> anyhow::Result<Self> {
        let pgbench = on_path("pgbench")
            .or_else(|| pg_bindir.map(|d| d.join("pgbench")).filter(|p| p.is_file()));
        let wrk = on_path("wrk");
        let mut missing = Vec::new();
        if pgbench.is_none() {
            missing.push("pgbench (ships with the PostgreSQL server: apt-get install postgresql)");
        }
        if wrk.is_none() {
            missing.push("wrk (the HTTP load generator: apt-get install wrk)");
        }
        if !missing.is_empty() {
            bail!(
                "the benchmark needs tools that are not installed:\n  - {}\nInstall them and run again (nothing is installed for you).",
                missing.join("\n  - ")
            );
        }
        Ok(Self {
            pgbench: pgbench.expect("checked"),
            wrk: wrk.expect("checked"),
        })
    }
}

/// One pgbench run.
#[derive(Debug, Clone)]
pub struct Pgbench<'a> {
    /// libpq connection string.
    pub conninfo: &'a str,
    /// Script files (pgbench picks one at random per transaction).
    pub scripts: &'a [PathBuf],
    /// Client connections.
    pub clients: usize,
    /// Seconds.
    pub seconds: u64,
    /// `PGOPTIONS` for every connection (session settings), if any.
    pub pgoptions: Option<&'a str>,
}

impl Pgbench<'_> {
    /// Runs it; returns transactions per second (without connection time).
    pub fn run(&self, tools: &Tools) -> anyhow::Result<f64> {
        let mut cmd = Command::new(&tools.pgbench);
        cmd.args(["-n", "-M", "prepared"])
            .args(["-c", &self.clients.to_string()])
            .args(["-j", &threads(self.clients).to_string()])
            .args(["-T", &self.seconds.to_string()]);
        for s in self.scripts {
            cmd.arg("-f").arg(s);
        }
        cmd.arg(self.conninfo);
        cmd.env_remove("PGOPTIONS");
        if let Some(o) = self.pgoptions {
            cmd.env("PGOPTIONS", o);
        }
        let out = cmd.output().context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("pgbench failed ({}):\n{stdout}\n{stderr}", out.status);
        }
        if let Some(line) = stdout
            .lines()
            .find(|l| l.contains("number of failed transactions"))
        {
            if !line.contains(": 0 ") {
                bail!("pgbench had failed transactions: {line}\n{stderr}");
            }
        }
        parse_after(&stdout, "tps = ")
            .with_context(|| format!("no tps in pgbench output:\n{stdout}\n{stderr}"))
    }
}

/// One wrk run against `url` with a Lua script.
#[derive(Debug, Clone)]
pub struct Wrk<'a> {
    /// Base URL, e.g. `http://127.0.0.1:1234`.
    pub url: &'a str,
    /// The Lua script that builds each request.
    pub script: &'a Path,
    /// Connections.
    pub connections: usize,
    /// Seconds.
    pub seconds: u64,
}

impl Wrk<'_> {
    /// Runs it; returns requests per second. Any non-2xx response fails the run:
    /// a figure must never count errors as throughput.
    pub fn run(&self, tools: &Tools) -> anyhow::Result<f64> {
        let out = Command::new(&tools.wrk)
            .args(["-t", &threads(self.connections).to_string()])
            .args(["-c", &self.connections.to_string()])
            .args(["-d", &format!("{}s", self.seconds)])
            .arg("-s")
            .arg(self.script)
            .arg(self.url)
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(line) = stdout
            .lines()
            .find(|l| l.contains("Non-2xx or 3xx responses"))
        {
            bail!(
                "wrk got error responses ({}); the server is not healthy:\n{stdout}",
                line.trim()
            );
        }
        if stdout.contains("Socket errors") {
            bail!("wrk had socket errors:\n{stdout}");
        }
        parse_after(&stdout, "Requests/sec:")
            .with_context(|| format!("no Requests/sec in wrk output:\n{stdout}"))
    }
}

/// Two threads per load generator: one per core of the machines we measure on,
/// never more than its connections.
fn threads(clients: usize) -> usize {
    clients.clamp(1, 2)
}

fn parse_after(text: &str, marker: &str) -> Option<f64> {
    let at = text.find(marker)? + marker.len();
    text[at..].split_whitespace().next()?.parse().ok()
}

/// A wrk Lua script: each request is `method path` with the bearer key of a
/// randomly chosen entry.
pub fn wrk_script(
    dir: &Path,
    name: &str,
    method: &str,
    entries: &[(String, String)],
) -> anyhow::Result<PathBuf> {
    let mut s = String::from("local p = {\n");
    for (key, path) in entries {
        s.push_str(&format!("  {{{:?}, {:?}}},\n", key, path));
    }
    s.push_str("}\n");
    s.push_str(&format!(
        "request = function()\n  local x = p[math.random(#p)]\n  return wrk.format({method:?}, x[2], {{[\"Authorization\"] = \"Bearer \" .. x[1]}})\nend\n"
    ));
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, s)?;
    Ok(path)
}

/// pgbench script files, one per body (at most 128: pgbench's limit).
pub fn pgbench_scripts(dir: &Path, name: &str, bodies: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if bodies.is_empty() || bodies.len() > 128 {
        bail!(
            "{name}: {} pgbench scripts (1 to 128 allowed)",
            bodies.len()
        );
    }
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let path = dir.join(format!("{name}-{i}.sql"));
            std::fs::write(&path, body)?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_and_wrk_outputs_are_parsed() {
        let pg = "latency average = 0.3 ms\ntps = 25123.456789 (without initial connection time)\n";
        assert_eq!(parse_after(pg, "tps = "), Some(25123.456789));
        let wrk = "  Requests/sec:  12345.67\nTransfer/sec:      3.1MB\n";
        assert_eq!(parse_after(wrk, "Requests/sec:"), Some(12345.67));
        assert_eq!(parse_after("nothing", "tps = "), None);
    }
}
