// Package containerd side-loads container images without a registry and
// reports the health of the IoT Edge module containers, talking to the
// containerd daemon that Docker (moby) runs its containers on.
//
// Load verifies an archive (docker-archive or OCI image layout, plain or
// gzip) completely with package imagearchive before anything reaches a
// store, then loads it where Docker will see it. Docker with the containerd image store (Docker 24+
// with the containerd-snapshotter feature, the default from Docker 29)
// reads images straight from containerd's namespace "moby", so Load imports
// and unpacks them there. Docker with its classic store (overlay2 and the
// other graph drivers) keeps a separate image store that does not see
// containerd's images (moby issue 47930), so Load hands the archive to
// Docker's POST /images/load instead. Either way a failed Load leaves the
// image names as they were.
//
// Containers and WaitRunning read the module containers from containerd:
// IoT Edge starts every module through Docker, which runs it as a
// containerd container in namespace "moby" whose OCI spec carries the
// IOTEDGE_MODULEID environment variable, whichever image store Docker uses.
//
// The client works with the containerd 1.6 and 1.7 daemons that Docker
// packages ship: it uses only the content, image, lease, snapshot, diff,
// container and task services (no transfer service, which came with 1.7).
package containerd
