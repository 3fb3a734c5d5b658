//! Sizes and switches for one worker's UMEM and its ports.

use crate::error::XskError;

/// How a port binds to its device queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Let the kernel pick: zero-copy where the driver supports it, else copy.
    #[default]
    Auto,
    /// Force copy mode (`XDP_COPY`); what veth and generic XDP give anyway.
    Copy,
    /// Require zero-copy (`XDP_ZEROCOPY`); binding fails where unsupported.
    ZeroCopy,
}

/// Configuration of one worker's UMEM and the rings of each port it opens.
///
/// Ring sizes must be powers of two (a kernel rule). `frame_size` must be a
/// power of two between 2048 and 4096 (aligned chunk mode, chunks may not
/// straddle a page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// Frames in the UMEM, shared by all ports of the worker.
    pub frame_count: u32,
    /// Bytes per frame (UMEM chunk).
    pub frame_size: u32,
    /// Descriptors in each port's RX ring.
    pub rx_ring: u32,
    /// Descriptors in each port's TX ring.
    pub tx_ring: u32,
    /// Entries in each port's fill ring.
    pub fill_ring: u32,
    /// Entries in each port's completion ring.
    pub comp_ring: u32,
    /// Try 2 MiB hugepages for the UMEM; falls back to normal pages with a warning.
    pub hugepages: bool,
    /// Bind with `XDP_USE_NEED_WAKEUP` so syscalls happen only when the kernel asks.
    pub need_wakeup: bool,
    /// Copy, zero-copy, or let the kernel choose.
    pub bind_mode: BindMode,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_count: 4096,
            frame_size: 4096,
            rx_ring: 1024,
            tx_ring: 1024,
            fill_ring: 1024,
            comp_ring: 1024,
            hugepages: true,
            need_wakeup: true,
            bind_mode: BindMode::Auto,
        }
    }
}

impl XskConfig {
    /// Checks the rules the kernel would otherwise reject at bind time.
    pub fn validate(&self) -> Result<(), XskError> {
        let invalid =
            |field: &'static str, reason: &'static str| XskError::InvalidConfig { field, reason };
        if !(2048..=4096).contains(&self.frame_size) || !self.frame_size.is_power_of_two() {
            return Err(invalid("frame_size", "must be 2048 or 4096"));
        }
        if self.frame_count == 0 {
            return Err(invalid("frame_count", "must be at least 1"));
        }
        if u64::from(self.frame_count) * u64::from(self.frame_size) > 1 << 40 {
            return Err(invalid("frame_count", "UMEM larger than 1 TiB"));
        }
        for (field, size) in [
            ("rx_ring", self.rx_ring),
            ("tx_ring", self.tx_ring),
            ("fill_ring", self.fill_ring),
            ("comp_ring", self.comp_ring),
        ] {
            if size == 0 || !size.is_power_of_two() || size > 1 << 24 {
                return Err(invalid(field, "must be a power of two between 1 and 2^24"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        XskConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_sizes() {
        let bad = [
            XskConfig {
                frame_size: 3000,
                ..Default::default()
            },
            XskConfig {
                frame_size: 8192,
                ..Default::default()
            },
            XskConfig {
                frame_count: 0,
                ..Default::default()
            },
            XskConfig {
                rx_ring: 1000,
                ..Default::default()
            },
            XskConfig {
                comp_ring: 0,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(
                matches!(cfg.validate(), Err(XskError::InvalidConfig { .. })),
                "{cfg:?}"
            );
        }
    }
}
