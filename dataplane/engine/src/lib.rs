//! The packet engine: pinned workers running rx -> pipeline -> tx.
