//! Credentials recognizable without a key or flag around them: token
//! prefixes (`ghp_`, `AKIA`), secret segments of webhook URL paths (Slack,
//! Discord, Telegram) and PEM private key markers. Data only, like `rules.rs`
//! (which re-exports it); `scan.rs` does the matching.

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

/// A webhook URL whose path holds its credential: after `prefix`, `keep`
/// path segments are kept and the next one is redacted (only what follows its
/// first `after` byte, when set).
#[derive(Debug)]
pub struct PathSecret {
    /// The host, or a parent domain of it (`discord.com` matches `ptb.discord.com`).
    pub hosts: &'static [&'static str],
    pub prefix: &'static str,
    pub keep: u8,
    pub after: Option<u8>,
    /// Who issues these URLs (documentation, checked by the tests).
    #[allow(dead_code)]
    pub source: &'static str,
}

const fn u(
    hosts: &'static [&'static str],
    prefix: &'static str,
    keep: u8,
    after: Option<u8>,
    source: &'static str,
) -> PathSecret {
    PathSecret {
        hosts,
        prefix,
        keep,
        after,
        source,
    }
}

const DISCORD: &[&str] = &["discord.com", "discordapp.com"];

#[rustfmt::skip]
pub const PATH_SECRETS: &[PathSecret] = &[
    u(&["hooks.slack.com"], "/services/", 2, None, "Slack incoming webhook: /services/T…/B…/SECRET"),
    u(&["hooks.slack.com"], "/workflows/", 3, None, "Slack workflow webhook: /workflows/T…/A…/N…/SECRET"),
    u(&["hooks.slack.com"], "/triggers/", 3, None, "Slack trigger webhook: /triggers/T…/N…/N…/SECRET"),
    u(DISCORD, "/api/webhooks/", 1, None, "Discord webhook: /api/webhooks/ID/TOKEN"),
    u(DISCORD, "/api/v10/webhooks/", 1, None, "Discord webhook, versioned API: /api/v10/webhooks/ID/TOKEN"),
    u(DISCORD, "/api/v9/webhooks/", 1, None, "Discord webhook, versioned API: /api/v9/webhooks/ID/TOKEN"),
    u(&["api.telegram.org"], "/bot", 0, Some(b':'), "Telegram Bot API: /botID:TOKEN/method"),
    u(&["api.telegram.org"], "/file/bot", 0, Some(b':'), "Telegram Bot API files: /file/botID:TOKEN/path"),
];

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
