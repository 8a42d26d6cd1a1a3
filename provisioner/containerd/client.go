package containerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/identifiers"
	"github.com/containerd/containerd/namespaces"
	"github.com/rs/zerolog"
)

// Where Docker and IoT Edge keep things on a Linux host.
const (
	// DefaultAddress is the socket of the containerd that Docker runs
	// containers on (the containerd.io and docker.io packages).
	DefaultAddress = "/run/containerd/containerd.sock"
	// DefaultNamespace is where Docker keeps its containers and, with the
	// containerd image store, its images.
	DefaultNamespace = "moby"
	// DefaultDockerSocket is the Docker Engine API.
	DefaultDockerSocket = "/var/run/docker.sock"
)

// connectTimeout bounds New's dial: containerd answers in milliseconds, and
// the gRPC dialer would otherwise retry a dead socket for 10 s.
const connectTimeout = 5 * time.Second

// Client side-loads images into, and reads containers from, one containerd
// daemon. It holds one gRPC connection; use it from one goroutine at a time
// and Close it when done.
type Client struct {
	address      string
	ns           string
	dockerSocket string
	log          zerolog.Logger
	ctd          *containerd.Client
}

// Option configures a Client in New.
type Option func(*Client) error

// WithNamespace sets the containerd namespace; default DefaultNamespace.
func WithNamespace(ns string) Option {
	return func(c *Client) error {
		if err := identifiers.Validate(ns); err != nil {
			return fmt.Errorf("namespace %q: %w", ns, err)
		}
		c.ns = ns
		return nil
	}
}

// WithDockerSocket sets where Load looks for Docker to decide which image
// store to load into; default DefaultDockerSocket. "" disables the Docker
// check: Load then always imports into containerd.
func WithDockerSocket(path string) Option {
	return func(c *Client) error {
		c.dockerSocket = path
		return nil
	}
}

// WithLogger sets the logger for Load's progress lines; default none.
func WithLogger(l zerolog.Logger) Option {
	return func(c *Client) error {
		c.log = l
		return nil
	}
}

// New connects to containerd at address (DefaultAddress when empty) and
// checks that it answers.
func New(ctx context.Context, address string, opts ...Option) (*Client, error) {
	if address == "" {
		address = DefaultAddress
	}
	c := &Client{address: address, ns: DefaultNamespace, dockerSocket: DefaultDockerSocket, log: zerolog.Nop()}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	// Check the socket first: the gRPC dialer reports a missing one only as
	// a timeout.
	fi, err := os.Stat(address)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("containerd socket %s does not exist; is containerd running? (%w)", address, fs.ErrNotExist)
	case err != nil:
		return nil, fmt.Errorf("containerd socket: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("containerd address %s is not a socket", address)
	}
	timeout := connectTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = max(time.Until(d), time.Millisecond)
	}
	// No containerd.WithDefaultNamespace: it makes containerd.New read the
	// namespace's labels without a deadline. Every call sets the namespace
	// on its context instead.
	ctd, err := containerd.New(address, containerd.WithTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd: %w", err) // err names the address
	}
	c.ctd = ctd
	if _, err := c.Version(ctx); err != nil {
		ctd.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.ctd.Close()
}

// Version returns the daemon's version, e.g. "1.6.20~ds1".
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.ctd.Version(ctx)
	if err != nil {
		return "", fmt.Errorf("%s does not answer as containerd: %w", c.address, err)
	}
	return v.Version, nil
}

// nsContext puts the client's namespace on ctx.
func (c *Client) nsContext(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, c.ns)
}
