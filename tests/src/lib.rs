//! End-to-end tests that run as root in network namespaces (see tests/lab_*.rs).
