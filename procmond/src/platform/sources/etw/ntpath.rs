//! NT device paths to DOS paths: ETW names images the way the kernel sees
//! them (`\Device\HarddiskVolume3\Windows\System32\cmd.exe`), operators and
//! every other source use drive letters (`C:\Windows\System32\cmd.exe`).
//!
//! `DeviceMap` is the drive-letter table (`QueryDosDeviceW` on Windows,
//! `sys::windows::dos_devices`, read when the source starts); the
//! conversion itself is a pure function, tested everywhere.

/// Drive letters and the NT devices they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMap {
    /// `(\Device\HarddiskVolume3, C:)`, longest device first.
    devices: Vec<(String, String)>,
    /// `%SystemRoot%` (`C:\Windows`), for `\SystemRoot\…` paths.
    system_root: Option<String>,
}

impl DeviceMap {
    /// From `(device, drive)` pairs and `%SystemRoot%`.
    pub fn new(mut devices: Vec<(String, String)>, system_root: Option<String>) -> Self {
        devices.retain(|(d, drive)| d.starts_with('\\') && !drive.is_empty());
        devices.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        Self {
            devices,
            system_root,
        }
    }

    /// This machine's table.
    #[cfg(windows)]
    pub fn current() -> Self {
        Self::new(
            crate::sys::windows::dos_devices(),
            std::env::var("SystemRoot").ok(),
        )
    }

    /// The DOS form of `nt`, or `None` when no drive or UNC form names it
    /// (a volume without a letter, a shadow copy): then only the NT path
    /// is known.
    pub fn to_dos(&self, nt: &str) -> Option<String> {
        if is_dos(nt) {
            return Some(nt.to_string());
        }
        for prefix in [r"\??\", r"\\?\"] {
            if let Some(rest) = strip_prefix_ci(nt, prefix) {
                if is_dos(rest) {
                    return Some(rest.to_string());
                }
                if let Some(unc) = strip_prefix_ci(rest, r"UNC\") {
                    return Some(format!(r"\\{unc}"));
                }
            }
        }
        if let Some(rest) = strip_prefix_ci(nt, r"\SystemRoot")
            && (rest.is_empty() || rest.starts_with('\\'))
        {
            return self
                .system_root
                .as_ref()
                .map(|root| format!("{root}{rest}"));
        }
        if let Some(rest) = strip_prefix_ci(nt, r"\Device\Mup\") {
            return Some(format!(r"\\{rest}"));
        }
        if let Some(rest) = strip_prefix_ci(nt, r"\Device\LanmanRedirector\") {
            // `;X:000…\server\share\…`: the first component is the session.
            let rest = if rest.starts_with(';') {
                rest.split_once('\\').map_or("", |(_, r)| r)
            } else {
                rest
            };
            return (!rest.is_empty()).then(|| format!(r"\\{rest}"));
        }
        self.devices.iter().find_map(|(device, drive)| {
            let rest = strip_prefix_ci(nt, device)?;
            (rest.is_empty() || rest.starts_with('\\')).then(|| format!("{drive}{rest}"))
        })
    }
}

/// `C:\…` (or `C:` alone).
fn is_dos(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[1] == b':'
        && (b.len() == 2 || b[2] == b'\\' || b[2] == b'/')
}

/// `s` without `prefix`, compared case-insensitively (ASCII, as the object
/// manager's names are).
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> DeviceMap {
        DeviceMap::new(
            vec![
                (r"\Device\HarddiskVolume3".into(), "C:".into()),
                (r"\Device\HarddiskVolume30".into(), "E:".into()),
                (r"\Device\CdRom0".into(), "D:".into()),
                ("not-a-device".into(), "Z:".into()),
            ],
            Some(r"C:\Windows".into()),
        )
    }

    #[test]
    fn device_paths_become_drive_paths() {
        let m = map();
        let cases = [
            (
                r"\Device\HarddiskVolume3\Windows\System32\cmd.exe",
                Some(r"C:\Windows\System32\cmd.exe"),
            ),
            // The longest device wins, and only on a component boundary.
            (r"\Device\HarddiskVolume30\x.exe", Some(r"E:\x.exe")),
            (r"\device\harddiskvolume3\A.EXE", Some(r"C:\A.EXE")),
            (r"\Device\HarddiskVolume31\x.exe", None),
            (r"\Device\CdRom0\setup.exe", Some(r"D:\setup.exe")),
            (r"\??\C:\Tools\a.exe", Some(r"C:\Tools\a.exe")),
            (r"\\?\C:\Tools\a.exe", Some(r"C:\Tools\a.exe")),
            (r"\??\UNC\srv\share\a.exe", Some(r"\\srv\share\a.exe")),
            (
                r"\SystemRoot\System32\smss.exe",
                Some(r"C:\Windows\System32\smss.exe"),
            ),
            (r"\SystemRootX\a.exe", None),
            (r"\Device\Mup\srv\share\b.exe", Some(r"\\srv\share\b.exe")),
            (
                r"\Device\LanmanRedirector\;Z:000000000001a2b3\srv\share\c.exe",
                Some(r"\\srv\share\c.exe"),
            ),
            (r"C:\already\dos.exe", Some(r"C:\already\dos.exe")),
            (r"\Device\HarddiskVolumeShadowCopy4\a.exe", None),
            ("Registry", None),
            ("", None),
        ];
        for (nt, want) in cases {
            assert_eq!(m.to_dos(nt).as_deref(), want, "{nt}");
        }
        assert_eq!(DeviceMap::default().to_dos(r"\SystemRoot\x"), None);
    }
}
