//! Partition tests in the Jepsen style: hosts in network namespaces, a
//! nemesis on a seeded schedule, a recorded history and pure checkers.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod run;
pub mod workload;
