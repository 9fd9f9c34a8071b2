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

/// One request of a wrk script: the path, the tenant's key (tenantry reads
/// it) and the tenant's id (the hand-written baseline reads it, unverified).
/// Both servers get both headers, so they serve the very same requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// The tenant's API key, sent as `Authorization: Bearer`.
    pub key: String,
    /// The tenant's id, sent as `X-Tenant-Id`.
    pub tenant: uuid::Uuid,
    /// Path and query.
    pub path: String,
}

/// The end of every wrk script: each thread seeds its own random sequence
/// (unseeded, every thread would send the same requests in the same order,
/// and the second would always find what the first just cached), and
/// `request` sends `method pick()` with both headers.
fn wrk_tail(method: &str) -> String {
    format!(
        "local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set(\"seed\", threads)
end
init = function(args)
  math.randomseed(7919 * (seed or 1))
end
request = function()
  local key, tenant, path = pick()
  return wrk.format({method:?}, path, {{[\"Authorization\"] = \"Bearer \" .. key, [\"X-Tenant-Id\"] = tenant}})
end
"
    )
}

/// A wrk Lua script: each request is `method path` of a randomly chosen target.
pub fn wrk_script(
    dir: &Path,
    name: &str,
    method: &str,
    targets: &[Target],
) -> anyhow::Result<PathBuf> {
    let mut s = String::from("local p = {\n");
    for t in targets {
        s.push_str(&format!(
            "  {{{:?}, {:?}, {:?}}},\n",
            t.key,
            t.tenant.to_string(),
            t.path
        ));
    }
    s.push_str("}\n");
    s.push_str(
        "pick = function()\n  local x = p[math.random(#p)]\n  return x[1], x[2], x[3]\nend\n",
    );
    s.push_str(&wrk_tail(method));
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, s)?;
    Ok(path)
}

/// Width of one record of a targets file: key, space, tenant id, space,
/// `/v1/resources/<id>`, newline.
pub const RECORD_WIDTH: usize = KEY_LEN + 1 + 36 + 1 + RESOURCE_PATH_LEN + 1;
const KEY_LEN: usize = 3 + 12 + 1 + 64;
const RESOURCE_PATH_LEN: usize = "/v1/resources/".len() + 36;

/// A wrk Lua script for more targets than a script can hold (a million
/// tenants' keys): each request reads one random fixed-width record of
/// `records` (written by [`crate::dataset::write_point_targets`]; one `pread`
/// from the page cache) and sends `GET` of its path with both headers.
pub fn wrk_file_script(dir: &Path, name: &str, records: &Path) -> anyhow::Result<PathBuf> {
    let len = std::fs::metadata(records)
        .with_context(|| format!("reading {}", records.display()))?
        .len() as usize;
    if len == 0 || len % RECORD_WIDTH != 0 {
        bail!(
            "{}: {len} bytes is no whole number of {RECORD_WIDTH}-byte records",
            records.display()
        );
    }
    let mut s = format!(
        "local f = assert(io.open({:?}, \"rb\"))\nlocal count, width = {}, {RECORD_WIDTH}\n",
        records.to_string_lossy(),
        len / RECORD_WIDTH
    );
    s.push_str(&format!(
        "pick = function()\n  f:seek(\"set\", (math.random(count) - 1) * width)\n  local r = f:read(width)\n  \
         return r:sub(1, {KEY_LEN}), r:sub({t0}, {t1}), r:sub({p0}, {p1})\nend\n",
        t0 = KEY_LEN + 2,
        t1 = KEY_LEN + 37,
        p0 = KEY_LEN + 39,
        p1 = KEY_LEN + 38 + RESOURCE_PATH_LEN,
    ));
    s.push_str(&wrk_tail("GET"));
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
