// Package containerdtest runs the real peers of provisioner/containerd in
// tests: a containerd daemon of the test's own, a dockerd attached to it,
// test images and module containers. A test whose peer is missing, or that
// does not run as root, which the daemons need, is skipped, except under
// CI (peertest.Need).
//
// Sockets live under os.MkdirTemp("", ...) rather than t.TempDir(): a
// unix socket path must stay under 108 bytes, which a test's long name
// would exceed. Each daemon has its own root, state and socket, and each
// container a unique ID, so tests of several packages can run at once.
package containerdtest
