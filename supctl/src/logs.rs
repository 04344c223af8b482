//! `supctl logs <module> [-f] [--tail N]`: the module's output (stdout and
//! stderr), the last lines and with `-f` what it prints next, from the
//! agent of its node through any supervisor
//! (`GET /v1/modules/{name}/logs`). Bytes are written as they come, not
//! reformatted; `--json` changes nothing here.

use std::io::Write;

use admin_api::AdminClient;
use anyhow::Result;

/// The flags of `supctl logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The module.
    pub module: String,
    /// Keep printing what the module prints, until Ctrl-C (or until the
    /// supervisor or the agent ends the stream).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Lines of output before the newest (default 100, at most 10000).
    #[arg(long)]
    pub tail: Option<usize>,
}

/// `supctl logs`.
pub async fn logs(c: &AdminClient, a: &LogsArgs) -> Result<()> {
    let mut stream = c.logs(&a.module, a.tail, a.follow).await?;
    let stdout = std::io::stdout();
    while let Some(chunk) = stream.next_chunk().await? {
        let mut out = stdout.lock();
        // A closed stdout (`| head`) ends it quietly.
        if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    if a.follow {
        anyhow::bail!(
            "the output stream of {} from {} ended",
            a.module,
            stream.addr
        );
    }
    Ok(())
}
