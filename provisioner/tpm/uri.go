package tpm

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// The kinds of TPM a URI names. Each has its own TCTI in tpm2-tss: swtpm's
// control channel and the reference simulator's platform port speak
// different protocols on PORT+1, so neither TCTI starts the other.
const (
	kindDevice = "device"
	kindSwtpm  = "swtpm"
	kindMSSim  = "mssim"
)

// endpoint is a parsed TPM URI.
type endpoint struct {
	kind string
	path string // device
	host string // swtpm, mssim
	port int
}

func (e endpoint) String() string {
	if e.kind == kindDevice {
		return "device:" + e.path
	}
	return e.kind + "://" + net.JoinHostPort(e.host, strconv.Itoa(e.port))
}

// platform is the address of the simulator's platform port (mssim) or
// control channel (swtpm).
func (e endpoint) platform() string {
	return net.JoinHostPort(e.host, strconv.Itoa(e.port+1))
}

// Kind is the kind of TPM uri names: "device", "swtpm" or "mssim" (""
// for a URI that is none of them).
func Kind(uri string) string {
	ep, err := parseURI(uri)
	if err != nil {
		return ""
	}
	return ep.kind
}

func parseURI(uri string) (endpoint, error) {
	if uri == "" {
		uri = DefaultURI
	}
	if path, ok := strings.CutPrefix(uri, "device:"); ok {
		if !strings.HasPrefix(path, "/") {
			return endpoint{}, fmt.Errorf("%w %q: want device:/dev/tpmrm0", ErrURI, uri)
		}
		return endpoint{kind: kindDevice, path: path}, nil
	}
	kind, _, _ := strings.Cut(uri, "://")
	if kind != kindSwtpm && kind != kindMSSim {
		return endpoint{}, fmt.Errorf("%w %q: want device:PATH, swtpm://HOST:PORT or mssim://HOST:PORT", ErrURI, uri)
	}
	u, err := url.Parse(uri)
	if err != nil || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(uri, "#") || u.User != nil {
		return endpoint{}, fmt.Errorf("%w %q: want %s://HOST:PORT", ErrURI, uri, kind)
	}
	// PORT+1 must be a port too.
	p, err := strconv.Atoi(u.Port())
	if err != nil || p <= 0 || p >= 65535 {
		return endpoint{}, fmt.Errorf("%w %q: port %q is not in 1-65534", ErrURI, uri, u.Port())
	}
	return endpoint{kind: kind, host: u.Hostname(), port: p}, nil
}

// TCTI is the TCTI by which tpm2-tss (aziot-tpmd through tss-esapi,
// tpm2-tools) reaches the TPM that uri names, in tss-esapi's TctiNameConf
// syntax: "device:/dev/tpmrm0", "swtpm:host=H,port=P",
// "mssim:host=H,port=P".
func TCTI(uri string) (string, error) {
	ep, err := parseURI(uri)
	if err != nil {
		return "", err
	}
	if ep.kind == kindDevice {
		// Spelled out: a bare "device" means /dev/tpm0, which bypasses
		// the kernel resource manager.
		return "device:" + ep.path, nil
	}
	return fmt.Sprintf("%s:host=%s,port=%d", ep.kind, ep.host, ep.port), nil
}

// TCTIURI is the URI of the TPM that a TCTI names, with tpm2-tss's
// defaults: /dev/tpm0 for a bare "device", localhost and port 2321 for the
// simulators. OpenTransport on it does what that TCTI does at its start.
func TCTIURI(tcti string) (string, error) {
	name, conf, _ := strings.Cut(tcti, ":")
	switch name {
	case kindDevice:
		if conf == "" {
			conf = "/dev/tpm0"
		}
		if strings.HasPrefix(conf, "path=") {
			conf = strings.TrimPrefix(conf, "path=")
		}
		if !strings.HasPrefix(conf, "/") {
			return "", fmt.Errorf("%w: TCTI %q: want device:/dev/tpmrm0", ErrURI, tcti)
		}
		return "device:" + conf, nil
	case kindSwtpm, kindMSSim:
		host, port := "localhost", "2321"
		if conf != "" {
			for kv := range strings.SplitSeq(conf, ",") {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "host":
					host = v
				case "port":
					port = v
				default:
					return "", fmt.Errorf("%w: TCTI %q: unknown key %q, want host and port", ErrURI, tcti, k)
				}
			}
		}
		uri := name + "://" + net.JoinHostPort(host, port)
		if ep, err := parseURI(uri); err != nil || ep.String() != uri {
			return "", fmt.Errorf("%w: TCTI %q: want %s:host=HOST,port=PORT", ErrURI, tcti, name)
		}
		return uri, nil
	}
	return "", fmt.Errorf("%w: TCTI %q: edge-provisioner reaches device:, swtpm: and mssim: TPMs", ErrURI, tcti)
}
