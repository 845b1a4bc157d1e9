//! HS256 JWT verification and room allow-lists.
//!
//! Clients present a compact JWS (`header.payload.signature`, base64url) signed with a
//! shared HMAC-SHA256 secret. Only HS256 is accepted: the algorithm is fixed by the
//! server, never chosen by the token, so `alg: none` and algorithm-confusion tricks
//! cannot get through. The claims carry the user (`sub`), the expiry (`exp`) and an
//! optional list of room patterns (`rooms`) that [`room_allowed`] checks on join.
//!
//! Error texts are short and never contain the token: they end up in HTTP 401 bodies
//! and in logs.

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::digest::Key;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// HMAC-SHA256, the only MAC a token may be signed with.
type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes; anything longer is refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How far in the future `nbf` may lie, in seconds, to absorb clock skew between the
/// token issuer and this server.
const NBF_LEEWAY_S: u64 = 60;

/// Longest room pattern in `rooms`, in bytes (the longest room name).
const MAX_ROOM_PATTERN_BYTES: usize = roomcast_common::names::MAX_NAME_BYTES;

/// Header every token made by [`sign`] carries.
const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// base64url without padding on output; on input padding is optional because some
/// issuers pad and padding carries no information.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`); already checked to be a valid roomcast name.
    pub sub: String,
    /// Expiry, Unix seconds (`exp`); the token was valid when this is later than "now".
    pub exp: u64,
    /// Room patterns the user may join (`rooms`); `None` means every room.
    pub rooms: Option<Vec<String>>,
}

/// Why a token was refused; `Display` gives the text for the 401 body and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token was presented.
    Missing,
    /// Not three base64url parts of JSON, or too long.
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    UnsupportedAlgorithm,
    /// The signature does not match the secret.
    BadSignature,
    /// `exp` is at or before now.
    Expired,
    /// A claim is missing or has the wrong shape (which one is carried).
    BadClaims(&'static str),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => write!(f, "missing token"),
            AuthError::Malformed => write!(f, "malformed token"),
            AuthError::UnsupportedAlgorithm => write!(f, "unsupported algorithm"),
            AuthError::BadSignature => write!(f, "bad signature"),
            AuthError::Expired => write!(f, "token expired"),
            AuthError::BadClaims(why) => write!(f, "bad claims: {why}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Checks HS256 tokens against one shared secret.
///
/// The HMAC is keyed once here and cloned per token, so verifying does not redo the key
/// schedule.
#[derive(Clone)]
pub struct Verifier {
    /// HMAC-SHA256 already keyed with the secret.
    mac: HmacSha256,
}

impl fmt::Debug for Verifier {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Verifier {
            mac: keyed_mac(secret),
        }
    }

    /// Verifies `token` and returns its claims, judging times against `now_unix_s`.
    ///
    /// Checks run cheapest and least trusting first: size, shape, algorithm, signature,
    /// and only then the claims, so unsigned input never reaches the claim parser.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header = decode_part(header_b64)?;
        let payload = decode_part(payload_b64)?;
        let signature = decode_part(sig_b64)?;

        let header: Value = serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)?;
        let Value::Object(header) = header else {
            return Err(AuthError::Malformed);
        };
        if header.get("alg").and_then(Value::as_str) != Some("HS256") {
            return Err(AuthError::UnsupportedAlgorithm);
        }

        // The MAC covers the parts exactly as sent (`header.payload`), not re-encoded.
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let mut mac = self.mac.clone();
        mac.update(&token.as_bytes()[..signed_len]);
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;

        let claims: Value = serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed)?;
        let Value::Object(claims) = claims else {
            return Err(AuthError::BadClaims("claims are not an object"));
        };
        parse_claims(&claims, now_unix_s)
    }
}

/// Makes an HS256 token carrying `claims` (tests and the `token` helper command).
pub fn sign(secret: &[u8], claims: &Value) -> String {
    let mut token = B64.encode(HS256_HEADER);
    token.push('.');
    token.push_str(&B64.encode(claims.to_string()));
    let mut mac = keyed_mac(secret);
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    token.push_str(&B64.encode(signature));
    token
}

/// Whether a user holding `patterns` (the `rooms` claim) may join `room`.
///
/// `None` allows every room. Otherwise a pattern allows the room when it matches all of
/// it, `*` standing for any run of characters (possibly empty).
pub fn room_allowed(patterns: Option<&[String]>, room: &str) -> bool {
    match patterns {
        None => true,
        Some(patterns) => patterns.iter().any(|p| glob_match(p, room)),
    }
}

/// Matches `text` against `pattern` where `*` is the only wildcard.
///
/// Iterative with single backtracking to the last `*`: a later star can always absorb
/// whatever an earlier one would have, so O(len(pattern) × len(text)) worst case and no
/// recursion. Byte-wise is exact for UTF-8: a literal after a `*` starts on a character
/// boundary and cannot match a continuation byte.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and where in the text the star's
    // match currently ends.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            pi += 1;
            star = Some((pi, ti));
        } else if p.get(pi) == Some(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((resume, end)) = star {
            // Let the star swallow one more byte and retry the rest of the pattern.
            pi = resume;
            ti = end + 1;
            star = Some((resume, ti));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Decodes one base64url part of a token.
fn decode_part(part: &str) -> Result<Vec<u8>, AuthError> {
    B64.decode(part).map_err(|_| AuthError::Malformed)
}

/// An HMAC-SHA256 keyed with `secret`, without a fallible constructor.
///
/// `Mac::new_from_slice` returns a `Result` although HMAC takes keys of any length;
/// building the key block the way RFC 2104 does (hash keys longer than the block, pad
/// with zeros) gives the identical MAC with no error path to unwrap.
fn keyed_mac(secret: &[u8]) -> HmacSha256 {
    let mut block = Key::<HmacSha256>::default();
    if secret.len() > block.len() {
        let digest = Sha256::digest(secret);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <HmacSha256 as hmac::digest::KeyInit>::new(&block)
}

/// Reads and checks the claims of a token whose signature is already verified.
fn parse_claims(claims: &Map<String, Value>, now_unix_s: u64) -> Result<Claims, AuthError> {
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) => sub,
        _ => return Err(AuthError::BadClaims("sub missing or not a string")),
    };
    // A name starting with `{` is a partition-tagged name to the module (`{tag}bob` is
    // bob): as a user id it would let one user pass as another.
    if roomcast_common::names::check_name(sub.as_bytes()).is_err() || sub.starts_with('{') {
        return Err(AuthError::BadClaims("sub is not a valid name"));
    }

    let exp = match claims.get("exp") {
        Some(Value::Number(exp)) => unix_seconds(exp),
        _ => return Err(AuthError::BadClaims("exp missing or not a number")),
    };

    let rooms = match claims.get("rooms") {
        // `null` is how many issuers write "no restriction"; treat it as absent.
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(parse_rooms(items)?),
        Some(_) => return Err(AuthError::BadClaims("rooms is not an array")),
    };

    let nbf = match claims.get("nbf") {
        None => None,
        Some(Value::Number(nbf)) => Some(unix_seconds(nbf)),
        Some(_) => return Err(AuthError::BadClaims("nbf is not a number")),
    };
    if nbf.is_some_and(|nbf| nbf > now_unix_s.saturating_add(NBF_LEEWAY_S)) {
        return Err(AuthError::BadClaims("not yet valid"));
    }

    if exp <= now_unix_s {
        return Err(AuthError::Expired);
    }
    Ok(Claims {
        sub: sub.clone(),
        exp,
        rooms,
    })
}

/// The `rooms` claim: every item a string of 1 to 256 bytes.
fn parse_rooms(items: &[Value]) -> Result<Vec<String>, AuthError> {
    items
        .iter()
        .map(|item| match item {
            Value::String(p) if !p.is_empty() && p.len() <= MAX_ROOM_PATTERN_BYTES => Ok(p.clone()),
            Value::String(_) => Err(AuthError::BadClaims("room pattern length")),
            _ => Err(AuthError::BadClaims("rooms item is not a string")),
        })
        .collect()
}

/// A NumericDate as whole Unix seconds: fractions dropped, negatives clamped to 0 and
/// huge values saturated (float-to-int `as` casts saturate).
fn unix_seconds(n: &serde_json::Number) -> u64 {
    match n.as_u64() {
        Some(s) => s,
        None => n.as_f64().map_or(0, |s| s as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret";
    const NOW: u64 = 1_700_000_000;

    fn verify(token: &str) -> Result<Claims, AuthError> {
        Verifier::new(SECRET).verify(token, NOW)
    }

    fn token(claims: Value) -> String {
        sign(SECRET, &claims)
    }

    /// A token with an arbitrary header, correctly signed with `SECRET`.
    fn token_with_header(header: &str, claims: &Value) -> String {
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            B64.encode(mac.finalize().into_bytes())
        )
    }

    fn valid_claims() -> Value {
        json!({"sub": "alice", "exp": NOW + 3600, "rooms": ["team-*", "lobby"]})
    }

    #[test]
    fn round_trip() {
        let claims = verify(&token(valid_claims())).unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "alice".into(),
                exp: NOW + 3600,
                rooms: Some(vec!["team-*".into(), "lobby".into()]),
            }
        );
        let claims = verify(&token(json!({"sub": "bob", "exp": NOW + 1}))).unwrap();
        assert_eq!(claims.rooms, None);
    }

    #[test]
    fn keyed_mac_matches_hmac_crate_for_all_key_lengths() {
        for len in [0, 1, 32, 63, 64, 65, 200] {
            let key = vec![0xa5u8; len];
            let mut ours = keyed_mac(&key);
            let mut theirs = HmacSha256::new_from_slice(&key).unwrap();
            ours.update(b"message");
            theirs.update(b"message");
            assert_eq!(
                ours.finalize().into_bytes(),
                theirs.finalize().into_bytes(),
                "key length {len}"
            );
        }
    }

    #[test]
    fn padded_base64_is_accepted() {
        let pad = |p: &str| format!("{p}{}", "=".repeat((4 - p.len() % 4) % 4));
        // Padded signature on an unpadded signing input.
        let t = token(valid_claims());
        let (signing_input, sig) = t.rsplit_once('.').unwrap();
        assert!(pad(sig).ends_with('='));
        assert!(verify(&format!("{signing_input}.{}", pad(sig))).is_ok());
        // An issuer that pads everything signs the padded text, as sent.
        let header = pad(&B64.encode(r#"{"alg":"HS256","kid":"k1"}"#));
        let payload = pad(&B64.encode(valid_claims().to_string()));
        assert!(header.ends_with('='));
        let signing_input = format!("{header}.{payload}");
        let mut mac = keyed_mac(SECRET);
        mac.update(signing_input.as_bytes());
        let sig = pad(&B64.encode(mac.finalize().into_bytes()));
        assert!(verify(&format!("{signing_input}.{sig}")).is_ok());
    }

    #[test]
    fn forged_signature() {
        let t = token(valid_claims());
        let (signing_input, _) = t.rsplit_once('.').unwrap();
        let forged = format!("{signing_input}.{}", B64.encode([0u8; 32]));
        assert_eq!(verify(&forged), Err(AuthError::BadSignature));
        // Payload swapped under a valid signature.
        let other = token(json!({"sub": "mallory", "exp": NOW + 3600}));
        let parts: Vec<&str> = t.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
        assert_eq!(verify(&spliced), Err(AuthError::BadSignature));
    }

    #[test]
    fn wrong_secret() {
        let t = sign(b"other-secret", &valid_claims());
        assert_eq!(verify(&t), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_and_others_are_refused() {
        let claims = valid_claims();
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(claims.to_string())
        );
        assert_eq!(verify(&none), Err(AuthError::UnsupportedAlgorithm));
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":256}"#,
        ] {
            assert_eq!(
                verify(&token_with_header(header, &claims)),
                Err(AuthError::UnsupportedAlgorithm),
                "{header}"
            );
        }
        // `typ` is optional.
        assert!(verify(&token_with_header(r#"{"alg":"HS256"}"#, &claims)).is_ok());
    }

    #[test]
    fn expired() {
        assert_eq!(
            verify(&token(json!({"sub": "a", "exp": NOW}))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify(&token(json!({"sub": "a", "exp": NOW - 1}))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify(&token(json!({"sub": "a", "exp": -5}))),
            Err(AuthError::Expired)
        );
        // Fractional exp: integer part counts.
        assert_eq!(
            verify(&token(json!({"sub": "a", "exp": NOW as f64 + 0.9}))),
            Err(AuthError::Expired)
        );
        let c = verify(&token(json!({"sub": "a", "exp": NOW as f64 + 1.5}))).unwrap();
        assert_eq!(c.exp, NOW + 1);
    }

    #[test]
    fn exp_missing_or_wrong_type() {
        for claims in [json!({"sub": "a"}), json!({"sub": "a", "exp": "soon"})] {
            assert!(matches!(
                verify(&token(claims)),
                Err(AuthError::BadClaims(_))
            ));
        }
    }

    #[test]
    fn bad_sub() {
        for sub in [
            Value::Null,
            json!(""),
            json!("a\nb"),
            json!("bell\u{7}"),
            json!(42),
            json!("x".repeat(257)),
            json!("{6.43}bob"),
        ] {
            let t = token(json!({"sub": sub, "exp": NOW + 60}));
            assert!(matches!(verify(&t), Err(AuthError::BadClaims(_))), "{sub}");
        }
        let t = token(json!({"exp": NOW + 60}));
        assert!(matches!(verify(&t), Err(AuthError::BadClaims(_))));
    }

    #[test]
    fn bad_rooms() {
        for rooms in [
            json!("team-*"),
            json!(["ok", 5]),
            json!([""]),
            json!(["x".repeat(257)]),
            json!({"a": 1}),
        ] {
            let t = token(json!({"sub": "a", "exp": NOW + 60, "rooms": rooms}));
            assert!(
                matches!(verify(&t), Err(AuthError::BadClaims(_))),
                "{rooms}"
            );
        }
        let t = token(json!({"sub": "a", "exp": NOW + 60, "rooms": []}));
        assert_eq!(verify(&t).unwrap().rooms, Some(vec![]));
        let t = token(json!({"sub": "a", "exp": NOW + 60, "rooms": null}));
        assert_eq!(verify(&t).unwrap().rooms, None);
    }

    #[test]
    fn nbf() {
        let ok = token(json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 60}));
        assert!(verify(&ok).is_ok());
        let early = token(json!({"sub": "a", "exp": NOW + 600, "nbf": NOW + 61}));
        assert_eq!(verify(&early), Err(AuthError::BadClaims("not yet valid")));
        let bad = token(json!({"sub": "a", "exp": NOW + 600, "nbf": "now"}));
        assert!(matches!(verify(&bad), Err(AuthError::BadClaims(_))));
    }

    #[test]
    fn malformed() {
        assert_eq!(verify(""), Err(AuthError::Missing));
        let t = token(valid_claims());
        let parts: Vec<&str> = t.split('.').collect();
        // Two and four parts.
        assert_eq!(
            verify(&format!("{}.{}", parts[0], parts[1])),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&format!("{t}.{}", parts[2])),
            Err(AuthError::Malformed)
        );
        assert_eq!(verify("abc"), Err(AuthError::Malformed));
        // Characters outside base64url, in each part.
        assert_eq!(
            verify(&format!("{}!.{}.{}", parts[0], parts[1], parts[2])),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&format!("{}.{}+/.{}", parts[0], parts[1], parts[2])),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(&format!("{}.{}.{}$", parts[0], parts[1], parts[2])),
            Err(AuthError::Malformed)
        );
        // Header that is base64 but not JSON.
        assert_eq!(
            verify(&format!("{}.{}.{}", B64.encode("nope"), parts[1], parts[2])),
            Err(AuthError::Malformed)
        );
        // Correctly signed payload that is not JSON.
        let signing_input = format!("{}.{}", parts[0], B64.encode("not json"));
        let mut mac = keyed_mac(SECRET);
        mac.update(signing_input.as_bytes());
        let t2 = format!(
            "{signing_input}.{}",
            B64.encode(mac.finalize().into_bytes())
        );
        assert_eq!(verify(&t2), Err(AuthError::Malformed));
    }

    #[test]
    fn oversized_token() {
        let t = token(json!({"sub": "a", "exp": NOW + 60, "pad": "x".repeat(9000)}));
        assert!(t.len() > MAX_TOKEN_BYTES);
        assert_eq!(verify(&t), Err(AuthError::Malformed));
    }

    #[test]
    fn display_is_short_and_lower_case() {
        let errors = [
            AuthError::Missing,
            AuthError::Malformed,
            AuthError::UnsupportedAlgorithm,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::BadClaims("not yet valid"),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.is_empty() && text.len() < 60);
            assert_eq!(text, text.to_lowercase());
        }
    }

    #[test]
    fn room_allowed_cases() {
        let pats = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(room_allowed(None, "anything"));
        assert!(!room_allowed(Some(&[]), "lobby"));

        let p = pats(&["team-*", "lobby"]);
        assert!(room_allowed(Some(&p), "team-a"));
        assert!(room_allowed(Some(&p), "team-"));
        assert!(room_allowed(Some(&p), "lobby"));
        assert!(!room_allowed(Some(&p), "lobby2"));
        assert!(!room_allowed(Some(&p), "xteam-a"));
        assert!(!room_allowed(Some(&p), "team"));

        assert!(room_allowed(Some(&pats(&["*"])), ""));
        assert!(room_allowed(Some(&pats(&["*"])), "any room"));

        let ab = pats(&["a*b"]);
        assert!(room_allowed(Some(&ab), "ab"));
        assert!(room_allowed(Some(&ab), "axxb"));
        assert!(room_allowed(Some(&ab), "abbb"));
        assert!(!room_allowed(Some(&ab), "axxbc"));
        assert!(!room_allowed(Some(&ab), "a"));
        assert!(!room_allowed(Some(&ab), "b"));

        let abc = pats(&["a*b*c"]);
        assert!(room_allowed(Some(&abc), "abc"));
        assert!(room_allowed(Some(&abc), "aXbYc"));
        assert!(room_allowed(Some(&abc), "abcbc"));
        assert!(!room_allowed(Some(&abc), "acb"));
        assert!(!room_allowed(Some(&abc), "abcx"));

        assert!(room_allowed(Some(&pats(&["**x**"])), "x"));
        assert!(room_allowed(Some(&pats(&["*é*"])), "café"));
        assert!(!room_allowed(Some(&pats(&["caf*e"])), "café"));
    }

    #[test]
    fn glob_worst_case_is_fast() {
        // Exponential for naive recursive matchers; quadratic at most here.
        let pattern = "a*".repeat(128) + "b";
        let text = "a".repeat(256);
        assert!(!glob_match(&pattern, &text));
    }
}
