package lab

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/edgetpm/edgetpm/internal/atomicfile"
	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// The lab's host names. The connection strings the lab writes name Azure
// host names (HostName=lab-dps.azure-devices-provisioning.net,
// HostName=lab-hub.azure-devices.net), and Azure's service SDKs dial
// https://HostName/ on port 443 and nothing else: azure-iot-http-base's
// Http.buildRequest (dist/http.js, 1.12.2) hands the connection string's
// HostName to https.request as host, with no port. So each name resolves,
// through lines the lab adds to /etc/hosts, to a loopback address of its
// own, where the part behind it serves HTTPS on port 443 with the name in
// its certificate. Linux routes all of 127.0.0.0/8 to the loopback
// interface, so each address can be bound without configuring anything.

// HTTPSPort is the port Azure's service SDKs dial.
const HTTPSPort = 443

// HostsFile is where glibc's files module, Go's resolvers (pure Go and
// cgo) and Node.js's dns.lookup (getaddrinfo) all look first for a name,
// with the hosts line of /etc/nsswitch.conf reading "files" before "dns".
const HostsFile = "/etc/hosts"

// The markers around the lab's lines in the hosts file.
const (
	hostsBegin = "# BEGIN edge-deploy lab (edge-deploy lab hosts --write; --remove takes it out)"
	hostsEnd   = "# END edge-deploy lab"
)

// LoopbackAddr is the loopback address the lab gives host name name:
// 127.X.Y.Z from the SHA-256 of its lower-case form, X never 0 (127.0.0.1
// and Debian's 127.0.1.1 for the machine's own name stay apart) and Z never
// 0 or 255. The same name gets the same address on every machine and in
// every run.
func LoopbackAddr(name string) netip.Addr {
	h := sha256.Sum256([]byte(strings.ToLower(name)))
	return netip.AddrFrom4([4]byte{127, 1 + h[0]%254, h[1], 1 + h[2]%254})
}

// The suffixes of the lab's host names: a DPS instance's and an IoT hub's
// (docs/lab.md#host-names).
var labSuffixes = []string{".azure-devices-provisioning.net", ".azure-devices.net"}

// ErrNotLabName is why a host name may not go into the hosts file: the
// hosts file is written as root from connection strings in a state folder
// a user may write, so only the lab's own kind of name passes.
var ErrNotLabName = errors.New("not a lab host name (lower-case DNS labels of letters, digits and '-' ending in " + labSuffixes[0] + " or " + labSuffixes[1] + ")")

// CheckName returns ErrNotLabName unless name is a lower-case DNS name
// (sas.ValidDNSName, without capitals) with at least one label before one
// of the lab's suffixes.
func CheckName(name string) error {
	if !sas.ValidDNSName(name) || name != strings.ToLower(name) {
		return fmt.Errorf("host name %q: %w", name, ErrNotLabName)
	}
	for _, suffix := range labSuffixes {
		if strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
			return nil
		}
	}
	return fmt.Errorf("host name %q: %w", name, ErrNotLabName)
}

// Names returns the host names the lab's connection strings in stateDir
// name: the DPS service host of service.connstr and the hub of
// hub.connstr, lower-cased, or the lab's defaults for those not written
// yet. A file there that does not parse, or names a host that is not a lab
// name (CheckName), is an error.
func Names(stateDir string) ([]string, error) {
	names := []string{dpsemu.DefaultServiceHostName, Hub}
	for i, file := range []string{DPSConnFile, HubConnFile} {
		path := filepath.Join(stateDir, file)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		// sas errors never quote the connection string, key and all.
		p, err := sas.ParsePolicy(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		name := strings.ToLower(p.HostName)
		if err := CheckName(name); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		names[i] = name
	}
	return slices.Compact(names), nil
}

// HostsLines returns the lab's block of hosts file lines for names, each on
// its LoopbackAddr, between the lab's markers. It refuses, before anything
// is written, a name that is not a lab name (CheckName): a hosts line is
// the name's whole meaning to every program on the machine.
func HostsLines(names []string) (string, error) {
	var b strings.Builder
	b.WriteString(hostsBegin + "\n")
	for _, n := range names {
		if err := CheckName(n); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s\t%s\n", LoopbackAddr(n), n)
	}
	b.WriteString(hostsEnd + "\n")
	return b.String(), nil
}

// UpdateHosts puts block, as HostsLines makes it, into the hosts file at
// path in place of the lab's block there, or at the end; an empty block
// takes the lab's block out. Every other line stays as it was. It writes
// only when the content changes, atomically, keeping the file's mode, and
// reports whether it wrote.
func UpdateHosts(path, block string) (bool, error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("hosts file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, fmt.Errorf("hosts file: %w", err)
	}
	next, err := replaceHostsBlock(old, block)
	if err != nil {
		return false, fmt.Errorf("hosts file %s: %w", path, err)
	}
	if bytes.Equal(next, old) {
		return false, nil
	}
	err = atomicfile.WriteFile(path, next, fi.Mode().Perm())
	if errors.Is(err, syscall.EBUSY) {
		// A container runtime bind-mounts /etc/hosts, which a rename
		// cannot replace: write it in place.
		err = os.WriteFile(path, next, fi.Mode().Perm())
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// replaceHostsBlock returns hosts with the lab's block replaced by block.
func replaceHostsBlock(hosts []byte, block string) ([]byte, error) {
	lines := strings.SplitAfter(string(hosts), "\n")
	var out strings.Builder
	inBlock, found := false, false
	for _, l := range lines {
		switch t := strings.TrimSpace(l); {
		case t == hostsBegin:
			if inBlock || found {
				return nil, errors.New("holds the lab's block twice")
			}
			inBlock, found = true, true
			out.WriteString(block)
		case t == hostsEnd:
			if !inBlock {
				return nil, fmt.Errorf("holds %q outside the lab's block", hostsEnd)
			}
			inBlock = false
		case !inBlock:
			out.WriteString(l)
		}
	}
	if inBlock {
		return nil, fmt.Errorf("the lab's block has no %q line", hostsEnd)
	}
	if !found && block != "" {
		if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
			out.WriteString("\n")
		}
		out.WriteString(block)
	}
	return []byte(out.String()), nil
}

// ErrPortDenied is why a part does not serve at its name: this process
// may not bind port 443.
var ErrPortDenied = errors.New("binding a port below net.ipv4.ip_unprivileged_port_start needs root or CAP_NET_BIND_SERVICE")

// listenNamed listens on port of name's LoopbackAddr.
func listenNamed(name string, port int) (net.Listener, error) {
	addr := net.JoinHostPort(LoopbackAddr(name).String(), strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EACCES) {
		err = fmt.Errorf("%w: %w", ErrPortDenied, err)
	}
	if err != nil {
		return nil, fmt.Errorf("serve %s at %s: %w", name, addr, err)
	}
	return ln, nil
}

// NamedNote is the end of a progress line saying where a part serves at
// its name (named, from DPSEmulator.Named or HubEmulator.Named), or why it
// does not (err): empty when it was not asked to.
func NamedNote(named string, err error) string {
	switch {
	case named != "":
		return " and " + named
	case err != nil:
		return fmt.Sprintf(" (not at its name: %v; see docs/lab.md#host-names)", err)
	}
	return ""
}
