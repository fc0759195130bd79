//! (in progress: the deterministic simulated source)
