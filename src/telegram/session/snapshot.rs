//! What the grammers adapter persists for one account: everything in grammers' `SessionData`,
//! in a form serde (and so [`crate::codec`]) can write.

use std::fmt;

use grammers_session::SessionData;
use grammers_session::types::{DcOption, PeerInfo, UpdatesState};
use serde::{Deserialize, Serialize};

/// One account's Telegram session: home DC, DC options with their auth keys, cached peers and the
/// update state. `Debug` names the DCs that hold a key and counts peers; it never shows a key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    /// The DC the account lives on.
    pub home_dc: i32,
    /// Known DCs, each with the permanent auth key once one exists; sorted by id.
    pub dc_options: Vec<DcOption>,
    /// Peers cached by the client (access hashes), so it can address chats after a restart.
    pub peer_infos: Vec<PeerInfo>,
    /// Where the account's update sequence stands.
    pub updates_state: UpdatesState,
    /// The logged-in user's id, when the source said so (Pyrogram strings carry it).
    pub user_id: Option<i64>,
    /// Whether the session belongs to Telegram's test servers.
    pub test_mode: bool,
}

impl SessionSnapshot {
    /// The snapshot of grammers' in-memory session state.
    pub fn from_session_data(data: &SessionData) -> Self {
        let mut dc_options: Vec<DcOption> = data.dc_options.values().cloned().collect();
        dc_options.sort_by_key(|dc| dc.id);
        let mut peer_infos: Vec<PeerInfo> = data.peer_infos.values().cloned().collect();
        peer_infos.sort_by_key(|p| p.id().bot_api_dialog_id());
        SessionSnapshot {
            home_dc: data.home_dc,
            dc_options,
            peer_infos,
            updates_state: data.updates_state.clone(),
            user_id: None,
            test_mode: false,
        }
    }

    /// grammers' session state, to load into a `Session` with `SessionData::import_to`.
    ///
    /// The DC options are exactly the stored ones (grammers' built-in production DCs only when
    /// none are stored), so a session for Telegram's test DCs or a DC of one's own never gains
    /// production addresses on the way.
    pub fn to_session_data(&self) -> SessionData {
        let mut data = SessionData {
            home_dc: self.home_dc,
            ..SessionData::default()
        };
        if !self.dc_options.is_empty() {
            data.dc_options.clear();
        }
        for dc in &self.dc_options {
            data.dc_options.insert(dc.id, dc.clone());
        }
        for peer in &self.peer_infos {
            data.peer_infos.insert(peer.id(), peer.clone());
        }
        data.updates_state = self.updates_state.clone();
        data
    }

    /// The auth key for the home DC, if the session has one.
    pub fn home_auth_key(&self) -> Option<&[u8; 256]> {
        self.dc_options
            .iter()
            .find(|dc| dc.id == self.home_dc)
            .and_then(|dc| dc.auth_key.as_ref())
    }
}

impl fmt::Debug for SessionSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyed: Vec<i32> = self
            .dc_options
            .iter()
            .filter(|dc| dc.auth_key.is_some())
            .map(|dc| dc.id)
            .collect();
        f.debug_struct("SessionSnapshot")
            .field("home_dc", &self.home_dc)
            .field("dc_count", &self.dc_options.len())
            .field("dcs_with_auth_key", &keyed)
            .field("peer_count", &self.peer_infos.len())
            .field("user_id_known", &self.user_id.is_some())
            .field("test_mode", &self.test_mode)
            .finish_non_exhaustive()
    }
}
