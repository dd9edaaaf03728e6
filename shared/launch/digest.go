package launch

// DigestDirName is the folder, under a host's data_dir, where
// RememberedFileSHA256 keeps the digests of the plugin binaries it hashed.
const DigestDirName = "plugin-digests"
