//! Directives as the leader sends them to a node manager, for tests that
//! play the leader (the fake supervisor's scripted replies).

use proto::heartbeat::{Directive, Install, Prefetch, Restore, Stop};
use proto::manifest::ConfigPackage;
use proto::spec::Fencing;

use crate::package::BuiltPackage;

/// The install directive for a module made of `packages` (dependencies
/// first, its own package last), downloaded from `depmgr`.
pub fn install(
    module: &str,
    epoch: u64,
    fencing: Fencing,
    packages: &[&BuiltPackage],
    depmgr: &str,
) -> Directive {
    let own = packages.last().expect("at least the module's own package");
    Directive::Install(Install {
        module: module.into(),
        epoch,
        fencing,
        package: ConfigPackage {
            manifest: own.manifest.clone(),
            artifacts: packages.iter().map(|p| p.artifact()).collect(),
        },
        depmgr: depmgr.into(),
    })
}

/// Restore number `seq` of `module` at `epoch`, with no backoff.
pub fn restore(module: &str, epoch: u64, seq: u32) -> Directive {
    Directive::Restore(Restore {
        module: module.into(),
        epoch,
        seq,
        backoff_ms: 0,
    })
}

pub fn stop(module: &str, epoch: u64) -> Directive {
    Directive::Stop(Stop {
        module: module.into(),
        epoch,
    })
}

/// The prefetch (pre-staging) directive for a module made of `packages`
/// (dependencies first, its own package last), placed elsewhere at `epoch`.
pub fn prefetch(module: &str, epoch: u64, packages: &[&BuiltPackage], depmgr: &str) -> Directive {
    let own = packages.last().expect("at least the module's own package");
    Directive::Prefetch(Prefetch {
        module: module.into(),
        epoch,
        package: ConfigPackage {
            manifest: own.manifest.clone(),
            artifacts: packages.iter().map(|p| p.artifact()).collect(),
        },
        depmgr: depmgr.into(),
    })
}
