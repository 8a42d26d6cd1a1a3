package containerd

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

const someID = "sha256:2f4b4b8e5d3c2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f"

// loadStreams are answers of dockerd's POST /images/load, as Docker 20.10
// to 29 write them.
var loadStreams = []struct {
	name, stream string
	want         []string
	wantError    bool
}{
	{"tagged", `{"stream":"Loaded image: busybox:latest\n"}` + "\n", []string{"docker.io/library/busybox:latest"}, false},
	{"untagged", `{"stream":"Loaded image ID: ` + someID + `\n"}`, []string{someID}, false},
	{"two", `{"stream":"Loaded image: registry.example.com/plant/relay:1.2\n"}{"stream":"Loaded image ID: ` + someID + `\n"}`,
		[]string{"registry.example.com/plant/relay:1.2", someID}, false},
	{"progress", `{"status":"Loading layer","progressDetail":{"current":512,"total":1024},"id":"5f70bf18a086"}` + "\n" +
		`{"stream":"Loaded image: busybox:1\n"}`, []string{"docker.io/library/busybox:1"}, false},
	{"nothing", ``, nil, false},
	{"error", `{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`, nil, true},
	{"bad name", `{"stream":"Loaded image: UPPER:case\n"}`, nil, true},
	{"not JSON", `Loaded image: busybox`, nil, true},
	{"cut short", `{"stream":"Loaded im`, nil, true},
	{"ID not a digest", `{"stream":"Loaded image ID: ../../containers/x\n"}`, nil, true},
	{"ID too short", `{"stream":"Loaded image ID: sha256:abc\n"}`, nil, true},
}

func TestParseLoadStream(t *testing.T) {
	for _, tc := range loadStreams {
		got, err := parseLoadStream(strings.NewReader(tc.stream))
		if (err != nil) != tc.wantError || !slices.Equal(got, tc.want) {
			t.Errorf("%s: parseLoadStream(%q) = %q, %v; want %q, error %v", tc.name, tc.stream, got, err, tc.want, tc.wantError)
		}
	}
}

var imageID = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func FuzzParseLoadStream(f *testing.F) {
	for _, tc := range loadStreams {
		f.Add(tc.stream)
	}
	f.Fuzz(func(t *testing.T, stream string) {
		loaded, err := parseLoadStream(strings.NewReader(stream))
		if err != nil {
			if loaded != nil {
				t.Fatalf("parseLoadStream(%q) = %q with error %v", stream, loaded, err)
			}
			return
		}
		// Every entry is an image ID or a normalized name: load looks
		// them up in Docker's API paths and tells them apart by the
		// sha256: prefix.
		for _, k := range loaded {
			if strings.HasPrefix(k, "sha256:") {
				if !imageID.MatchString(k) {
					t.Fatalf("parseLoadStream(%q) returned the ID %q", stream, k)
				}
				continue
			}
			ref, err := reference.ParseDockerRef(k)
			if err != nil || ref.String() != k {
				t.Fatalf("parseLoadStream(%q) returned the name %q (%v)", stream, k, err)
			}
		}
	})
}
