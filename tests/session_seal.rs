//! Sealed sessions open only with the right master key, as the right account, untouched.

use grammers_session::SessionData;
use grammers_session::types::{PeerAuth, PeerInfo};
use tgingest::keys::MasterKey;
use tgingest::telegram::session::{
    SEAL_FORMAT_V1, SessionError, SessionSnapshot, seal, seal_snapshot, unseal, unseal_snapshot,
};

fn snapshot() -> SessionSnapshot {
    let mut data = SessionData {
        home_dc: 4,
        ..SessionData::default()
    };
    if let Some(dc) = data.dc_options.get_mut(&4) {
        dc.auth_key = Some([0xa5; 256]);
    }
    let peer = PeerInfo::User {
        id: 1234,
        auth: Some(PeerAuth::from_hash(99)),
        bot: Some(false),
        is_self: Some(true),
    };
    data.peer_infos.insert(peer.id(), peer);
    data.updates_state.pts = 17;
    let mut s = SessionSnapshot::from_session_data(&data);
    s.user_id = Some(1234);
    s
}

#[test]
fn snapshot_round_trips_through_the_seal() {
    let master = MasterKey::from_bytes([1; 32]);
    let s = snapshot();
    let sealed = seal_snapshot(&master, "acct-a", &s).unwrap();
    assert_eq!(sealed[0], SEAL_FORMAT_V1);
    assert_eq!(unseal_snapshot(&master, "acct-a", &sealed).unwrap(), s);
    // The key is nowhere in the sealed bytes, and each seal uses a fresh nonce.
    assert!(!sealed.windows(8).any(|w| w == [0xa5; 8]));
    assert_ne!(sealed, seal_snapshot(&master, "acct-a", &s).unwrap());
    // grammers' state survives the trip.
    let data = s.to_session_data();
    assert_eq!(data.home_dc, 4);
    assert_eq!(data.dc_options[&4].auth_key, Some([0xa5; 256]));
    assert_eq!(data.peer_infos.len(), 1);
    assert_eq!(data.updates_state.pts, 17);
}

#[test]
fn wrong_master_key_is_refused_clearly() {
    let sealed = seal(&MasterKey::from_bytes([1; 32]), "acct-a", b"secret").unwrap();
    let err = unseal(&MasterKey::from_bytes([2; 32]), "acct-a", &sealed).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sealed session of account acct-a cannot be opened: wrong master key or tampered data"
    );
}

#[test]
fn a_blob_of_one_account_does_not_open_as_another() {
    let master = MasterKey::from_bytes([1; 32]);
    let sealed = seal(&master, "acct-a", b"secret").unwrap();
    assert_eq!(
        unseal(&master, "acct-b", &sealed),
        Err(SessionError::Unseal {
            account: "acct-b".into()
        })
    );
}

#[test]
fn every_flipped_byte_is_refused() {
    let master = MasterKey::from_bytes([3; 32]);
    let sealed = seal_snapshot(&master, "acct-a", &snapshot()).unwrap();
    for i in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = sealed.clone();
            bad[i] ^= bit;
            let err = unseal(&master, "acct-a", &bad).expect_err("tampered blob opened");
            if i == 0 {
                assert!(matches!(err, SessionError::UnknownFormat { .. }), "{err}");
            } else {
                assert!(
                    matches!(err, SessionError::Unseal { .. }),
                    "byte {i}: {err}"
                );
            }
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let master = MasterKey::from_bytes([3; 32]);
    let sealed = seal(&master, "acct-a", b"a short secret").unwrap();
    for len in 0..sealed.len() {
        let err = unseal(&master, "acct-a", &sealed[..len]).expect_err("truncated blob opened");
        if len < 41 {
            assert_eq!(
                err,
                SessionError::Truncated {
                    account: "acct-a".into(),
                    len
                }
            );
            assert!(err.to_string().contains("truncated"), "{err}");
        } else {
            assert!(matches!(err, SessionError::Unseal { .. }), "{err}");
        }
    }
    // An empty plaintext still seals and opens.
    let empty = seal(&master, "acct-a", b"").unwrap();
    assert_eq!(empty.len(), 41);
    assert_eq!(unseal(&master, "acct-a", &empty).unwrap(), b"");
}

#[test]
fn debug_and_errors_never_show_key_or_plaintext() {
    let s = snapshot();
    let debug = format!("{s:?}");
    assert!(!debug.contains("a5a5") && !debug.contains("165"), "{debug}");
    assert!(!debug.contains("1234"), "{debug}");
    let master = MasterKey::from_bytes([1; 32]);
    let sealed = seal_snapshot(&master, "acct-a", &s).unwrap();
    let err = unseal_snapshot(&MasterKey::from_bytes([9; 32]), "acct-a", &sealed).unwrap_err();
    assert!(!format!("{err:?}").contains("a5"), "{err:?}");
}
