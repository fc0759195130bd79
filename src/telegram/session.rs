//! (in progress: sealed sessions and session-string import)
