//! The macOS service files in config/ checked as text on every platform:
//! launchd must run the binary inside procmond.app (whose embedded
//! provisioning profile authorises the EndpointSecurity entitlement), the
//! bundle's Info.plist must name that binary, and the entitlements must tie
//! it to the profile. Whether macOS accepts them is checked on a Mac only
//! (docs/platforms.md, macOS).

const AGENT_PLIST: &str = include_str!("../../../../../config/procmond.agent.plist");
const DEV_PLIST: &str = include_str!("../../../../../config/procmond.agent.dev.plist");
const INFO_PLIST: &str = include_str!("../../../../../config/macos/Info.plist");
const BUNDLE_ENTITLEMENTS: &str = include_str!("../../../../../config/macos/procmond.entitlements");
const DEV_ENTITLEMENTS: &str = include_str!("../../../../../config/procmond.entitlements");
const ES: &str = "com.apple.developer.endpoint-security.client";

/// The text of the first element after `<key>key</key>`.
fn value_after<'a>(plist: &'a str, key: &str) -> Option<&'a str> {
    let at = plist.find(&format!("<key>{key}</key>"))?;
    let rest = &plist[at..];
    let open = rest.find("<string>")? + "<string>".len();
    let close = rest[open..].find("</string>")?;
    Some(&rest[open..open + close])
}

#[test]
fn launchd_runs_the_binary_inside_the_bundle() {
    let program = value_after(AGENT_PLIST, "ProgramArguments").expect("ProgramArguments");
    let (bundle, exe) = program
        .split_once(".app/Contents/MacOS/")
        .expect("the program is inside an app bundle");
    assert!(bundle.starts_with('/'), "{program}");
    assert_eq!(
        Some(exe),
        value_after(INFO_PLIST, "CFBundleExecutable"),
        "Info.plist names the executable launchd runs"
    );
    assert_eq!(value_after(INFO_PLIST, "CFBundlePackageType"), Some("APPL"));
    assert_eq!(
        value_after(INFO_PLIST, "LSMinimumSystemVersion"),
        Some("11.0")
    );
    assert!(value_after(INFO_PLIST, "CFBundleIdentifier").is_some());
}

#[test]
fn the_bare_binary_plist_is_marked_for_development_without_sip() {
    assert_eq!(
        value_after(DEV_PLIST, "ProgramArguments"),
        Some("/usr/local/bin/procmond")
    );
    assert!(DEV_PLIST.contains("DEVELOPMENT ONLY"));
    assert!(DEV_PLIST.contains("SIP disabled"));
    // Both jobs are the same job otherwise.
    let args = |p: &str| p[p.find("<string>agent</string>").expect("agent")..].to_string();
    assert_eq!(args(AGENT_PLIST), args(DEV_PLIST));
}

#[test]
fn entitlements_tie_the_binary_to_its_profile() {
    let team = value_after(BUNDLE_ENTITLEMENTS, "com.apple.developer.team-identifier")
        .expect("team identifier");
    let app = value_after(BUNDLE_ENTITLEMENTS, "com.apple.application-identifier")
        .expect("application identifier");
    let bundle_id = value_after(INFO_PLIST, "CFBundleIdentifier").expect("bundle id");
    assert_eq!(app, format!("{team}.{bundle_id}"));
    for e in [BUNDLE_ENTITLEMENTS, DEV_ENTITLEMENTS] {
        assert!(e.contains(&format!("<key>{ES}</key>\n\t<true/>")), "{e}");
        // codesign wants a plain XML property list: no comments.
        assert!(!e.contains("<!--"), "{e}");
    }
}
