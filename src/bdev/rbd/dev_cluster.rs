//! A throw-away Ceph cluster (`scripts/ceph-dev-cluster.sh`) for tests and benchmarks, stopped on drop.

use super::ffi::{self, PACKAGES};

/// A throw-away Ceph cluster for tests and benchmarks (`scripts/ceph-dev-cluster.sh`),
/// stopped and removed on drop.
pub struct DevCluster {
    pub dir: std::path::PathBuf,
    pub conf: String,
}

impl DevCluster {
    /// Why Ceph tests cannot run here (packages absent), or None.
    pub fn unavailable() -> Option<String> {
        let missing_bin = ["ceph-mon", "ceph-osd", "rbd"].into_iter().find(|b| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
                .unwrap_or(false)
        });
        if let Some(b) = missing_bin {
            return Some(format!(
                "{b} is not installed (apt-get install --no-install-recommends ceph-mon ceph-osd ceph-common {PACKAGES})"
            ));
        }
        ffi::lib().err()
    }

    /// `unavailable()`, except that with POLLUX_REQUIRE_CEPH set (CI, which installs the
    /// packages) a missing piece is a failure, not a skip.
    pub fn unavailable_or_panic() -> Option<String> {
        let why = Self::unavailable()?;
        if std::env::var_os("POLLUX_REQUIRE_CEPH").is_some() {
            panic!("POLLUX_REQUIRE_CEPH is set but Ceph is not usable: {why}");
        }
        Some(why)
    }

    /// Starts a cluster under a fresh temp dir; `script` is scripts/ceph-dev-cluster.sh.
    pub fn start(script: &std::path::Path, tag: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "pollux-ceph-{tag}-{}-{}",
            std::process::id(),
            crate::bdev::random_uuid()
        ));
        let out = std::process::Command::new(script)
            .arg("start")
            .arg(&dir)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let c = DevCluster {
            dir,
            conf: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        };
        if !out.status.success() {
            return Err(format!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(c)
    }

    /// Runs `rbd -c <conf> args...`.
    pub fn rbd(&self, args: &[&str]) -> Result<String, String> {
        let out = std::process::Command::new("rbd")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .map_err(|e| format!("rbd: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "rbd {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Creates image `name` of `mib` MiB in pool rbd (layering only: no exclusive lock).
    pub fn create_image(&self, name: &str, mib: u64) -> Result<(), String> {
        self.rbd(&[
            "create",
            "--size",
            &format!("{mib}M"),
            "--image-feature",
            "layering",
            &format!("rbd/{name}"),
        ])
        .map(|_| ())
    }

    fn script(&self) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-dev-cluster.sh")
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
