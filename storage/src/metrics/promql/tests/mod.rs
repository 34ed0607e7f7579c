//! Evaluator tests: scripts in Prometheus's test notation (see `testload`) with
//! expected values from Prometheus's own test data or computed by hand, plus the
//! error and limit cases.

mod aggregations;
mod api;
mod functions;
mod operators;
mod selectors;
