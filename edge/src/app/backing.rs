//! Where the edge's Redis comes from — `--redis`, the embedded one, or none at all
//! (`--bench-floor`, `--echo`) — and what it learns from it at start (`RC.INFO`).

use std::sync::Arc;
use std::time::Duration;

use roomcast_common::partition::Partitioner;

use crate::app::embedded::Embedded;
use crate::backend::cluster::{cluster_enabled, ClusterTarget};
use crate::backend::module;
use crate::backend::target::Target;
use crate::config::Config;

/// What the edge learns from Redis at start.
struct Dataset {
    /// The partition layout (`RC.INFO` partitions).
    layout: Partitioner,
    /// Each node has one inbox for all partitions (`RC.INFO` inbox shared).
    shared_inbox: bool,
    /// The server is a Redis Cluster node (`INFO cluster`).
    cluster: bool,
}

/// Reads the dataset's partition count and inbox layout from `RC.INFO`, and whether the
/// server is a Redis Cluster node, retrying until Redis answers.
fn fetch_layout(target: &Target) -> Result<Dataset, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = runtime.block_on(async {
            let client = target.resolve().await?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let info = module::info(&mut conn).await?;
            let cluster = cluster_enabled(&mut conn).await?;
            Ok::<_, redis::RedisError>((info, cluster))
        });
        match attempt {
            Ok((info, cluster)) => match info.partitions.map(Partitioner::new) {
                Some(Ok(layout)) => {
                    return Ok(Dataset {
                        layout,
                        shared_inbox: info.shared_inbox,
                        cluster,
                    })
                }
                _ => tracing::error!("RC.INFO did not report a usable partition count; retrying"),
            },
            Err(e) => tracing::error!(
                error = %e,
                "cannot reach Redis with the roomcast module (is it running and is libroomcast.so loaded?); retrying"
            ),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Where the edge's Redis comes from: `--redis`, the embedded one, or none at all
/// (`--bench-floor`).
pub struct Backing {
    /// The embedded redis-server, stopped when dropped.
    pub embedded: Option<Embedded>,
    /// Where the Redis in use is (`None` under `--bench-floor` and `--echo`).
    pub target: Option<Arc<Target>>,
    /// Partition layout (from `RC.INFO`; one partition under `--bench-floor`, where it
    /// only checks room names).
    pub layout: Partitioner,
    /// One inbox per node for all partitions (standalone Redis), per `RC.INFO`.
    pub shared_inbox: bool,
    /// Redis is a Redis Cluster.
    pub cluster: bool,
    /// What the start banner says about it.
    pub banner: String,
}

pub fn backing(config: &Config) -> Result<Backing, String> {
    if config.echo || config.bench_floor {
        let banner = if config.echo {
            "echo mode (conformance testing only: every message is echoed back)"
        } else {
            "bench-floor mode (benchmark reference only: rooms are local to each worker)"
        };
        return Ok(Backing {
            embedded: None,
            target: None,
            layout: Partitioner::new(1)?,
            shared_inbox: true,
            cluster: false,
            banner: banner.into(),
        });
    }
    let embedded = match &config.redis {
        Some(_) => None,
        None => Some(Embedded::start(
            config.module.as_deref(),
            &config.embedded_module_args,
        )?),
    };
    let url = match (&config.redis, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(e)) => e.url.clone(),
        (None, None) => return Err("no Redis".into()),
    };
    let mut target = Target::parse(&url)?;
    let Dataset {
        layout,
        shared_inbox,
        cluster,
    } = fetch_layout(&target)?;
    if cluster {
        // A Redis Cluster node: from now on, the cluster it belongs to.
        target = match target {
            Target::Direct(seed) => Target::Cluster(ClusterTarget { seed }),
            _ => {
                return Err(format!(
                    "{url} names a Redis Cluster node through Sentinel; give --redis redis://<any cluster node> instead"
                ))
            }
        };
    }
    Ok(Backing {
        embedded,
        banner: target.describe(),
        target: Some(Arc::new(target)),
        layout,
        shared_inbox,
        cluster,
    })
}
