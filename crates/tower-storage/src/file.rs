//! File tower storage (in progress).
pub struct FileTowerStorage;
