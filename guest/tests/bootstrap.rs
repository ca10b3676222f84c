//! Bootstrap against the real apt and packages: no-op when current,
//! rebuilt when the cache is damaged, clear errors on bad input.
//!
//! Each test that builds uses its own cache directory but shares the
//! downloaded packages, so only the first run on a machine downloads.

use std::path::{Path, PathBuf};

use virtest_guest::apt::Apt;
use virtest_guest::bootstrap::{BootstrapOptions, bootstrap};
use virtest_guest::sources::Origin;
use virtest_guest::{Error, Manifest, cache};

/// Options for a fresh cache in `home` that reuses the shared packages.
fn options(home: &Path) -> BootstrapOptions {
    let shared = cache::default_home().expect("a cache dir").join("packages");
    let mut opts = BootstrapOptions::new(home.to_path_buf());
    opts.apt = Some(Apt::system(shared));
    opts
}

#[test]
fn second_bootstrap_is_a_no_op_and_damage_is_rebuilt() {
    let home = tempfile::tempdir().unwrap();
    let opts = options(home.path());
    let first = bootstrap(&opts).unwrap();
    assert!(
        first.rebuilt.as_deref().unwrap().contains("none yet"),
        "{:?}",
        first.rebuilt
    );
    let m = &first.manifest;
    assert!(m.kernel_path().is_file() && m.initrd_path().is_file());
    assert_eq!(
        m.kernel,
        PathBuf::from("vmlinux"),
        "a PVH vmlinux is extracted"
    );
    let initrd = m.initrd_size();
    assert!(initrd < 8 << 20, "initramfs is {initrd} bytes");
    assert_eq!(
        std::fs::read(m.private_key_path()).unwrap(),
        std::fs::read(home.path().join("keys/id_ed25519")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(m.private_key_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let again = bootstrap(&opts).unwrap();
    assert_eq!(again.rebuilt, None, "nothing changed, nothing rebuilt");
    assert_eq!(again.manifest.content_hash, m.content_hash);

    // A truncated initramfs is seen by the cheap load check and rebuilt.
    let initrd_path = m.initrd_path();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&initrd_path)
        .unwrap();
    file.set_len(1000).unwrap();
    let err = Manifest::load(&m.dir).unwrap_err().to_string();
    assert!(err.contains("initramfs.cpio.gz` is 1000 bytes"), "{err}");
    let rebuilt = bootstrap(&opts).unwrap();
    assert!(
        rebuilt.rebuilt.as_deref().unwrap().contains("1000 bytes"),
        "{:?}",
        rebuilt.rebuilt
    );
    assert_eq!(
        rebuilt.manifest.content_hash, m.content_hash,
        "same inputs, same guest"
    );

    // A same-size corruption is seen by the hash check and rebuilt.
    let mut bytes = std::fs::read(&initrd_path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&initrd_path, &bytes).unwrap();
    let fixed = bootstrap(&opts).unwrap();
    assert!(
        fixed.rebuilt.as_deref().unwrap().contains("SHA-256"),
        "{:?}",
        fixed.rebuilt
    );
    fixed.manifest.verify().unwrap();
}

#[test]
fn a_path_the_user_gives_comes_before_host_and_packages() {
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(home.path());
    // A static busybox of our own: the package's, unpacked elsewhere.
    let apt = opts.apt.clone().unwrap();
    let package = apt.candidate("busybox-static").unwrap();
    let unpacked = home.path().join("mine");
    apt.unpack(&apt.fetch(&package).unwrap(), &unpacked)
        .unwrap();
    let busybox = unpacked.join("bin/busybox");
    opts.user.busybox = Some(busybox.clone());
    let done = bootstrap(&opts).unwrap();
    assert_eq!(
        done.manifest.sources.busybox,
        Origin::User { path: busybox }
    );
    assert!(matches!(
        done.manifest.sources.kernel,
        Origin::Package { .. } | Origin::Host { .. }
    ));

    // A dynamically linked "busybox" is refused, and the error says why.
    opts.user.busybox = Some(std::env::current_exe().unwrap());
    opts.apt = None;
    opts.host = None;
    opts.user.kernel = Some(done.manifest.dir.join("vmlinuz"));
    let msg = bootstrap(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("dynamically linked; a static busybox is needed"),
        "{msg}"
    );
    assert!(msg.contains("`busybox-static`"), "{msg}");
}

#[test]
fn no_kernel_anywhere_lists_the_three_ways() {
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(home.path());
    opts.host = None;
    opts.apt = None;
    let err = bootstrap(&opts).unwrap_err();
    assert!(matches!(err, Error::NoKernel { .. }), "{err}");
    let msg = err.to_string();
    for way in [
        "--kernel PATH --modules DIR",
        "apt-get install linux-image-amd64",
        "apt-get update",
    ] {
        assert!(msg.contains(way), "{way} missing from: {msg}");
    }
}

#[test]
fn missing_apt_names_the_package_to_install() {
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(home.path());
    opts.host = None;
    let apt = opts.apt.as_mut().unwrap();
    apt.apt_get = "/nonexistent/apt-get".into();
    apt.apt_cache = "/nonexistent/apt-cache".into();
    let msg = bootstrap(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("is not installed; install Debian package `apt`"),
        "{msg}"
    );
}

#[test]
fn a_kernel_path_that_does_not_exist_is_reported() {
    let home = tempfile::tempdir().unwrap();
    let mut opts = options(home.path());
    opts.host = None;
    opts.apt = None;
    opts.user.kernel = Some("/nonexistent/vmlinuz".into());
    let msg = bootstrap(&opts).unwrap_err().to_string();
    assert!(
        msg.contains("--kernel /nonexistent/vmlinuz: no such file"),
        "{msg}"
    );
}

#[test]
fn an_unwritable_cache_dir_is_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let err = bootstrap(&options(&file.join("cache"))).unwrap_err();
    assert!(matches!(err, Error::CacheNotWritable { .. }), "{err}");
    assert!(err.to_string().contains("set VIRTEST_HOME"), "{err}");
}

/// Options for the arm64 default guest built into `home`, from the
/// packages the shared cache holds for it.
fn arm64_options(home: &Path) -> BootstrapOptions {
    let shared = cache::default_home().expect("a cache dir");
    let arch = virtest_guest::description::Arch::Aarch64;
    BootstrapOptions {
        home: home.to_path_buf(),
        ..BootstrapOptions::for_arch(shared, arch).expect("the arm64 packages' sources")
    }
}

/// An x86 static busybox, unpacked from the package the x86 guest was
/// built with, into `dir`.
fn x86_busybox(dir: &Path) -> PathBuf {
    bootstrap(&options(dir)).unwrap();
    let packages = cache::default_home().unwrap().join("packages");
    let deb = std::fs::read_dir(&packages)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("busybox-static_")
        })
        .expect("the x86 guest's busybox-static package");
    let root = dir.join("x86-busybox");
    Apt::system(packages).unpack(&deb, &root).unwrap();
    root.join("bin/busybox")
}

/// An x86 busybox or kernel given for the arm64 guest is refused before
/// anything is built, saying what it is built for.
#[test]
fn another_architectures_binary_or_kernel_is_refused_for_the_arm64_guest() {
    let home = tempfile::tempdir().unwrap();
    let busybox = x86_busybox(home.path());
    let mut opts = arm64_options(&home.path().join("arm"));
    opts.user.busybox = Some(busybox.clone());
    opts.apt = None;
    opts.user.kernel = Some(busybox.clone());
    let error = bootstrap(&opts).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::MissingComponent { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "{}: built for x86_64, not aarch64",
            busybox.display()
        )),
        "{text}"
    );

    let x86_kernel = cache::guest_dir(home.path(), "default").join("vmlinuz");
    let mut opts = arm64_options(&home.path().join("arm"));
    opts.user.kernel = Some(x86_kernel.clone());
    let error = bootstrap(&opts).unwrap_err().to_string();
    assert!(error.contains(&x86_kernel.display().to_string()), "{error}");
    assert!(error.contains("is not an arm64 kernel Image"), "{error}");
    assert!(!cache::guest_dir(&home.path().join("arm"), "default-arm64").exists());
}
