// Package imagearchive reads and verifies container image archives, the
// files that edge-provisioner side-loads without a registry: a
// docker-archive (docker save) or an OCI image layout, as a tar file that
// may be gzipped. It talks to no daemon.
//
// Verify reads a whole archive and checks every digest it can: each blob
// is what its name says, each descriptor has the size and digest of its
// blob, and each docker-archive layer's uncompressed content is what its
// config's rootfs.diff_ids lists. It reports the format and, for each
// image, the names containerd's importer gives it and the image ID for
// this host's platform. An archive comes from outside the device, so
// Verify bounds what it keeps in memory, refuses sparse files and deep
// index nesting, and is fuzzed (FuzzVerify).
//
// Package containerd loads the archives that Verify passed.
package imagearchive
