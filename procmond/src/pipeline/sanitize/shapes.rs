//! Credentials recognizable without a key or flag around them: token
//! prefixes (`ghp_`, `AKIA`) and PEM private key markers. Data only, like
//! `rules.rs` (which re-exports it); `scan.rs` does the matching.

/// Bytes a token body may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `A-Z0-9`
    UpperAlnum,
    /// `A-Za-z0-9`
    Alnum,
    /// `A-Za-z0-9_`
    Word,
    /// `A-Za-z0-9-`
    Dashed,
    /// `A-Za-z0-9-_`
    Base64Url,
}

/// A credential recognizable by its prefix, anywhere in any argument. The
/// prefix is kept, the body redacted. `max` 0 means unbounded; a bounded
/// body must end at a word boundary.
#[derive(Debug)]
pub struct TokenShape {
    pub prefix: &'static str,
    pub body: Body,
    pub min: usize,
    pub max: usize,
    /// Who issues these tokens (documentation, checked by the tests).
    #[allow(dead_code)]
    pub source: &'static str,
}

const fn t(
    prefix: &'static str,
    body: Body,
    min: usize,
    max: usize,
    source: &'static str,
) -> TokenShape {
    TokenShape {
        prefix,
        body,
        min,
        max,
        source,
    }
}

/// JSON Web Tokens (`eyJ….eyJ….sig`) are matched in `scan.rs`.
#[rustfmt::skip]
pub const TOKEN_SHAPES: &[TokenShape] = &[
    t("AKIA", Body::UpperAlnum, 16, 16, "AWS access key id"),
    t("ASIA", Body::UpperAlnum, 16, 16, "AWS temporary access key id"),
    t("ghp_", Body::Alnum, 20, 0, "GitHub personal access token"),
    t("gho_", Body::Alnum, 20, 0, "GitHub OAuth token"),
    t("ghu_", Body::Alnum, 20, 0, "GitHub user-to-server token"),
    t("ghs_", Body::Alnum, 20, 0, "GitHub server-to-server token"),
    t("ghr_", Body::Alnum, 20, 0, "GitHub refresh token"),
    t("github_pat_", Body::Word, 20, 0, "GitHub fine-grained token"),
    t("glpat-", Body::Base64Url, 20, 0, "GitLab personal access token"),
    t("gldt-", Body::Base64Url, 20, 0, "GitLab deploy token"),
    t("glrt-", Body::Base64Url, 20, 0, "GitLab runner token"),
    t("xoxb-", Body::Dashed, 10, 0, "Slack bot token"),
    t("xoxa-", Body::Dashed, 10, 0, "Slack app token"),
    t("xoxp-", Body::Dashed, 10, 0, "Slack user token"),
    t("xoxr-", Body::Dashed, 10, 0, "Slack refresh token"),
    t("xoxs-", Body::Dashed, 10, 0, "Slack session token"),
    t("xapp-", Body::Dashed, 10, 0, "Slack app-level token"),
    t("sk_live_", Body::Alnum, 16, 0, "Stripe secret key"),
    t("rk_live_", Body::Alnum, 16, 0, "Stripe restricted key"),
    t("sk_test_", Body::Alnum, 16, 0, "Stripe test secret key"),
    t("whsec_", Body::Alnum, 16, 0, "Stripe webhook secret"),
    t("npm_", Body::Alnum, 30, 0, "npm access token"),
    t("pypi-AgE", Body::Base64Url, 40, 0, "PyPI API token"),
    t("hf_", Body::Alnum, 30, 0, "Hugging Face token"),
    t("AIza", Body::Base64Url, 35, 35, "Google API key"),
    t("sk-ant-", Body::Base64Url, 20, 0, "Anthropic API key"),
    t("sk-proj-", Body::Base64Url, 20, 0, "OpenAI project API key"),
];

/// PEM private key headers: what follows, up to `-----END`, is redacted.
pub const PRIVATE_KEY_MARKERS: &[&str] = &["PRIVATE KEY-----", "PRIVATE KEY BLOCK-----"];

/// First bytes of the token prefixes, plus `e` for JWTs.
pub const TOKEN_FIRST_BYTES: [bool; 256] = {
    let mut set = [false; 256];
    let mut i = 0;
    while i < TOKEN_SHAPES.len() {
        set[TOKEN_SHAPES[i].prefix.as_bytes()[0] as usize] = true;
        i += 1;
    }
    set[b'e' as usize] = true;
    set
};
