//! Server-side MTProto 2.0 message encryption.
//!
//! grammers-crypto only implements the client's half (its `Side` enum is private), so the fake
//! derives the AES-IGE key and IV itself: `x = 0` for client→server, `x = 8` for server→client.

use grammers_crypto::{AuthKey, DequeBuffer, aes};
use sha2::{Digest, Sha256};

/// Why an incoming ciphertext was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Shorter than the header or not a whole number of AES blocks.
    #[error("ciphertext of {0} bytes is not a valid MTProto 2.0 payload")]
    BadLength(usize),
    /// The SHA-256 based `msg_key` does not match the decrypted plaintext.
    #[error("msg_key mismatch: the client used another key or the payload is corrupt")]
    MsgKeyMismatch,
}

/// A pre-shared authorization key plus the derived `auth_key_id`.
#[derive(Clone)]
pub struct ServerKey {
    data: [u8; 256],
    id: [u8; 8],
}

impl ServerKey {
    /// Wraps a 256-byte authorization key.
    pub fn new(data: [u8; 256]) -> Self {
        Self {
            id: key_id(&data),
            data,
        }
    }

    /// The 64-bit `auth_key_id` (low 8 bytes of SHA-1 of the key) as the wire carries it.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    fn calc_key(&self, msg_key: &[u8; 16], x: usize) -> ([u8; 32], [u8; 32]) {
        let a = Sha256::new()
            .chain_update(msg_key)
            .chain_update(&self.data[x..x + 36])
            .finalize();
        let b = Sha256::new()
            .chain_update(&self.data[40 + x..40 + x + 36])
            .chain_update(msg_key)
            .finalize();
        let mut key = [0u8; 32];
        key[0..8].copy_from_slice(&a[0..8]);
        key[8..24].copy_from_slice(&b[8..24]);
        key[24..32].copy_from_slice(&a[24..32]);
        let mut iv = [0u8; 32];
        iv[0..8].copy_from_slice(&b[0..8]);
        iv[8..24].copy_from_slice(&a[8..24]);
        iv[24..32].copy_from_slice(&b[24..32]);
        (key, iv)
    }

    fn msg_key(&self, plaintext: &[u8], x: usize) -> [u8; 16] {
        let large = Sha256::new()
            .chain_update(&self.data[88 + x..88 + x + 32])
            .chain_update(plaintext)
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&large[8..24]);
        out
    }

    /// Decrypts a client→server payload (`auth_key_id ‖ msg_key ‖ ciphertext`), checking msg_key.
    pub fn decrypt_from_client(&self, payload: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if payload.len() < 24 + 16 || !(payload.len() - 24).is_multiple_of(16) {
            return Err(CryptoError::BadLength(payload.len()));
        }
        let mut msg_key = [0u8; 16];
        msg_key.copy_from_slice(&payload[8..24]);
        let (key, iv) = self.calc_key(&msg_key, 0);
        let mut plain = payload[24..].to_vec();
        aes::ige_decrypt(&mut plain, &key, &iv);
        if self.msg_key(&plain, 0) != msg_key {
            return Err(CryptoError::MsgKeyMismatch);
        }
        Ok(plain)
    }

    /// Encrypts a server→client plaintext (salt, session id, message), adding 12–1024 bytes of
    /// random padding, and returns `auth_key_id ‖ msg_key ‖ ciphertext`.
    pub fn encrypt_to_client(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut plain = plaintext.to_vec();
        let padding = 16 + (16 - plain.len() % 16);
        let mut pad = [0u8; 32];
        rand::fill(&mut pad[..]);
        plain.extend_from_slice(&pad[..padding]);
        let msg_key = self.msg_key(&plain, 8);
        let (key, iv) = self.calc_key(&msg_key, 8);
        aes::ige_encrypt(&mut plain, &key, &iv);
        let mut out = Vec::with_capacity(24 + plain.len());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&msg_key);
        out.extend_from_slice(&plain);
        out
    }
}

/// `auth_key_id` without a SHA-1 dependency: grammers' own client-side encryption writes the id
/// of the key in the first eight bytes of its output, so encrypt one dummy block and read them.
fn key_id(data: &[u8; 256]) -> [u8; 8] {
    let key = AuthKey::from_bytes(*data);
    let mut buffer = DequeBuffer::with_capacity(64, 32);
    buffer.extend([0u8; 16]);
    grammers_crypto::encrypt_data_v2(&mut buffer, &key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&buffer[..8]);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 256] {
        let mut k = [0u8; 256];
        for (i, b) in k.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        k
    }

    #[test]
    fn client_ciphertext_decrypts_on_the_server() {
        let data = key();
        let mut buffer = DequeBuffer::with_capacity(256, 64);
        buffer.extend((0u8..64).collect::<Vec<_>>());
        grammers_crypto::encrypt_data_v2(&mut buffer, &AuthKey::from_bytes(data));
        let server = ServerKey::new(data);
        assert_eq!(&buffer[..8], &server.id());
        let plain = server.decrypt_from_client(&buffer[..]).expect("decrypts");
        assert_eq!(&plain[..64], &(0u8..64).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn server_ciphertext_decrypts_on_the_client() {
        let data = key();
        let server = ServerKey::new(data);
        let plaintext: Vec<u8> = (0u8..48).collect();
        let mut wire = server.encrypt_to_client(&plaintext);
        let plain = grammers_crypto::decrypt_data_v2(&mut wire, &AuthKey::from_bytes(data))
            .expect("client accepts the server's msg_key");
        assert_eq!(&plain[..48], &plaintext[..]);
    }
}
