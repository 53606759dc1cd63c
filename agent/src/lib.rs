//! bonker's desk agent: the program on the Raspberry Pi at each desk that bonks a toy Tux when a
//! watched Kubernetes namespace has an OOM kill.
//!
//! It subscribes to bonks for its namespaces and its own desk topic, performs each with a servo,
//! acknowledges every bonk it receives exactly once, and publishes a retained status and health
//! report (and, for Home Assistant, discovery configs and a bonk event). It never speaks HTTP: a
//! Pi 1 Model B with 512 MB runs it, so its dependencies stay lean.
//!
//! A tour of the modules:
//! - [`config`]: settings from defaults, TOML, `BONKER_…` variables and flags, validated into an
//!   [`AgentConfig`] before anything starts.
//! - [`agent`]: the [`Agent`], one struct owning the desk's state with a `select!` loop over MQTT
//!   events, servo reports, the health ticker and shutdown; [`run`] is the whole life of an agent.
//! - [`policy`]: duplicates, maximum age and the rate limit.
//! - [`servo`]: the [`servo::Servo`] trait, the rppal and simulated drivers, motion planning and
//!   the worker thread that owns the servo.
//! - [`health`]: machine readings for the health report.
//! - [`forget`]: `--forget`, clearing a retired desk's retained topics.
//! - [`cli`]: the `bonker-agent` command line.
//!
//! `docs/agent.md` covers running it on a Pi; `docs/home-assistant.md` what Home Assistant shows.

mod agent;
pub mod cli;
pub mod config;
mod forget;
mod health;
mod policy;
pub mod servo;

pub use agent::{Agent, VERSION, run};
pub use config::{AgentConfig, AgentSettings};
