//! Throughput and cost measurements of the dataplane.
