//! SCRAM-SHA-256 (RFC 5802, RFC 7677): a salted challenge-response, so that a password never
//! crosses the wire and the broker keeps only what cannot log in by itself.
//!
//! ```text
//!  client-first   n,,n=<user>,r=<client nonce>
//!  server-first   r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
//!  client-final   c=biws,r=<nonce>,p=<base64 ClientKey XOR HMAC(StoredKey, AuthMessage)>
//!  server-final   v=<base64 HMAC(ServerKey, AuthMessage)>       (or e=<error>)
//! ```
//!
//! SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations); ClientKey and ServerKey
//! are HMACs of it; StoredKey = SHA-256(ClientKey). The metadata log stores salt, iterations,
//! StoredKey and ServerKey: computed by the client that creates the user (`shardline user
//! create`), so the broker never sees the password, and never runs PBKDF2 itself.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};

use crate::protocol::UserCredential;

/// The only mechanism.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PBKDF2 rounds of a new credential (RFC 7677's minimum).
pub const ITERATIONS_DEFAULT: u32 = 4_096;
/// The range a credential's rounds must be in: below is weak, above makes logins slow.
pub const ITERATIONS_MIN: u32 = 4_096;
pub const ITERATIONS_MAX: u32 = 1_000_000;
const SALT_BYTES: usize = 16;
const NONCE_BYTES: usize = 18;
const KEY_BYTES: usize = 32;
/// The longest SCRAM message accepted.
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// Why a SCRAM exchange failed. The messages are safe to show the client: none says
/// whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("authentication failed")]
    Failed,
}

fn random(bytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system's random source works");
    out
}

/// A per-process secret for the salts of unknown users.
fn unknown_user_secret() -> &'static [u8] {
    static SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| random(KEY_BYTES))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data).as_ref().to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; KEY_BYTES];
    let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one round");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

/// The stored credential of `name` with `password` (a fresh salt).
pub fn credential(name: &str, password: &str, iterations: u32) -> UserCredential {
    credential_with_salt(name, password, &random(SALT_BYTES), iterations)
}

fn credential_with_salt(
    name: &str,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> UserCredential {
    let salted = salted_password(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    UserCredential {
        name: name.to_string(),
        salt: salt.to_vec(),
        iterations,
        stored_key: sha256(&client_key),
        server_key: hmac_sha256(&salted, b"Server Key"),
    }
}

/// Checks a credential someone asks to store.
pub fn check_credential(credential: &UserCredential) -> Result<(), String> {
    if !super::is_usable_principal(&credential.name) {
        return Err(format!(
            "'{}' cannot be a user name (reserved)",
            credential.name
        ));
    }
    if credential.name.len() > crate::constants::ACL_NAME_BYTES_MAX {
        return Err(format!(
            "a user name has 1 to {} bytes",
            crate::constants::ACL_NAME_BYTES_MAX
        ));
    }
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&credential.iterations) {
        return Err(format!(
            "{} iterations: expected {ITERATIONS_MIN} to {ITERATIONS_MAX}",
            credential.iterations
        ));
    }
    if credential.salt.is_empty() || credential.salt.len() > 64 {
        return Err("a salt has 1 to 64 bytes".into());
    }
    if credential.stored_key.len() != KEY_BYTES || credential.server_key.len() != KEY_BYTES {
        return Err(format!("keys of SCRAM-SHA-256 have {KEY_BYTES} bytes"));
    }
    Ok(())
}

/// Compares without an early exit, so timing tells nothing of where bytes differ.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `a=b` attributes of a message, in order.
fn attributes(message: &str) -> Vec<(char, &str)> {
    message
        .split(',')
        .filter_map(|part| {
            let mut chars = part.chars();
            let key = chars.next()?;
            part.get(1..)?.strip_prefix('=').map(|value| (key, value))
        })
        .collect()
}

fn attribute<'a>(attributes: &[(char, &'a str)], key: char) -> Option<&'a str> {
    attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// A SCRAM user name in a message: `=2C` is `,` and `=3D` is `=`.
fn decode_name(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn utf8(bytes: &[u8]) -> Result<&str, ScramError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(ScramError::Malformed("too long"));
    }
    std::str::from_utf8(bytes).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// The broker's side of one exchange, between its two messages.
#[derive(Debug, Clone)]
pub struct ServerExchange {
    name: String,
    credential: Option<UserCredential>,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

impl ServerExchange {
    /// Answers a client-first message. `lookup` finds the stored credential; an unknown
    /// user gets a made-up salt and fails at the end, like a wrong password.
    pub fn start(
        client_first: &[u8],
        lookup: impl Fn(&str) -> Option<UserCredential>,
    ) -> Result<(ServerExchange, Vec<u8>), ScramError> {
        let text = utf8(client_first)?;
        let bare = text
            .strip_prefix("n,,")
            .ok_or(ScramError::Malformed("expected n,, (no channel binding)"))?;
        let fields = attributes(bare);
        let name = decode_name(attribute(&fields, 'n').ok_or(ScramError::Malformed("no user"))?);
        let client_nonce = attribute(&fields, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if client_nonce.is_empty() {
            return Err(ScramError::Malformed("empty nonce"));
        }
        let credential = lookup(&name);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            // A made-up salt nobody else can compute, so that it does not tell whether the
            // user exists (the iteration count may still differ from a real user's).
            None => (
                hmac_sha256(unknown_user_secret(), name.as_bytes())[..SALT_BYTES].to_vec(),
                ITERATIONS_DEFAULT,
            ),
        };
        let nonce = format!("{client_nonce}{}", BASE64.encode(random(NONCE_BYTES)));
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        let exchange = ServerExchange {
            name,
            credential,
            nonce,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// Checks the client-final message; the authenticated user's name and the server-final
    /// message when the proof holds.
    pub fn finish(&self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let text = utf8(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let fields = attributes(without_proof);
        if attribute(&fields, 'r') != Some(self.nonce.as_str()) {
            return Err(ScramError::Failed);
        }
        if attribute(&fields, 'c') != Some("biws") {
            return Err(ScramError::Malformed("channel binding is not supported"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let credential = self.credential.as_ref().ok_or(ScramError::Failed)?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac_sha256(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::Failed);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !equal_in_constant_time(&sha256(&client_key), &credential.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac_sha256(&credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", BASE64.encode(server_signature));
        Ok((self.name.clone(), server_final.into_bytes()))
    }
}

/// The client's side of one exchange.
#[derive(Debug, Clone)]
pub struct ClientExchange {
    password: String,
    client_nonce: String,
    client_first_bare: String,
    auth_message: Option<String>,
    salted: Option<Vec<u8>>,
}

impl ClientExchange {
    /// The exchange and its client-first message.
    pub fn start(name: &str, password: &str) -> (ClientExchange, Vec<u8>) {
        ClientExchange::start_with_nonce(name, password, &BASE64.encode(random(NONCE_BYTES)))
    }

    fn start_with_nonce(name: &str, password: &str, nonce: &str) -> (ClientExchange, Vec<u8>) {
        let bare = format!("n={},r={nonce}", encode_name(name));
        let exchange = ClientExchange {
            password: password.to_string(),
            client_nonce: nonce.to_string(),
            client_first_bare: bare.clone(),
            auth_message: None,
            salted: None,
        };
        (exchange, format!("n,,{bare}").into_bytes())
    }

    /// The client-final message for the server-first one.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = utf8(server_first)?;
        let fields = attributes(text);
        let nonce = attribute(&fields, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(ScramError::Malformed(
                "the server's nonce does not extend ours",
            ));
        }
        let salt = BASE64
            .decode(attribute(&fields, 's').ok_or(ScramError::Malformed("no salt"))?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = attribute(&fields, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed("no iteration count"))?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError::Malformed("iteration count out of range"));
        }
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.auth_message = Some(auth_message);
        self.salted = Some(salted);
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the broker knew the stored keys too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = utf8(server_final)?;
        let signature = text
            .strip_prefix("v=")
            .ok_or(ScramError::Failed)
            .and_then(|v| BASE64.decode(v).map_err(|_| ScramError::Failed))?;
        let (Some(salted), Some(auth_message)) = (&self.salted, &self.auth_message) else {
            return Err(ScramError::Malformed("verify before respond"));
        };
        let server_key = hmac_sha256(salted, b"Server Key");
        let expected = hmac_sha256(&server_key, auth_message.as_bytes());
        match equal_in_constant_time(&expected, &signature) {
            true => Ok(()),
            false => Err(ScramError::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_exchange_gives_its_proof_and_signature() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let stored = credential_with_salt("user", "pencil", &salt, 4096);
        let (mut client, first) =
            ClientExchange::start_with_nonce("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = client.respond(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final.clone()).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        // The broker's side, with the same nonces.
        let exchange = ServerExchange {
            name: "user".into(),
            credential: Some(stored),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: String::from_utf8(server_first.to_vec()).unwrap(),
        };
        let (name, server_final) = exchange.finish(&client_final).unwrap();
        assert_eq!(name, "user");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        client.verify(&server_final).unwrap();
    }

    fn exchange(name: &str, password: &str, stored: &UserCredential) -> Result<String, ScramError> {
        let (mut client, first) = ClientExchange::start(name, password);
        let lookup = |n: &str| (n == stored.name).then(|| stored.clone());
        let (server, server_first) = ServerExchange::start(&first, lookup)?;
        let client_final = client.respond(&server_first)?;
        let (who, server_final) = server.finish(&client_final)?;
        client.verify(&server_final)?;
        Ok(who)
    }

    #[test]
    fn the_right_password_passes_and_wrong_ones_and_strangers_fail_alike() {
        let stored = credential("al,i=ce", "secret", ITERATIONS_DEFAULT);
        check_credential(&stored).unwrap();
        assert_eq!(exchange("al,i=ce", "secret", &stored).unwrap(), "al,i=ce");
        assert_eq!(
            exchange("al,i=ce", "guess", &stored),
            Err(ScramError::Failed)
        );
        assert_eq!(
            exchange("mallory", "secret", &stored),
            Err(ScramError::Failed)
        );
        // Garbage is refused, never a panic.
        for junk in [&b""[..], b"n,,", b"y,,n=a,r=b", b"\xff\xfe", b"n,,n=a"] {
            assert!(ServerExchange::start(junk, |_| None).is_err());
        }
        let (server, _) =
            ServerExchange::start(b"n,,n=al,r=abc", |_| Some(stored.clone())).unwrap();
        for junk in [
            &b""[..],
            b"c=biws",
            b"c=biws,r=x,p=!!",
            b"c=biws,r=abc,p=AAAA",
        ] {
            assert!(server.finish(junk).is_err());
        }
        let mut weak = stored.clone();
        weak.iterations = 1;
        assert!(check_credential(&weak).is_err());
        for reserved in ["ANONYMOUS", "*", ""] {
            let mut named = stored.clone();
            named.name = reserved.to_string();
            assert!(check_credential(&named).is_err(), "{reserved:?}");
        }
        // A stranger's salt is stable (asking twice tells nothing) but not computable.
        let salt_of = |name: &str| {
            let first = format!("n,,n={name},r=abc");
            let (_, answer) = ServerExchange::start(first.as_bytes(), |_| None).unwrap();
            let answer = String::from_utf8(answer).unwrap();
            attribute(&attributes(&answer), 's').unwrap().to_string()
        };
        assert_eq!(salt_of("mallory"), salt_of("mallory"));
        assert_ne!(
            salt_of("mallory"),
            BASE64.encode(&sha256(b"mallory")[..SALT_BYTES])
        );
    }
}
