//! Sealed sessions open only with the right master key, as the right account, untouched; the
//! store keeps only sealed bytes in TG_SESSIONS and re-seals everything on key rotation.

mod support;

use grammers_session::SessionData;
use grammers_session::types::{PeerAuth, PeerInfo};
use support::TestNats;
use tgingest::bus::{BUCKET_SESSIONS, Bus};
use tgingest::config::Config;
use tgingest::keys::MasterKey;
use tgingest::telegram::session::{
    SEAL_FORMAT_V1, SessionError, SessionSnapshot, SessionStore, StoreError, seal, seal_snapshot,
    unseal, unseal_snapshot,
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

async fn bus(nats: &TestNats) -> Bus {
    let bus = Bus::connect(&nats.url(), &Config::default().nats, "test")
        .await
        .expect("connect");
    bus.setup(&Config::default()).await.expect("setup");
    bus
}

#[tokio::test]
async fn store_keeps_only_sealed_bytes_and_round_trips() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let master = MasterKey::from_bytes([5; 32]);
    let store = SessionStore::open(&bus, master.clone()).await.unwrap();
    let s = snapshot();
    assert_eq!(store.get("acct-a").await.unwrap(), None);
    store.put("acct-a", &s).await.unwrap();
    store.put("acct-b", &s).await.unwrap();
    assert_eq!(store.get("acct-a").await.unwrap(), Some(s.clone()));
    assert_eq!(store.accounts().await.unwrap(), ["acct-a", "acct-b"]);

    // What NATS holds is the sealed blob, not the key.
    let kv = bus.js.get_key_value(BUCKET_SESSIONS).await.unwrap();
    let raw = kv.get("acct-a").await.unwrap().unwrap();
    assert_eq!(raw[0], SEAL_FORMAT_V1);
    assert!(!raw.windows(8).any(|w| w == [0xa5; 8]));
    // A blob copied to another account's key does not open there.
    kv.put("acct-c", raw.clone()).await.unwrap();
    assert!(matches!(
        store.get("acct-c").await,
        Err(StoreError::Session(SessionError::Unseal { .. }))
    ));
    // Another master key opens nothing.
    let other = SessionStore::open(&bus, MasterKey::from_bytes([6; 32]))
        .await
        .unwrap();
    let err = other.get("acct-a").await.unwrap_err().to_string();
    assert!(err.contains("wrong master key or tampered data"), "{err}");

    store.remove("acct-a").await.unwrap();
    store.remove("acct-c").await.unwrap();
    assert_eq!(store.get("acct-a").await.unwrap(), None);
    assert_eq!(store.accounts().await.unwrap(), ["acct-b"]);
    assert!(matches!(
        store.get("bad id").await,
        Err(StoreError::BadAccountId { .. })
    ));
}

#[tokio::test]
async fn rotation_reseals_everything_and_the_old_key_no_longer_opens_it() {
    let nats = TestNats::start();
    let bus = bus(&nats).await;
    let old = MasterKey::from_bytes([7; 32]);
    let new = MasterKey::from_bytes([8; 32]);
    let store = SessionStore::open(&bus, old.clone()).await.unwrap();
    let accounts = ["a1", "a2", "a3"];
    for (i, account) in accounts.iter().enumerate() {
        let mut s = snapshot();
        s.home_dc = i as i32 + 1;
        store.put(account, &s).await.unwrap();
    }
    let report = store.rotate(&old, &new).await.unwrap();
    assert_eq!(report.resealed, accounts);
    assert!(report.already_new.is_empty());

    let rotated = SessionStore::open(&bus, new.clone()).await.unwrap();
    for (i, account) in accounts.iter().enumerate() {
        assert_eq!(
            rotated.get(account).await.unwrap().unwrap().home_dc,
            i as i32 + 1
        );
        assert!(matches!(
            store.get(account).await,
            Err(StoreError::Session(SessionError::Unseal { .. }))
        ));
    }
    // Running it again (as after an interruption) changes nothing and says so.
    let again = store.rotate(&old, &new).await.unwrap();
    assert!(again.resealed.is_empty());
    assert_eq!(again.already_new, accounts);

    // An entry under a third key stops the rotation before anything is written.
    let stray = SessionStore::open(&bus, MasterKey::from_bytes([9; 32]))
        .await
        .unwrap();
    stray.put("a0", &snapshot()).await.unwrap();
    let third = MasterKey::from_bytes([10; 32]);
    let err = rotated.rotate(&new, &third).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::RotateUnopenable { account } if account == "a0"),
        "{err}"
    );
    assert!(rotated.get("a1").await.unwrap().is_some());
}
