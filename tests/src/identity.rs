//! A stand-in OpenID Connect provider for tests: key pairs made in the test, tokens signed with
//! them, and their key set (JWKS) served over loopback HTTP or written to a file.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The issuer the test provider's tokens carry.
pub const ISSUER: &str = "https://idp.test";
/// The audience the test provider's tokens carry.
pub const AUDIENCE: &str = "planledger-api";

/// base64url without padding, as JOSE writes it.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of the provider and its public JWK.
#[derive(Clone)]
pub struct ProviderKey {
    /// Its `kid`.
    pub kid: String,
    /// The algorithm it signs with (RS256 or EdDSA).
    pub alg: Algorithm,
    /// The public key as a JWK.
    pub jwk: Value,
    /// For an RSA key, its public key as PKCS#1 DER (what an algorithm-confusion attacker uses
    /// as an HMAC secret).
    pub public_der: Vec<u8>,
    signing: EncodingKey,
}

impl ProviderKey {
    /// A fresh 2048-bit RSA key (RS256).
    pub fn rsa(kid: &str) -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        use rsa::traits::PublicKeyParts;
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("an RSA key");
        let der = private.to_pkcs1_der().expect("PKCS#1 private key");
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1 public key")
            .as_bytes()
            .to_vec();
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be())}),
            public_der,
            signing: EncodingKey::from_rsa_der(der.as_bytes()),
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        use rsa::rand_core::RngCore;
        let mut seed = [0u8; 32];
        rsa::rand_core::OsRng.fill_bytes(&mut seed);
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = signing.to_pkcs8_der().expect("PKCS#8 private key");
        Self {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": b64(signing.verifying_key().as_bytes())}),
            public_der: Vec::new(),
            signing: EncodingKey::from_ed_der(der.as_bytes()),
        }
    }

    /// A token over `claims`, signed by this key and naming it.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid), claims)
    }

    /// A token over `claims` signed by this key, naming `kid` (or no key).
    pub fn sign_as(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.signing).expect("the token is signed")
    }
}

/// Claims of a valid token for `sub` in `tenant` with `roles`, from the test issuer to the
/// test audience, valid for ten minutes.
pub fn claims(sub: &str, tenant: &str, roles: &[&str]) -> Value {
    let now = jiff::Timestamp::now().as_second();
    json!({"sub": sub, "tenant": tenant, "roles": roles, "iss": ISSUER, "aud": AUDIENCE,
        "iat": now, "nbf": now - 5, "exp": now + 600})
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: &[&ProviderKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A loopback HTTP server answering every GET with the current JWKS, counting the fetches;
/// stopped on drop.
pub struct JwksServer {
    /// The key set URL.
    pub url: String,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

impl JwksServer {
    /// Serves `document` on a free loopback port.
    pub fn start(document: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (document, fetches, stop) = (document.clone(), fetches.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        let body = document.lock().map(|d| d.clone()).unwrap_or_default();
                        answer(stream, &body, &fetches);
                    }
                }
            })
        };
        Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            document,
            fetches,
            stop,
            thread: Some(thread),
            addr,
        }
    }

    /// Serves `document` from now on.
    pub fn publish(&self, document: String) {
        *self.document.lock().expect("the document lock") = document;
    }

    /// Key set fetches answered so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Reads one request's head and answers it with `body`; `true` if it was answered.
/// Answers one request with `body`, counting it in `fetches` once the request has been read and
/// before the answer is written: the service may act on the answer (and the test look at the
/// count) before this thread runs again.
fn answer(stream: TcpStream, body: &str, fetches: &AtomicUsize) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    fetches.fetch_add(1, Ordering::SeqCst);
    let _ = (&stream).write_all(response.as_bytes());
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
