//! A module's output (`GET /v1/modules/{name}/logs`): the last lines, and
//! with `follow` what the module prints next, relayed by any replica from
//! the agent of the module's node.
//!
//! [`AdminClient::logs`] opens the answer on the first replica that gives
//! one (moving on when one cannot be reached or answers 503) and hands it
//! back as a [`LogStream`] of byte chunks, as they come.
//!
//! Timeouts: the answer head within the client's request timeout; without
//! `follow`, each chunk within it too. A followed stream has no timeout (a
//! module may stay silent for hours); it ends when the replica or the
//! agent ends it. Chunks are read one at a time (bounded by what the
//! server sends at once).

use reqwest::StatusCode;

use crate::client::{AdminClient, ClientError, error_chain};

/// The module's output as it comes, from one replica.
#[derive(Debug)]
pub struct LogStream {
    /// The replica that answers.
    pub addr: String,
    resp: reqwest::Response,
    follow: bool,
    timeout: std::time::Duration,
}

impl LogStream {
    /// The next chunk of output (any number of bytes, not cut at lines);
    /// `None` once the answer is complete (without `follow`) or the
    /// server ended the stream.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        let chunk = if self.follow {
            self.resp.chunk().await
        } else {
            match tokio::time::timeout(self.timeout, self.resp.chunk()).await {
                Ok(c) => c,
                Err(_) => {
                    return Err(ClientError::Unreachable(format!(
                        "{}: the output did not come within {:?}",
                        self.addr, self.timeout
                    )));
                }
            }
        };
        chunk.map_err(|e| ClientError::BadAnswer {
            url: self.addr.clone(),
            message: format!("the output stream broke: {}", error_chain(&e)),
        })
    }

    /// The whole answer (without `follow`), as text.
    pub async fn text(mut self) -> Result<String, ClientError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl AdminClient {
    /// `GET /v1/modules/{name}/logs?tail=&follow=`: the last `tail` lines
    /// (the server's default, 100, when `None`) of the module's output,
    /// then with `follow` what it prints next.
    pub async fn logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<LogStream, ClientError> {
        let mut query = format!("follow={follow}");
        if let Some(n) = tail {
            query.push_str(&format!("&tail={n}"));
        }
        let mut unreachable = Vec::new();
        for addr in &self.addrs {
            let url = format!("{}://{addr}/v1/modules/{name}/logs?{query}", self.scheme);
            let mut req = self.http.get(&url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = match tokio::time::timeout(self.timeout, req.send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    unreachable.push(format!("{addr}: {}", error_chain(&e)));
                    continue;
                }
                Err(_) => {
                    unreachable.push(format!("{addr}: no answer within {:?}", self.timeout));
                    continue;
                }
            };
            let status = resp.status();
            if !status.is_success() {
                let bytes = tokio::time::timeout(self.timeout, resp.bytes())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let message = serde_json::from_slice::<proto::ErrorBody>(&bytes)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
                if status == StatusCode::SERVICE_UNAVAILABLE && self.addrs.len() > 1 {
                    unreachable.push(format!("{addr}: {message}"));
                    continue;
                }
                return Err(ClientError::Api { status, message });
            }
            return Ok(LogStream {
                addr: addr.clone(),
                resp,
                follow,
                timeout: self.timeout,
            });
        }
        Err(ClientError::Unreachable(unreachable.join("; ")))
    }
}
