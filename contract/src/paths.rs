//! Where the operator mounts what the services read at start.

/// The directory of the tenant ConfigMap in every service pod.
pub const CONFIG_DIR: &str = "/etc/saaschat";
/// The tenant configuration document's key in the ConfigMap, and its file name in [`CONFIG_DIR`].
pub const CONFIG_FILE_NAME: &str = "tenant.json";
/// `CONFIG_DIR/CONFIG_FILE_NAME`: where the services look when `SAASCHAT_CONFIG_FILE` is unset.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/saaschat/tenant.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_mounted_one() {
        assert_eq!(DEFAULT_CONFIG_FILE, format!("{CONFIG_DIR}/{CONFIG_FILE_NAME}"));
    }
}
