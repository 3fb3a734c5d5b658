//! Namespace lab: nodes and pods as network namespaces.
