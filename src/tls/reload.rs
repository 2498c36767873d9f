//! Hot reload: the certificate files, polled by path and compared byte for byte.

use std::sync::Arc;
use std::time::Duration;

use harbor_pilot_core::chain;
use rustls::crypto::CryptoProvider;
use tokio::task::JoinHandle;

use super::pair::{CertPaths, CertStore, LoadedPair, parse_pair};
use crate::metrics::{Metrics, ReloadResult};

/// Polls `paths` every `every` and swaps in a changed pair that loads; see the module
/// docs. `initial` is the pair the store started with.
pub fn spawn_reloader(
    store: Arc<CertStore>,
    paths: CertPaths,
    initial: &LoadedPair,
    every: Duration,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
) -> JoinHandle<()> {
    // The last bytes tried: a broken pair is reported once, not on every tick.
    let mut last = (initial.cert_pem.clone(), initial.key_pem.clone());
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let (cert, key) = match (
                tokio::fs::read(&paths.cert).await,
                tokio::fs::read(&paths.key).await,
            ) {
                (Ok(cert), Ok(key)) => (cert, key),
                (Err(error), _) | (_, Err(error)) => {
                    // Mid-swap a file can be missing for an instant; the next tick retries.
                    tracing::debug!(%error, "serving certificate files not readable; keeping the current pair");
                    continue;
                }
            };
            if (&cert, &key) == (&last.0, &last.1) {
                continue;
            }
            last = (cert.clone(), key.clone());
            match parse_pair(cert, key, &paths, &provider) {
                Ok(pair) => {
                    store.replace(&pair);
                    metrics.observe_tls_reload(ReloadResult::Success);
                    metrics.set_cert_not_after(pair.not_after);
                    tracing::info!(not_after = pair.not_after, "serving certificate reloaded");
                }
                Err(error) => {
                    metrics.observe_tls_reload(ReloadResult::Error);
                    tracing::warn!(error = %chain::one_line(&error), "changed serving certificate does not load; keeping the current pair");
                }
            }
        }
    })
}
