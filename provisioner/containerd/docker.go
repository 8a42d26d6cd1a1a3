package containerd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/edgetpm/edgetpm/provisioner/imagearchive"
)

// DockerInfo is what Load needs to know of a Docker daemon.
type DockerInfo struct {
	Version string `json:"version"`
	// Driver is the storage driver; with the containerd image store it is
	// the containerd snapshotter Docker unpacks images into.
	Driver string `json:"driver"`
	// ContainerdStore says Docker keeps its images in containerd (Docker 24
	// and later with the containerd-snapshotter feature).
	ContainerdStore bool `json:"containerdStore"`
}

// containerdStoreDriverType is the driver-type entry of GET /info's
// DriverStatus when Docker uses the containerd image store.
const containerdStoreDriverType = "io.containerd.snapshotter.v1"

// DockerStoreInfo asks Docker at socket which image store it uses.
func DockerStoreInfo(ctx context.Context, socket string) (*DockerInfo, error) {
	d := newDocker(socket)
	defer d.close()
	return d.info(ctx)
}

// docker talks to the Docker Engine API over its unix socket. Paths carry
// no API version, so the daemon answers in its own: Docker 29 refuses
// versions before 1.44 and Docker 20.10 knows none after 1.41, and every
// field used here is in both.
type docker struct {
	socket string
	http   *http.Client
}

// dockerError is Docker answering with an error status.
type dockerError struct {
	status  int
	message string
}

func (e *dockerError) Error() string {
	return fmt.Sprintf("Docker answered %d: %s", e.status, e.message)
}

func newDocker(socket string) *docker {
	var dialer net.Dialer
	return &docker{socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		},
	}}}
}

func (d *docker) close() { d.http.CloseIdleConnections() }

// do sends a request and returns the answer's body, or a *dockerError.
func (d *docker) do(ctx context.Context, method, path string, body io.Reader) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-tar")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("Docker at %s: %w", d.socket, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var e struct{ Message string }
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return nil, &dockerError{status: resp.StatusCode, message: e.Message}
	}
	return resp.Body, nil
}

// call sends a request and decodes the JSON answer into out, if not nil.
func (d *docker) call(ctx context.Context, method, path string, out any) error {
	body, err := d.do(ctx, method, path, nil)
	if err != nil {
		return err
	}
	defer body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, body)
		return err
	}
	if err := json.NewDecoder(io.LimitReader(body, 4<<20)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

func (d *docker) info(ctx context.Context) (*DockerInfo, error) {
	var info struct {
		ServerVersion string
		Driver        string
		DriverStatus  [][]string
	}
	if err := d.call(ctx, http.MethodGet, "/info", &info); err != nil {
		return nil, fmt.Errorf("ask Docker for its image store: %w", err)
	}
	return parseInfo(info.ServerVersion, info.Driver, info.DriverStatus), nil
}

func parseInfo(version, driver string, status [][]string) *DockerInfo {
	di := &DockerInfo{Version: version, Driver: driver}
	for _, kv := range status {
		if len(kv) == 2 && kv[0] == "driver-type" && kv[1] == containerdStoreDriverType {
			di.ContainerdStore = true
		}
	}
	return di
}

// imageID returns the ID of the image called name, "" when there is none.
func (d *docker) imageID(ctx context.Context, name string) (string, error) {
	var img struct{ ID string }
	err := d.call(ctx, http.MethodGet, "/images/"+name+"/json", &img)
	if e := (*dockerError)(nil); errors.As(err, &e) && e.status == http.StatusNotFound {
		return "", nil
	}
	return img.ID, err
}

// major returns the major version of a Docker version such as
// "20.10.24+dfsg1".
func major(version string) int {
	n, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	return n
}

// load sends an archive that Verify passed to Docker's POST /images/load.
// What Docker had under the same names and IDs decides what is skipped;
// when Docker fails halfway through, the names it changed are put back.
func (d *docker) load(ctx context.Context, info *DockerInfo, a *imagearchive.Archive, tarStream io.Reader) ([]Image, error) {
	if !a.DockerManifest && major(info.Version) < 25 {
		return nil, fmt.Errorf("Docker %s cannot load an OCI image layout that lacks manifest.json (Docker 25, API 1.44, and later can); save the image with docker save instead", info.Version)
	}
	before := map[string]string{} // name or image ID -> image ID, "" when absent
	present := true
	for _, img := range a.Images {
		keys := img.Names
		if len(keys) == 0 {
			keys = []string{img.Config}
		}
		for _, k := range keys {
			if k == "" { // an index without an image for this host
				present = false
				continue
			}
			id, err := d.imageID(ctx, k)
			if err != nil {
				return nil, err
			}
			before[k] = id
			present = present && id != "" && id == img.Config
		}
	}
	if present {
		var out []Image
		for _, img := range a.Images {
			for _, n := range img.Names {
				out = append(out, Image{Name: n, Digest: img.Config, Skipped: true})
			}
			if len(img.Names) == 0 {
				out = append(out, Image{Digest: img.Config, Skipped: true})
			}
		}
		return out, nil
	}
	loaded, err := d.post(ctx, tarStream)
	if err != nil {
		return nil, errors.Join(err, d.restore(ctx, before))
	}
	var out []Image
	for _, key := range loaded {
		img := Image{Name: key, Digest: key}
		if strings.HasPrefix(key, "sha256:") {
			img.Name = ""
		} else if img.Digest, err = d.imageID(ctx, key); err != nil {
			return nil, err
		}
		img.Skipped = before[key] == img.Digest
		out = append(out, img)
	}
	return out, nil
}

// post streams the tar to POST /images/load and returns the names and the
// IDs of untagged images that Docker reports loaded.
func (d *docker) post(ctx context.Context, tarStream io.Reader) ([]string, error) {
	body, err := d.do(ctx, http.MethodPost, "/images/load?quiet=1", tarStream)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return parseLoadStream(body)
}

// parseLoadStream reads the JSON messages POST /images/load answers with
// and returns the names and the IDs of untagged images Docker reports
// loaded, or Docker's error.
func parseLoadStream(r io.Reader) ([]string, error) {
	var loaded []string
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("read Docker's answer: %w", err)
		}
		if msg.Error != "" {
			return nil, fmt.Errorf("Docker: %s", msg.Error)
		}
		line := strings.TrimSpace(msg.Stream)
		if id, ok := strings.CutPrefix(line, "Loaded image ID: "); ok {
			// load tells IDs from names by the prefix and puts both in
			// API paths: anything but a digest is Docker misbehaving.
			if _, err := digest.Parse(id); err != nil || !strings.HasPrefix(id, "sha256:") {
				return nil, fmt.Errorf("Docker loaded the image ID %q, not a sha256 digest", id)
			}
			loaded = append(loaded, id)
		} else if name, ok := strings.CutPrefix(line, "Loaded image: "); ok {
			ref, err := reference.ParseDockerRef(name)
			if err != nil {
				return nil, fmt.Errorf("Docker loaded %q: %w", name, err)
			}
			loaded = append(loaded, ref.String())
		}
	}
	return loaded, nil
}

// restore puts the names in before back on the images they named.
func (d *docker) restore(ctx context.Context, before map[string]string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	var errs []error
	for name, prev := range before {
		if strings.HasPrefix(name, "sha256:") {
			continue // an ID, not a name
		}
		cur, err := d.imageID(ctx, name)
		if err != nil || cur == prev {
			errs = append(errs, err)
			continue
		}
		if prev == "" {
			errs = append(errs, d.call(ctx, http.MethodDelete, "/images/"+name, nil))
			continue
		}
		ref, err := reference.ParseNormalizedNamed(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		q := url.Values{"repo": {ref.Name()}}
		if t, ok := ref.(reference.Tagged); ok {
			q.Set("tag", t.Tag())
		}
		errs = append(errs, d.call(ctx, http.MethodPost, "/images/"+prev+"/tag?"+q.Encode(), nil))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("restore image names: %w", err)
	}
	return nil
}
