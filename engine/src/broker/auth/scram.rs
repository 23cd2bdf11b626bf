//! SCRAM server side (RFC 5802, RFC 7677): SCRAM-SHA-256 and SCRAM-SHA-512 as Kafka offers
//! them. The broker stores only salt, iterations, StoredKey = H(HMAC(SaltedPassword,
//! "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key"), never a password.
//!
//! Exchange: client-first `n,,n=user,r=cnonce` → server-first `r=cnonce+snonce,s=salt,i=iter`
//! → client-final `c=biws,r=nonce,p=proof` → server-final `v=ServerSignature`. The proof is
//! checked as H(proof XOR HMAC(StoredKey, AuthMessage)) == StoredKey, in constant time.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Kafka's bounds on SCRAM iterations (ScramMechanism: 4096..16384).
pub const ITERATIONS_MIN: i32 = 4096;
pub const ITERATIONS_MAX: i32 = 16384;
/// Longest SCRAM message accepted (user names and nonces are short).
const MESSAGE_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        match self {
            ScramHash::Sha256 => {
                let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = <Hmac<sha2::Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }
    pub fn h(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }
    /// RFC 5802 Hi(password, salt, i): PBKDF2 with HMAC of this hash.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out),
            ScramHash::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, &mut out),
        }
        out
    }
}

/// What the broker stores for one user and mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramCredential(iterations {})", self.iterations)
    }
}

impl ScramCredential {
    /// From the salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(hash: ScramHash, salt: &[u8], iterations: i32, salted: &[u8]) -> ScramCredential {
        let client_key = hash.hmac(salted, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.h(&client_key),
            server_key: hash.hmac(salted, b"Server Key"),
        }
    }
    /// From a password (tools and tests; the broker never keeps it).
    pub fn from_password(hash: ScramHash, password: &str, salt: &[u8], iterations: i32) -> ScramCredential {
        let salted = hash.salted_password(password.as_bytes(), salt, iterations.max(1) as u32);
        ScramCredential::from_salted(hash, salt, iterations, &salted)
    }
}

/// Equal in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SCRAM exchange in progress on one connection (after the client-first message).
#[derive(Clone)]
pub struct ScramServer {
    hash: ScramHash,
    user: String,
    /// None: unknown user; the exchange goes on with a made-up salt and fails at the proof,
    /// so that a client cannot tell unknown users from wrong passwords.
    cred: Option<ScramCredential>,
    fake_salt: Vec<u8>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramServer({:?}, user {:?})", self.hash, self.user)
    }
}

/// RFC 5802 saslname: `=2C` is ',' and `=3D` is '='; any other '=' is invalid.
fn decode_saslname(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("invalid '=' escape in user name".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ScramServer {
    /// Parse client-first; `lookup` finds the user's credential. Returns the exchange and the
    /// server-first message. Err: a malformed message (authentication fails).
    pub fn start(
        hash: ScramHash,
        client_first: &[u8],
        server_nonce: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ScramServer, Vec<u8>), String> {
        if client_first.len() > MESSAGE_MAX {
            return Err("SCRAM client-first message too long".into());
        }
        let msg = std::str::from_utf8(client_first).map_err(|_| "SCRAM client-first message is not UTF-8".to_string())?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or("SCRAM client-first message: no gs2 header")?;
        let bare = parts.next().ok_or("SCRAM client-first message: no gs2 header")?;
        match cbind {
            "n" | "y" => {}
            _ => return Err("SCRAM channel binding is not supported".into()),
        }
        let authzid = match authzid {
            "" => None,
            a => Some(decode_saslname(a.strip_prefix("a=").ok_or("SCRAM authzid must start with a=")?)?),
        };
        let mut user = None;
        let mut cnonce = None;
        for attr in bare.split(',') {
            if let Some(v) = attr.strip_prefix("n=") {
                user = Some(decode_saslname(v)?);
            } else if let Some(v) = attr.strip_prefix("r=") {
                cnonce = Some(v.to_string());
            } else if attr.starts_with("m=") {
                return Err("SCRAM mandatory extension not supported".into());
            } else if attr.starts_with("tokenauth=") {
                return Err("SCRAM delegation tokens are not supported".into());
            }
            // Other extensions (Kafka's key=value) are ignored.
        }
        let user = user.filter(|u| !u.is_empty()).ok_or("SCRAM client-first message: no user name")?;
        let cnonce = cnonce.filter(|n| printable_nonce(n)).ok_or("SCRAM client-first message: no valid nonce")?;
        if authzid.as_ref().is_some_and(|a| *a != user) {
            return Err("SCRAM authorization id differs from the user name".into());
        }
        let cred = lookup(&user);
        let fake_salt: Vec<u8> = if cred.is_none() { hash.h(user.as_bytes())[..16].to_vec() } else { Vec::new() };
        let (salt, iterations) = match &cred {
            Some(c) => (c.salt.as_slice(), c.iterations),
            None => (fake_salt.as_slice(), ITERATIONS_MIN),
        };
        let nonce = format!("{cnonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        // Everything before the bare message ("n,," or "n,a=user,"), echoed base64 in `c=`.
        let gs2_header = msg[..msg.len() - bare.len()].to_string();
        let s = ScramServer {
            hash,
            user,
            cred,
            fake_salt,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((s, server_first.into_bytes()))
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Check client-final; Ok(server-final) when the proof is right.
    pub fn finish(&self, client_final: &[u8]) -> Result<Vec<u8>, String> {
        if client_final.len() > MESSAGE_MAX {
            return Err("SCRAM client-final message too long".into());
        }
        let msg = std::str::from_utf8(client_final).map_err(|_| "SCRAM client-final message is not UTF-8".to_string())?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or("SCRAM client-final message: no proof")?;
        let mut cbind = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                cbind = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let expected_cbind = B64.encode(self.gs2_header.as_bytes());
        if cbind != Some(expected_cbind.as_str()) {
            return Err("SCRAM channel binding does not match".into());
        }
        // RFC 5802 wants the nonce echoed exactly. librdkafka 2.0.2 (Debian 12's kcat) sends its
        // client nonce once more in front of it; Kafka accepted that for years (its server
        // checked that the nonce ends with the server-first nonce), and so do we: the nonce
        // still has to carry this exchange's fresh server nonce, and the proof covers the whole
        // message as sent.
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return Err("SCRAM nonce does not match".into());
        }
        let proof = B64.decode(proof).map_err(|_| "SCRAM proof is not base64".to_string())?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let Some(cred) = &self.cred else {
            let _ = &self.fake_salt;
            return Err("Authentication failed: Invalid user credentials".into());
        };
        let client_signature = self.hash.hmac(&cred.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err("Authentication failed: Invalid user credentials".into());
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        if !constant_time_eq(&self.hash.h(&client_key), &cred.stored_key) {
            return Err("Authentication failed: Invalid user credentials".into());
        }
        let server_signature = self.hash.hmac(&cred.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// A fresh server nonce (printable, no ',').
pub fn server_nonce() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_test_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::from_password(ScramHash::Sha256, "pencil", &salt, 4096);
        let (s, server_first) = ScramServer::start(
            ScramHash::Sha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            |u| (u == "user").then(|| cred.clone()),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = s
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // One flipped proof bit fails.
        let err = s
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVU=")
            .unwrap_err();
        assert!(err.contains("Invalid user credentials"), "{err}");
        // A nonce that is not the server's fails.
        assert!(s.finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").is_err());
    }

    /// A client computing its proof per RFC 5802 (SHA-512), against the server.
    fn client_proof(hash: ScramHash, password: &str, client_first_bare: &str, server_first: &str, without_proof: &str) -> String {
        let mut salt = None;
        let mut iters = 0;
        for a in server_first.split(',') {
            if let Some(v) = a.strip_prefix("s=") {
                salt = Some(B64.decode(v).unwrap());
            }
            if let Some(v) = a.strip_prefix("i=") {
                iters = v.parse().unwrap();
            }
        }
        let salted = hash.salted_password(password.as_bytes(), &salt.unwrap(), iters);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.h(&client_key);
        let am = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hash.hmac(&stored, am.as_bytes());
        B64.encode(client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect::<Vec<u8>>())
    }

    #[test]
    fn sha512_exchange_right_and_wrong_password_and_unknown_user() {
        let cred = ScramCredential::from_password(ScramHash::Sha512, "s3cret", b"saltsaltsalt", 4096);
        for (user, password, ok) in [("alice", "s3cret", true), ("alice", "wrong", false), ("mallory", "s3cret", false)] {
            let bare = format!("n={user},r=abcdef");
            let (s, sf) = ScramServer::start(ScramHash::Sha512, format!("n,,{bare}").as_bytes(), "XYZ", |u| {
                (u == "alice").then(|| cred.clone())
            })
            .unwrap();
            let sf = String::from_utf8(sf).unwrap();
            assert!(sf.starts_with("r=abcdefXYZ,s="), "{sf}");
            let without = "c=biws,r=abcdefXYZ";
            let p = client_proof(ScramHash::Sha512, password, &bare, &sf, without);
            let r = s.finish(format!("{without},p={p}").as_bytes());
            assert_eq!(r.is_ok(), ok, "{user}/{password}: {r:?}");
        }
    }

    #[test]
    fn malformed_client_first_is_refused() {
        for m in [&b"p=tls-unique,,n=u,r=x"[..], b"n,,r=x", b"n,,n=u", b"n,a=other,n=u,r=x", b"n,,n=u=zz,r=x", b"\xff", b"n,,n=u,r=x,tokenauth=true"] {
            assert!(ScramServer::start(ScramHash::Sha256, m, "s", |_| None).is_err(), "{:?}", String::from_utf8_lossy(m));
        }
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
    }
}
