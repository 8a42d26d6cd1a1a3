package lab

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/emulator/dpsemu"
	"github.com/edgetpm/edgetpm/internal/emulator/pki"
	"github.com/edgetpm/edgetpm/internal/tlsconfig"
)

func TestLoopbackAddr(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{dpsemu.DefaultServiceHostName, Hub, "other-hub.azure-devices.net", "a", "gw.local"} {
		a := LoopbackAddr(name)
		if !a.Is4() || !a.IsLoopback() {
			t.Errorf("LoopbackAddr(%q) = %v, want an IPv4 loopback address", name, a)
		}
		b := a.As4()
		if b[1] == 0 || b[3] == 0 || b[3] == 255 {
			t.Errorf("LoopbackAddr(%q) = %v, want 127.X.Y.Z with X > 0 and Z in 1..254", name, a)
		}
		if up := LoopbackAddr(strings.ToUpper(name)); up != a {
			t.Errorf("LoopbackAddr(%q) = %v, LoopbackAddr(%q) = %v: want the same, names are case-insensitive", name, a, strings.ToUpper(name), up)
		}
		if other, ok := seen[a.String()]; ok {
			t.Errorf("%q and %q share %v", name, other, a)
		}
		seen[a.String()] = name
	}
}

// hostsCases are hosts files and what writing the lab's block into them
// makes, seeding FuzzReplaceHostsBlock too.
var hostsCases = []struct {
	name, in, want string
}{
	{"empty", "", "B"},
	{"appended", "127.0.0.1 localhost\n", "127.0.0.1 localhost\nB"},
	{"no final newline", "127.0.0.1 localhost", "127.0.0.1 localhost\nB"},
	{"replaced in place", "1.2.3.4 a\n" + hostsBegin + "\n127.9.9.9 old\n" + hostsEnd + "\n5.6.7.8 b\n", "1.2.3.4 a\nB5.6.7.8 b\n"},
	{"markers with spaces", "  " + hostsBegin + "  \n127.9.9.9 old\n\t" + hostsEnd + "\n", "B"},
}

func TestReplaceHostsBlock(t *testing.T) {
	const block = "B\n"
	for _, tt := range hostsCases {
		t.Run(tt.name, func(t *testing.T) {
			want := strings.ReplaceAll(tt.want, "B", block)
			got, err := replaceHostsBlock([]byte(tt.in), block)
			if err != nil || string(got) != want {
				t.Fatalf("replaceHostsBlock(%q) = %q, %v; want %q", tt.in, got, err, want)
			}
			// The block is the lab's own: replacing it again changes nothing.
			real, err := HostsLines([]string{Hub})
			if err != nil {
				t.Fatal(err)
			}
			once, _ := replaceHostsBlock([]byte(tt.in), real)
			twice, err := replaceHostsBlock(once, real)
			if err != nil || string(twice) != string(once) {
				t.Errorf("writing the block twice = %q, %v; want %q", twice, err, once)
			}
			removed, err := replaceHostsBlock(once, "")
			if err != nil || strings.Contains(string(removed), "edge-deploy lab") || strings.Contains(string(removed), Hub) {
				t.Errorf("removing the block left %q, %v", removed, err)
			}
		})
	}
	for _, bad := range []string{
		hostsBegin + "\n1.2.3.4 a\n",
		hostsBegin + "\n" + hostsEnd + "\n" + hostsBegin + "\n" + hostsEnd + "\n",
		"1.2.3.4 a\n" + hostsEnd + "\n",
	} {
		if got, err := replaceHostsBlock([]byte(bad), "B\n"); err == nil {
			t.Errorf("replaceHostsBlock(%q) = %q, want an error", bad, got)
		}
	}
}

// hostileNames are names a connection string in a state folder a user may
// write could carry, none of which the root-run hosts writer may take.
var hostileNames = []string{
	"github.com",
	"x\n1.2.3.4\vexample.com",
	"x.azure-devices.net\n1.2.3.4 github.com",
	"x.azure-devices.net#",
	"x.azure-devices.net ",
	"Lab-Hub.azure-devices.net",
	"azure-devices.net",
	".azure-devices.net",
	"a..azure-devices.net",
	"-a.azure-devices.net",
	"a-.azure-devices.net",
	"a_b.azure-devices.net",
	"login.microsoftonline.com",
	"evil.azure-devices.net.example.com",
	"xazure-devices.net",
	strings.Repeat("a", 64) + ".azure-devices.net",
	strings.Repeat(strings.Repeat("a", 63)+".", 4) + "azure-devices.net",
	"",
}

func TestHostsLinesRefusesOtherNames(t *testing.T) {
	for _, name := range hostileNames {
		if got, err := HostsLines([]string{Hub, name}); err == nil {
			t.Errorf("HostsLines(%q) = %q, want an error", name, got)
		}
	}
	got, err := HostsLines([]string{dpsemu.DefaultServiceHostName, "a-1.b2.azure-devices.net"})
	want := hostsBegin + "\n" +
		LoopbackAddr(dpsemu.DefaultServiceHostName).String() + "\t" + dpsemu.DefaultServiceHostName + "\n" +
		LoopbackAddr("a-1.b2.azure-devices.net").String() + "\ta-1.b2.azure-devices.net\n" +
		hostsEnd + "\n"
	if err != nil || got != want {
		t.Errorf("HostsLines = %q, %v; want %q", got, err, want)
	}
}

// A connection string in the state folder naming another host makes Names
// fail, rather than have root resolve that host to loopback.
func TestNamesRefusesOtherHosts(t *testing.T) {
	for _, host := range []string{"github.com", "x\n1.2.3.4\vexample.com", "a_b.azure-devices.net"} {
		dir := t.TempDir()
		cs := "HostName=" + host + ";SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"
		if err := os.WriteFile(filepath.Join(dir, HubConnFile), []byte(cs), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := Names(dir); err == nil {
			t.Errorf("Names with HostName=%q = %q, want an error", host, got)
		} else if strings.Contains(err.Error(), "a2V5") {
			t.Errorf("Names error %q shows the key", err)
		}
	}
}

// Any name HostsLines takes yields exactly the one expected line between
// the markers, and is a lab name by an independent check.
func FuzzHostsLines(f *testing.F) {
	for _, n := range hostileNames {
		f.Add(n)
	}
	f.Add(dpsemu.DefaultServiceHostName)
	f.Add(Hub)
	f.Add("x.azure-devices-provisioning.net")
	labName := regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+azure-devices(-provisioning)?\.net$`)
	f.Fuzz(func(t *testing.T, name string) {
		got, err := HostsLines([]string{name})
		if err != nil {
			return
		}
		if len(name) > 253 || !labName.MatchString(name) {
			t.Fatalf("HostsLines took %q, not a lab name", name)
		}
		want := hostsBegin + "\n" + LoopbackAddr(name).String() + "\t" + name + "\n" + hostsEnd + "\n"
		if got != want {
			t.Fatalf("HostsLines(%q) = %q, want %q", name, got, want)
		}
		if n := strings.Count(got, "\n"); n != 3 || strings.ContainsAny(got, "\r\v\f\x00") || strings.Count(got, "#") != 2 {
			t.Fatalf("HostsLines(%q) = %q: want 3 lines, no other line breaks or comments", name, got)
		}
	})
}

func FuzzReplaceHostsBlock(f *testing.F) {
	for _, tt := range hostsCases {
		f.Add(tt.in)
	}
	block, err := HostsLines([]string{dpsemu.DefaultServiceHostName, Hub})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		once, err := replaceHostsBlock([]byte(in), block)
		if err != nil {
			return
		}
		if !strings.Contains(string(once), block) {
			t.Fatalf("replaceHostsBlock(%q) = %q, without the block", in, once)
		}
		twice, err := replaceHostsBlock(once, block)
		if err != nil || string(twice) != string(once) {
			t.Fatalf("again: %q, %v; want %q", twice, err, once)
		}
		removed, err := replaceHostsBlock(once, "")
		if err != nil {
			t.Fatalf("removed: %v", err)
		}
		for _, l := range strings.Split(string(removed), "\n") {
			if m := strings.TrimSpace(l); m == hostsBegin || m == hostsEnd {
				t.Fatalf("a marker left after removing the block: %q", removed)
			}
		}
	})
}

func TestUpdateHosts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	const orig = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	names, err := Names(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	block, err := HostsLines(names)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		changed, err := UpdateHosts(path, block)
		if err != nil || changed != want {
			t.Fatalf("UpdateHosts #%d = %v, %v; want %v, nil", i+1, changed, err, want)
		}
	}
	b, _ := os.ReadFile(path)
	wantLine := LoopbackAddr(dpsemu.DefaultServiceHostName).String() + "\t" + dpsemu.DefaultServiceHostName + "\n"
	if !strings.HasPrefix(string(b), orig) || !strings.Contains(string(b), wantLine) {
		t.Errorf("hosts file = %q, want %q kept and %q added", b, orig, wantLine)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644 kept", fi.Mode().Perm())
	}
	if changed, err := UpdateHosts(path, ""); err != nil || !changed {
		t.Fatalf("UpdateHosts remove = %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Errorf("after remove, hosts file = %q, want %q", b, orig)
	}
	if _, err := UpdateHosts(filepath.Join(t.TempDir(), "none"), block); err == nil {
		t.Error("UpdateHosts of a missing file succeeded")
	}
}

// The names come from the connection strings the lab wrote.
func TestNames(t *testing.T) {
	dir, ca, err := OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Names(dir); err != nil || len(got) != 2 || got[0] != dpsemu.DefaultServiceHostName || got[1] != Hub {
		t.Errorf("Names of an empty lab = %q, %v; want the defaults", got, err)
	}
	h, err := StartHub(dir, ca, HubConfig{Hub: "Other-Hub.azure-devices.net", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if got, err := Names(dir); err != nil || len(got) != 2 || got[1] != "other-hub.azure-devices.net" {
		t.Errorf("Names = %q, %v; want the hub of hub.connstr second", got, err)
	}
}

// Every host name the lab writes into a connection string is in the
// certificate of the server behind it, verified with the lab CA.
func TestNamesInCertificates(t *testing.T) {
	dir, ca, err := OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d, err := StartDPS(dir, ca, DPSConfig{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h, err := StartHub(dir, ca, HubConfig{Gateway: "gw.local", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	roots, err := tlsconfig.TrustFile(filepath.Join(dir, pki.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	names, err := Names(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, addr string }{
		{names[0], strings.TrimPrefix(d.Endpoint, "https://")},
		{names[1], strings.TrimPrefix(h.Service, "https://")},
		{names[1], h.MQTT},
		{"gw.local", h.MQTT},
	} {
		c, err := tls.Dial("tcp", tt.addr, tlsconfig.Client(roots, tt.name))
		if err != nil {
			t.Errorf("TLS to %s as %s: %v", tt.addr, tt.name, err)
			continue
		}
		c.Close()
	}
	if d.Named != "" || d.NamedErr != nil {
		t.Errorf("DPS without Named: Named %q, NamedErr %v; want neither", d.Named, d.NamedErr)
	}
}

// With Named, the hub's service API answers at port 443 of the hub name's
// address, with the name in its certificate; a second hub of the same name
// cannot have that port and serves without it, saying why.
func TestHubNamed(t *testing.T) {
	dir, ca, err := OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const hub = "named-test-hub.azure-devices.net"
	h, err := StartHub(dir, ca, HubConfig{Hub: hub, Named: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if errors.Is(h.NamedErr, ErrPortDenied) && os.Getenv("CI") == "" {
		t.Skipf("needs port 443: %v", h.NamedErr)
	}
	if h.Named != "https://"+hub || h.NamedErr != nil {
		t.Fatalf("Named = %q, NamedErr = %v; want https://%s", h.Named, h.NamedErr, hub)
	}
	roots, err := tlsconfig.TrustFile(filepath.Join(dir, pki.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", net.JoinHostPort(LoopbackAddr(hub).String(), "443"), tlsconfig.Client(roots, hub))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /twins/d?api-version=2021-04-12 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hub)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /twins/d without a token at the hub's name = %s, want 401 from its service API", resp.Status)
	}

	h2, err := StartHub(t.TempDir(), ca, HubConfig{Hub: hub, Named: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if h2.Named != "" || !errors.Is(h2.NamedErr, syscall.EADDRINUSE) {
		t.Errorf("second hub: Named = %q, NamedErr = %v; want none, address in use", h2.Named, h2.NamedErr)
	}
}
