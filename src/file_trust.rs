//! Who may change the files the program trusts. A configuration, a secret or a CA file that
//! another user can rewrite or replace hands that user the logins; a state directory that
//! another user can write lets them plant symlinks the sync would write through.

use std::fs::{self, File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Group- or other-writable.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: in such a directory only an entry's owner (or the directory's) may rename
/// or delete it.
const STICKY: u32 = 0o1000;

/// The effective user, whose files are trusted as root's are.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses `file` (opened from `path`) when someone other than root or the effective user could
/// change it: the file itself, or any directory above it — above the path as given and above
/// where its symlinks lead. A world-writable directory is accepted only with the sticky bit
/// (like /tmp): then others cannot rename or delete the entries root or this user own.
pub fn check_read_only_for_others(path: &Path, file: &File) -> Result<(), String> {
    let euid = effective_uid();
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    check_owner(path, &meta, euid, true)?;
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(writable_error(path, &meta, "chmod go-w it"));
    }
    let given = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let real = fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut dirs: Vec<&Path> = given.ancestors().skip(1).collect();
    if real != given {
        dirs.extend(real.ancestors().skip(1));
    }
    for dir in dirs {
        let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        check_owner(dir, &meta, euid, true)?;
        if meta.mode() & WRITABLE_BY_OTHERS != 0 && meta.mode() & STICKY == 0 {
            return Err(format!(
                "{}, a directory above {}",
                writable_error(dir, &meta, "chmod go-w it, or move the file"),
                path.display()
            ));
        }
    }
    Ok(())
}

/// Refuses a directory the program keeps private state in unless the effective user owns it and
/// nobody else may write it.
pub fn check_private_dir(path: &Path, meta: &Metadata) -> Result<(), String> {
    check_owner(path, meta, effective_uid(), false)?;
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(writable_error(path, meta, "chmod 0700 it"));
    }
    Ok(())
}

fn check_owner(path: &Path, meta: &Metadata, euid: u32, root_ok: bool) -> Result<(), String> {
    let owner = meta.uid();
    if owner == euid || (root_ok && owner == 0) {
        return Ok(());
    }
    let allowed = if root_ok {
        format!("neither root nor this user (uid {euid})")
    } else {
        format!("not this user (uid {euid})")
    };
    Err(format!(
        "{} is owned by uid {owner}, {allowed}: chown it",
        path.display()
    ))
}

fn writable_error(path: &Path, meta: &Metadata, fix: &str) -> String {
    format!(
        "{} is writable by group/others (mode {:04o}): {fix}",
        path.display(),
        meta.mode() & 0o7777
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn check(path: &Path) -> Result<(), String> {
        check_read_only_for_others(path, &File::open(path).unwrap())
    }

    #[test]
    fn files_and_directories_writable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let file = sub.join("config.yml");
        fs::write(&file, "x").unwrap();
        chmod(&file, 0o640);
        chmod(&sub, 0o755);
        check(&file).unwrap();

        chmod(&file, 0o660);
        let e = check(&file).unwrap_err();
        assert!(e.contains("is writable by group/others (mode 0660)"), "{e}");
        chmod(&file, 0o640);

        chmod(&sub, 0o777);
        let e = check(&file).unwrap_err();
        assert!(e.contains(&format!("{} is writable", sub.display())), "{e}");
        assert!(e.contains("a directory above"), "{e}");
        // sticky, like /tmp: others cannot replace the file
        chmod(&sub, 0o1777);
        check(&file).unwrap();
    }

    #[test]
    fn a_symlink_is_judged_by_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        let target = open.join("config.yml");
        fs::write(&target, "x").unwrap();
        chmod(&target, 0o600);
        let link = dir.path().join("link.yml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        check(&link).unwrap();
        chmod(&open, 0o777);
        let e = check(&link).unwrap_err();
        assert!(
            e.contains(&format!("{} is writable", open.display())),
            "{e}"
        );
    }

    #[test]
    fn private_dir_must_not_be_writable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        check_private_dir(dir.path(), &fs::metadata(dir.path()).unwrap()).unwrap();
        chmod(dir.path(), 0o1777);
        let e = check_private_dir(dir.path(), &fs::metadata(dir.path()).unwrap()).unwrap_err();
        assert!(e.contains("(mode 1777): chmod 0700 it"), "{e}");
    }
}
