//! (in progress: scope filter and redaction)
