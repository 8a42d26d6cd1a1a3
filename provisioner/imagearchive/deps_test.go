package imagearchive

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/containerd/containerd/images"
)

// The archive side links no daemon client: neither containerd's nor gRPC.
func TestNoDaemonClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 20 {
		t.Fatalf("go list -deps listed only %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, p := range []string{"github.com/containerd/containerd", "google.golang.org/grpc"} {
			if dep == p || strings.HasPrefix(dep, p+"/") {
				t.Errorf("imagearchive depends on %s", dep)
			}
		}
	}
}

// The names spelt out to avoid containerd's images package are its own.
func TestContainerdNames(t *testing.T) {
	for _, tc := range []struct{ name, got, want string }{
		{"AnnotationImageName", annotationImageName, images.AnnotationImageName},
		{"MediaTypeDockerSchema2Manifest", mediaTypeDockerManifest, images.MediaTypeDockerSchema2Manifest},
		{"MediaTypeDockerSchema2ManifestList", mediaTypeDockerManifestList, images.MediaTypeDockerSchema2ManifestList},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q here, %q in containerd", tc.name, tc.got, tc.want)
		}
	}
}
