// Package debpkg builds edgetpm's Debian packages without Docker or
// dpkg-deb, with goreleaser's nfpm as a library: edge-provisioner and
// edge-relay for devices (amd64, arm64, armhf), edge-deploy for operators'
// workstations (amd64). The same commit, Go toolchain and time give the
// same bytes.
package debpkg

import (
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/deploy/gobuild"
)

//go:embed debian
var debian embed.FS

const (
	maintainer = "edgetpm maintainers <edgetpm@users.noreply.github.com>"
	homepage   = "https://github.com/edgetpm/edgetpm"
)

// Arches are the Debian architectures Build knows, with the Go target of
// each at the baseline its Debian port requires.
var Arches = map[string][]string{
	"amd64": {"GOARCH=amd64", "GOAMD64=v1"},
	"arm64": {"GOARCH=arm64", "GOARM64=v8.0"},
	"armhf": {"GOARCH=arm", "GOARM=7"},
}

// DefaultArches are the architectures Build builds when none are given.
var DefaultArches = []string{"amd64", "arm64", "armhf"}

// A tool is one program and how its manual page is made.
type tool struct {
	name    string
	pkg     string // main package, relative to the module root
	whatis  string // the manual page's NAME line
	cgo     bool
	helpFor [][]string // subcommands whose --help the manual page holds
}

// A spec is one binary package.
type spec struct {
	name        string
	tool        tool
	arches      []string // nil: every architecture asked for
	section     string
	summary     string
	description string
	depends     []string
	recommends  []string
	suggests    []string
	conffile    [2]string // source in the module, installed path
	unit        string    // source in the module; installed as /usr/lib/systemd/system/<base>
	// A package also ships those of debian/<name>.sysusers (as
	// /usr/lib/sysusers.d/<name>.conf), debian/<name>.lintian-overrides
	// (each override justified there) and its maintainer scripts
	// debian/<name>.{postinst,prerm,postrm} (which make the state folder,
	// 0700, owned by the service's user) that exist.
}

var specs = []spec{{
	name: "edge-provisioner",
	tool: tool{name: "edge-provisioner", pkg: "./provisioner", whatis: "provision Azure IoT Edge from the TPM through DPS",
		helpFor: [][]string{{"identity"}, {"register"}, {"token"}, {"provision"}, {"status"}, {"doctor"}, {"image", "load"}}},
	section: "admin",
	summary: "provision Azure IoT Edge from the TPM",
	description: `edge-provisioner gives an Azure IoT Edge device its identity from its
TPM 2.0: it reads the endorsement key and registration ID to enroll in the
Device Provisioning Service, registers by TPM attestation, writes and
applies /etc/aziot/config.toml, side-loads module images into containerd
and checks the runtime's health. A systemd unit provisions at boot, before
the aziot services start. The binary is static.`,
	recommends: []string{"tpm-udev"},
	suggests:   []string{"aziot-edge"},
	conffile:   [2]string{"manifests/provisioner.toml", "/etc/edge-provisioner/config.toml"},
	unit:       "scripts/systemd/edge-provisioner.service",
}, {
	name:    "edge-relay",
	tool:    tool{name: "edge-relay", pkg: "./module", whatis: "relay telemetry to Azure IoT Hub with a durable queue"},
	section: "net",
	summary: "relay telemetry to Azure IoT Hub, signing in the TPM",
	description: `edge-relay takes readings from the plant's MQTT brokers, keeps them in a
durable store-and-forward queue and sends them to IoT Hub or edgeHub over
one session that renews its token and never gives up. This package runs
it as a hardened host service (device mode) on hosts without IoT Edge,
signing its tokens in the TPM with the key DPS gave edge-provisioner. The
binary is static.`,
	depends:    []string{"systemd"},
	recommends: []string{"edge-provisioner", "tpm-udev", "ca-certificates"},
	conffile:   [2]string{"manifests/relay.toml", "/etc/edge-relay/config.toml"},
	unit:       "scripts/systemd/edge-relay.service",
}, {
	name: "edge-deploy",
	tool: tool{name: "edge-deploy", pkg: "./deploy", cgo: true, whatis: "deploy edgetpm fleets and run the local lab",
		helpFor: [][]string{{"lab", "up"}, {"lab", "dps"}, {"lab", "enroll"}, {"lab", "hub"}, {"lab", "workload"}, {"lab", "twin", "set"},
			{"image", "build"}, {"package"}, {"render"}, {"validate"}, {"apply"}, {"rollout"}, {"status"}, {"rollback"}}},
	// It links Microsoft's reference TPM with cgo, for the lab; operators'
	// workstations are amd64.
	arches:  []string{"amd64"},
	section: "admin",
	summary: "build, deploy and roll out edgetpm, and run its local lab",
	description: `edge-deploy builds the edge-relay module image without Docker, renders and
validates deployment manifests, applies them and rolls them out to fleets
in waves through IoT Hub, and runs a local lab that emulates DPS, IoT Hub
and the edge runtime around a reference TPM simulator, so that all of it
can be tried without Azure. The lab runs the installed edge-provisioner
and edge-relay.`,
	depends:    []string{"libc6 (>= 2.34)", "libssl3 (>= 3.0.0)"},
	recommends: []string{"edge-provisioner", "edge-relay"},
	suggests:   []string{"swtpm", "swtpm-tools", "mosquitto", "containerd"},
}}

// Names are the packages Build can build, in order.
func Names() []string {
	var n []string
	for _, s := range specs {
		n = append(n, s.name)
	}
	return n
}

// Options says what Build builds.
type Options struct {
	// Dir is the root of the edgetpm module (required).
	Dir string
	// Out is the folder the packages are written to (required).
	Out string
	// Version is the Debian version, e.g. 1.2.0 (required).
	Version string
	// Arches are Debian architectures; default DefaultArches.
	// edge-deploy is built for amd64 only.
	Arches []string
	// Packages are the packages to build; default all of Names.
	Packages []string
	// Time is the time of every file and of the changelog entry: the
	// commit's, or SOURCE_DATE_EPOCH, so that builds are reproducible
	// (required).
	Time time.Time
	// Log gets one line per package; zero means none.
	Log zerolog.Logger
}

// Package is one .deb that Build wrote.
type Package struct {
	Name string `json:"name"`
	Arch string `json:"arch"`
	File string `json:"file"`
	Size int64  `json:"size"`
}

// Build builds the packages of opts and writes them to opts.Out as
// NAME_VERSION_ARCH.deb.
func Build(ctx context.Context, opts Options) ([]Package, error) {
	if opts.Dir == "" || opts.Out == "" || opts.Version == "" || opts.Time.IsZero() {
		return nil, errors.New("build packages: want a module folder, an output folder, a version and a time")
	}
	if strings.ContainsAny(opts.Version, "_ /") || !strings.ContainsAny(opts.Version[:1], "0123456789") {
		return nil, fmt.Errorf("build packages: version %q: want a Debian version starting with a digit", opts.Version)
	}
	if len(opts.Arches) == 0 {
		opts.Arches = DefaultArches
	}
	for _, a := range opts.Arches {
		if Arches[a] == nil {
			return nil, fmt.Errorf("build packages: architecture %q: want amd64, arm64 or armhf", a)
		}
	}
	if len(opts.Packages) == 0 {
		opts.Packages = Names()
	}
	var todo []spec
	for _, name := range opts.Packages {
		i := slices.IndexFunc(specs, func(s spec) bool { return s.name == name })
		if i < 0 {
			return nil, fmt.Errorf("build packages: no package %q: want %s", name, strings.Join(Names(), ", "))
		}
		todo = append(todo, specs[i])
	}
	opts.Time = opts.Time.UTC().Truncate(time.Second)
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("build packages: %w", err)
	}
	work, err := os.MkdirTemp("", "edgetpm-deb")
	if err != nil {
		return nil, fmt.Errorf("build packages: %w", err)
	}
	defer os.RemoveAll(work)
	b := &builder{opts: opts, work: work}

	var built []Package
	for _, s := range todo {
		for _, arch := range opts.Arches {
			if s.arches != nil && !slices.Contains(s.arches, arch) {
				continue
			}
			p, err := b.pack(ctx, s, arch)
			if err != nil {
				return built, fmt.Errorf("build %s for %s: %w", s.name, arch, err)
			}
			opts.Log.Info().Str("file", p.File).Int64("size", p.Size).Msg("built")
			built = append(built, p)
		}
	}
	if len(built) == 0 {
		return nil, errors.New("build packages: nothing to build for these architectures")
	}
	return built, nil
}

type builder struct {
	opts Options
	work string
}

// pack builds one package.
func (b *builder) pack(ctx context.Context, s spec, arch string) (Package, error) {
	if s.tool.cgo && arch != hostArch() {
		return Package{}, fmt.Errorf("%s links C code: build it on %s", s.tool.name, arch)
	}
	dir := filepath.Join(b.work, s.name+"_"+arch)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Package{}, err
	}
	bin := filepath.Join(dir, s.tool.name)
	if err := gobuild.Build(ctx, gobuild.Options{Dir: b.opts.Dir, Package: s.tool.pkg, Out: bin, Arch: Arches[arch], Cgo: s.tool.cgo}); err != nil {
		return Package{}, err
	}
	if arch == hostArch() {
		// The manual page is made by running it.
		if err := link(bin, filepath.Join(b.work, "host", s.tool.name)); err != nil {
			return Package{}, err
		}
	}
	man, err := b.manPage(ctx, s.tool)
	if err != nil {
		return Package{}, err
	}
	doc := "/usr/share/doc/" + s.name
	c := contents{dir: dir}
	c.file(bin, "/usr/bin/"+s.tool.name, 0o755, "")
	c.data(man, "/usr/share/man/man1/"+s.tool.name+".1.gz", 0o644)
	c.data(mustRead(debian, "debian/copyright"), doc+"/copyright", 0o644)
	c.data(gz(b.changelog(s.name)), doc+"/changelog.gz", 0o644)
	if s.conffile[0] != "" {
		// Debian keeps an operator's edits to a conffile on upgrade and
		// asks before replacing them. It holds no secret: passwords are
		// read from files it names, or from the environment.
		c.file(filepath.Join(b.opts.Dir, s.conffile[0]), s.conffile[1], 0o644, files.TypeConfig)
	}
	if s.unit != "" {
		c.file(filepath.Join(b.opts.Dir, s.unit), "/usr/lib/systemd/system/"+filepath.Base(s.unit), 0o644, "")
	}
	if b, err := debian.ReadFile("debian/" + s.name + ".sysusers"); err == nil {
		c.data(b, "/usr/lib/sysusers.d/"+s.name+".conf", 0o644)
	}
	if b, err := debian.ReadFile("debian/" + s.name + ".lintian-overrides"); err == nil {
		c.data(b, "/usr/share/lintian/overrides/"+s.name, 0o644)
	}
	if c.err != nil {
		return Package{}, c.err
	}
	for _, f := range c.list {
		if f.FileInfo.MTime.IsZero() {
			f.FileInfo.MTime = b.opts.Time
		}
	}

	info := &nfpm.Info{
		Name:          s.name,
		Arch:          arch,
		Platform:      "linux",
		Version:       b.opts.Version,
		VersionSchema: "none",
		Section:       s.section,
		Priority:      "optional",
		Maintainer:    maintainer,
		Homepage:      homepage,
		License:       "MIT",
		Description:   s.summary + "\n" + s.description,
		MTime:         b.opts.Time,
		Overridables: nfpm.Overridables{
			Depends:    s.depends,
			Recommends: s.recommends,
			Suggests:   s.suggests,
			Contents:   c.list,
			Deb:        nfpm.Deb{Arch: arch, Compression: "xz"},
		},
	}
	for _, name := range []string{"postinst", "prerm", "postrm"} {
		script, err := debian.ReadFile("debian/" + s.name + "." + name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, script, 0o755); err != nil {
			return Package{}, err
		}
		switch name {
		case "postinst":
			info.Scripts.PostInstall = path
		case "prerm":
			info.Scripts.PreRemove = path
		case "postrm":
			info.Scripts.PostRemove = path
		}
	}
	var out bytes.Buffer
	if err := deb.Default.Package(nfpm.WithDefaults(info), &out); err != nil {
		return Package{}, err
	}
	file := filepath.Join(b.opts.Out, fmt.Sprintf("%s_%s_%s.deb", s.name, b.opts.Version, arch))
	if err := os.WriteFile(file, out.Bytes(), 0o644); err != nil {
		return Package{}, err
	}
	return Package{Name: s.name, Arch: arch, File: file, Size: int64(out.Len())}, nil
}

// contents collects a package's files; generated ones are written to dir.
type contents struct {
	dir  string
	list files.Contents
	err  error
}

func (c *contents) file(src, dst string, mode os.FileMode, typ string) {
	c.list = append(c.list, &files.Content{Source: src, Destination: dst, Type: typ, FileInfo: &files.ContentFileInfo{Mode: mode}})
}

func (c *contents) data(b []byte, dst string, mode os.FileMode) {
	src := filepath.Join(c.dir, strings.ReplaceAll(strings.TrimPrefix(dst, "/"), "/", "_"))
	if err := os.WriteFile(src, b, 0o644); err != nil && c.err == nil {
		c.err = err
	}
	c.file(src, dst, mode, "")
}

// changelog is the package's changelog: one entry, for this version.
func (b *builder) changelog(name string) []byte {
	return fmt.Appendf(nil, `%s (%s) stable; urgency=medium

  * edgetpm %s: see https://github.com/edgetpm/edgetpm for what changed.

 -- %s  %s
`, name, b.opts.Version, b.opts.Version, maintainer, b.opts.Time.Format(time.RFC1123Z))
}

// manPage is the tool's manual page, gzipped: its --help and that of each
// subcommand, from a build for this machine.
func (b *builder) manPage(ctx context.Context, t tool) ([]byte, error) {
	bin := filepath.Join(b.work, "host", t.name)
	if _, err := os.Stat(bin); err != nil {
		if err := gobuild.Build(ctx, gobuild.Options{Dir: b.opts.Dir, Package: t.pkg, Out: bin, Arch: Arches[hostArch()], Cgo: t.cgo}); err != nil {
			return nil, err
		}
	}
	help := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, append(args, "--help")...)
		// Nothing of this machine's environment may reach the page.
		cmd.Env = []string{"LC_ALL=C", "HOME=/nonexistent", "PATH=/usr/bin:/bin"}
		cmd.Dir = b.work
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s %s --help: %w", t.name, strings.Join(args, " "), err)
		}
		return string(out), nil
	}
	var m strings.Builder
	upper := strings.ToUpper(t.name)
	fmt.Fprintf(&m, ".TH %s 1 %q \"edgetpm %s\" \"User Commands\"\n", upper, b.opts.Time.Format("2006-01-02"), b.opts.Version)
	fmt.Fprintf(&m, ".SH NAME\n%s \\- %s\n.SH DESCRIPTION\n", t.name, t.whatis)
	top, err := help()
	if err != nil {
		return nil, err
	}
	verbatim(&m, top)
	if len(t.helpFor) > 0 {
		m.WriteString(".SH COMMANDS\n")
	}
	for _, sub := range t.helpFor {
		h, err := help(sub...)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&m, ".SS %q\n", strings.Join(sub, " "))
		verbatim(&m, h)
	}
	fmt.Fprintf(&m, ".SH SEE ALSO\n%s\n", homepage)
	return gz([]byte(m.String())), nil
}

// verbatim writes text to a manual page as it is: no filling, roff's
// escape and control characters quoted.
func verbatim(m *strings.Builder, text string) {
	m.WriteString(".nf\n")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		line = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(strings.ReplaceAll(line, "\t", "        "))
		if line == "" {
			m.WriteString(".sp\n")
			continue
		}
		m.WriteString(`\&` + line + "\n")
	}
	m.WriteString(".fi\n")
}

// link makes dst another name of src, replacing nothing.
func link(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Link(src, dst); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// gz compresses b as gzip -9n does: best compression, no name, no time.
func gz(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func mustRead(fsys embed.FS, name string) []byte {
	b, err := fsys.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

// hostArch is this machine's Debian architecture.
func hostArch() string {
	if goruntime.GOARCH == "arm" {
		return "armhf"
	}
	return goruntime.GOARCH
}
