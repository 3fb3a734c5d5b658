//! The Kubernetes source (kube-rs watchers). Written by the kube-source work.
