//! bonker's benchmark harness: measures bonker on one machine and writes `docs/benchmarks.md` and
//! the latency plot. The `bonker-bench` binary drives it; `scripts/bench` builds and runs that.
//!
//! It is a program, not a test: it runs release builds of the real binaries as separate processes
//! (so the kernel accounts each one's CPU and memory), takes minutes, and its figures depend on
//! the machine. The sections, each bounded in time:
//! - [`latency`]: webhook POST → 200, and the closed loop POST → every desk acked for fleets of 1
//!   to 1000 desks, on the embedded broker and on mosquitto, each against its floor (the same
//!   fan-out by bare MQTT clients, [`floor`]);
//! - [`throughput`]: alerts per second ingested with concurrent senders, with per-process CPU;
//! - [`footprint`]: binary sizes, the agent's memory and CPU idle and bonked;
//! - [`delivery`]: a burst of concurrent webhooks, every bonk and ack counted;
//! - [`kill_window`]: the gateway's memory for the kills it remembers, at and beyond its cap.
//!
//! Supporting modules: [`stack`] (the processes of one fleet), [`desks`] (the in-process fleet
//! that `bonker-bench desks` runs), [`floor`] (the bare clients `bonker-bench floor-desks` runs,
//! and the floor's publisher and observer), [`observer`] (the harness's MQTT client), [`http`] (a lean
//! HTTP client and Alertmanager payloads), [`procstat`], [`machine`], [`stats`], [`report`] and
//! [`plot`].

pub mod delivery;
pub mod desks;
pub mod floor;
pub mod footprint;
pub mod http;
pub mod kill_window;
pub mod latency;
pub mod machine;
pub mod observer;
pub mod plot;
pub mod process;
pub mod procstat;
pub mod report;
pub mod stack;
pub mod stats;
pub mod throughput;
