//! (in progress: grammers updates to Events)
