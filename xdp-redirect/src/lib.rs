//! Loads the XDP programs that steer frames into AF_XDP sockets.
