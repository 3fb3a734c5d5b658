//! Zero-copy header views and parse/emit for the frames the engine handles.
