//! Sealing: XChaCha20-Poly1305 under the account's own key, so a blob opens only with the right
//! master key and only as the account it was sealed for.
//!
//! Layout: `format (1 byte) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`. The AAD is
//! `format ‖ account id`, so a changed format byte or a blob copied to another account's key in
//! the bucket fails like a tampered one.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::SessionSnapshot;
use crate::codec::{self, CodecError};
use crate::keys::{KeyPurpose, MasterKey};

/// Format byte of XChaCha20-Poly1305 with a random 24-byte nonce.
pub const SEAL_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The shortest sealed blob: format byte, nonce and tag around an empty plaintext.
const MIN_SEALED_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why a session could not be sealed or opened. Never carries key or session bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error(
        "sealed session of account {account} cannot be opened: wrong master key or tampered data"
    )]
    Unseal { account: String },
    #[error(
        "sealed session of account {account} is truncated: {len} bytes, \
         a sealed session has at least {MIN_SEALED_LEN}"
    )]
    Truncated { account: String, len: usize },
    #[error(
        "sealed session of account {account} has unknown format byte {format:#04x}; \
         this build reads format {SEAL_FORMAT_V1:#04x}"
    )]
    UnknownFormat { account: String, format: u8 },
    #[error("cannot seal the session of account {account}: it is too large to encrypt")]
    Seal { account: String },
    #[error("session of account {account} opened but does not decode: {source}")]
    Decode { account: String, source: CodecError },
    #[error("cannot encode the session of account {account}: {source}")]
    Encode { account: String, source: CodecError },
}

/// The account's cipher; the derived key is wiped once the cipher holds it.
fn cipher(master: &MasterKey, account_id: &str) -> XChaCha20Poly1305 {
    let key = master.derive_for(KeyPurpose::SessionSeal, account_id);
    XChaCha20Poly1305::new(key.bytes().into())
}

fn aad(format: u8, account_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + account_id.len());
    aad.push(format);
    aad.extend_from_slice(account_id.as_bytes());
    aad
}

/// Encrypts `plaintext` for `account_id` under a fresh random nonce.
pub fn seal(
    master: &MasterKey,
    account_id: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, SessionError> {
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let nonce = XNonce::from(nonce_bytes);
    let aad = aad(SEAL_FORMAT_V1, account_id);
    let ciphertext = cipher(master, account_id)
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| SessionError::Seal {
            account: account_id.to_string(),
        })?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(SEAL_FORMAT_V1);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens bytes written by [`seal`] for the same account under the same master key.
pub fn unseal(
    master: &MasterKey,
    account_id: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, SessionError> {
    let account = || account_id.to_string();
    if sealed.len() < MIN_SEALED_LEN {
        return Err(SessionError::Truncated {
            account: account(),
            len: sealed.len(),
        });
    }
    let format = sealed[0];
    if format != SEAL_FORMAT_V1 {
        return Err(SessionError::UnknownFormat {
            account: account(),
            format,
        });
    }
    let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
    let aad = aad(format, account_id);
    cipher(master, account_id)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| SessionError::Unseal { account: account() })
}

/// Encodes a snapshot with [`crate::codec`] and seals it.
pub fn seal_snapshot(
    master: &MasterKey,
    account_id: &str,
    snapshot: &SessionSnapshot,
) -> Result<Vec<u8>, SessionError> {
    let plain = Wiped(
        codec::encode(snapshot).map_err(|source| SessionError::Encode {
            account: account_id.to_string(),
            source,
        })?,
    );
    seal(master, account_id, &plain.0)
}

/// Opens a sealed snapshot and decodes it.
pub fn unseal_snapshot(
    master: &MasterKey,
    account_id: &str,
    sealed: &[u8],
) -> Result<SessionSnapshot, SessionError> {
    let plain = Wiped(unseal(master, account_id, sealed)?);
    codec::decode(&plain.0).map_err(|source| SessionError::Decode {
        account: account_id.to_string(),
        source,
    })
}

/// Plaintext session bytes, wiped when dropped.
struct Wiped(Vec<u8>);

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}
