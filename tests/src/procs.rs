//! Processes seen through `/proc` (Linux): which children this test process started,
//! found by their command line, for tests that measure an edge's file descriptors and
//! memory or check what it runs.

/// The parent pid of `pid` (from `/proc/PID/stat`, after the parenthesized name).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Pids of this test process's children whose argv (`/proc/PID/cmdline`, split at NUL)
/// `wanted` accepts.
pub fn our_children(wanted: impl Fn(&[&[u8]]) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if parent_of(pid) != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if wanted(&words) {
            pids.push(pid);
        }
    }
    pids
}

/// Pids of this test process's children whose command line has every one of `args`.
pub fn our_children_with(args: &[&str]) -> Vec<u32> {
    our_children(|words| args.iter().all(|a| words.contains(&a.as_bytes())))
}

/// The pid of the edge this test process started with `--node-id node`.
pub fn edge_pid(node: &str) -> u32 {
    our_children(|words| {
        words
            .windows(2)
            .any(|w| w[0] == b"--node-id" && w[1] == node.as_bytes())
    })
    .first()
    .copied()
    .unwrap_or_else(|| panic!("no edge process with --node-id {node}"))
}
