package dpsemu

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgetpm/edgetpm/internal/dpsservice"
	"github.com/edgetpm/edgetpm/internal/emulator/registry"
	"github.com/edgetpm/edgetpm/internal/sas"
)

// Defaults of Config.
const (
	DefaultServiceHostName = "lab-dps.azure-devices-provisioning.net"
	DefaultHub             = "lab-hub.azure-devices.net"
	DefaultRetryAfter      = 2
	DefaultChallengeTTL    = time.Hour
	// DefaultServiceOpsPerMinute is DPS's rate limit on service API
	// operations, 1,000 per minute per instance (azure-docs
	// includes/iot-dps-limits.md, "Operations 1,000/min/service").
	DefaultServiceOpsPerMinute = 1000
)

// Hub is an IoT hub linked to the DPS instance.
type Hub struct {
	HostName string
	// Latency is the simulated round trip to the hub; the geoLatency
	// policy picks the lowest.
	Latency time.Duration
}

// Config configures a Server. The zero value is a working emulator with
// fresh identifiers and keys, kept in memory.
type Config struct {
	// IDScope is the scope devices register in; empty means "0ne" and 8
	// random uppercase hex digits.
	IDScope string
	// ServiceHostName is the audience of service API tokens; empty means
	// DefaultServiceHostName.
	ServiceHostName string
	// ServiceKey is the key of the provisioningserviceowner policy; empty
	// means 32 random bytes.
	ServiceKey []byte
	// Hubs are the linked hubs; empty means DefaultHub alone.
	Hubs []Hub
	// Allocation is the policy for enrollments that set none: "hashed"
	// (the default), "static" or "geoLatency".
	Allocation string
	// Registry receives the devices DPS assigns; nil means a registry in
	// memory.
	Registry *registry.Registry
	// StateFile keeps the scope, the service key, enrollments, challenges
	// and operations across restarts; empty means memory only. It holds
	// keys and is written with mode 0600.
	StateFile string
	// RetryAfter is the retry-after value, in seconds, on 202 responses;
	// zero means DefaultRetryAfter.
	RetryAfter int
	// AssignDelay is how long an operation stays "assigning"; zero means
	// the first poll sees the result.
	AssignDelay time.Duration
	// ChallengeTTL is how long a challenge key stays valid; zero means
	// DefaultChallengeTTL.
	ChallengeTTL time.Duration
	// ServiceOpsPerMinute limits the service API to that many operations
	// in any minute; each enrollment of a bulk operation counts as one
	// (docs/dps-protocol.md#throttling). Zero means
	// DefaultServiceOpsPerMinute, a negative value no limit; a positive
	// value below dpsservice.MaxBulk is refused, since a full bulk
	// operation could never pass.
	ServiceOpsPerMinute int
	// Now is the clock, of token expiry, timestamps and the rate limit;
	// nil means time.Now.
	Now func() time.Time
	// Rand is the source of keys and identifiers; nil means crypto/rand.
	Rand io.Reader
	// Log receives one line per registration step; the zero value logs
	// nothing.
	Log zerolog.Logger
}

// Faults make the device API (Server.SetFaults) or the service API
// (Server.SetServiceFaults) misbehave, to test client retries. Each count
// applies to that many of the next requests to that API, before anything
// else happens to them.
type Faults struct {
	// Skip lets that many requests through untouched before the faults
	// start, to fault a chosen request.
	Skip int
	// Throttle answers 429 with retry-after: ThrottleRetryAfter seconds
	// (zero means Config.RetryAfter).
	Throttle           int
	ThrottleRetryAfter int
	// ServerErrors answers 503.
	ServerErrors int
	// Resets closes the connection after a partial status line.
	Resets int
}

// Server is the emulator.
type Server struct {
	serviceHost string
	hubs        []Hub
	allocation  string
	reg         *registry.Registry
	stateFile   string
	retryAfter  int
	ttl         time.Duration
	clock       func() time.Time
	rand        io.Reader
	log         zerolog.Logger
	mux         *http.ServeMux

	mu          sync.Mutex // guards st
	st          state
	assignDelay time.Duration

	faultMu       sync.Mutex // guards deviceFaults and serviceFaults
	deviceFaults  Faults
	serviceFaults Faults

	limiter *limiter // nil: no rate limit
}

// New returns an emulator. With a StateFile that exists, it continues from
// the state there; a Config IDScope or ServiceKey that contradicts the file
// is an error rather than a silent change of identity.
func New(cfg Config) (*Server, error) {
	s := &Server{
		serviceHost: cfg.ServiceHostName,
		allocation:  cfg.Allocation,
		reg:         cfg.Registry,
		stateFile:   cfg.StateFile,
		retryAfter:  cfg.RetryAfter,
		ttl:         cfg.ChallengeTTL,
		clock:       cfg.Now,
		log:         cfg.Log,
		assignDelay: cfg.AssignDelay,
	}
	if s.serviceHost == "" {
		s.serviceHost = DefaultServiceHostName
	}
	if !sas.ValidDNSName(s.serviceHost) {
		return nil, fmt.Errorf("service host name %q is not a DNS name", s.serviceHost)
	}
	if s.allocation == "" {
		s.allocation = dpsservice.AllocationHashed
	}
	if !validPolicy(s.allocation) {
		return nil, fmt.Errorf("allocation policy %q, want hashed, static or geoLatency", s.allocation)
	}
	hubs := cfg.Hubs
	if len(hubs) == 0 {
		hubs = []Hub{{HostName: DefaultHub}}
	}
	for i, h := range hubs {
		if !sas.ValidDNSName(h.HostName) {
			return nil, fmt.Errorf("hub %q is not a DNS name", h.HostName)
		}
		if slices.IndexFunc(hubs[:i], func(o Hub) bool { return strings.EqualFold(o.HostName, h.HostName) }) >= 0 {
			return nil, fmt.Errorf("hub %q linked twice", h.HostName)
		}
	}
	s.hubs = slices.Clone(hubs)
	if s.retryAfter <= 0 {
		s.retryAfter = DefaultRetryAfter
	}
	if s.ttl <= 0 {
		s.ttl = DefaultChallengeTTL
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	switch rate := cfg.ServiceOpsPerMinute; {
	case rate == 0:
		s.limiter = newLimiter(DefaultServiceOpsPerMinute, time.Minute)
	case rate > 0 && rate < dpsservice.MaxBulk:
		return nil, fmt.Errorf("service API rate %d per minute is below the %d enrollments of one bulk operation", rate, dpsservice.MaxBulk)
	case rate > 0:
		s.limiter = newLimiter(rate, time.Minute)
	}
	r := cfg.Rand
	if r == nil {
		r = rand.Reader
	}
	s.rand = &lockedReader{r: r}
	if s.reg == nil {
		s.reg, _ = registry.New("")
	}
	if err := s.loadState(cfg.IDScope, cfg.ServiceKey); err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/{scope}/registrations/{regID}/register", s.register)
	s.mux.HandleFunc("/{scope}/registrations/{regID}/operations/{opID}", s.operation)
	// POST /enrollments/query outranks /enrollments/{id}, which still
	// serves the other methods on an enrollment named "query".
	s.mux.HandleFunc("/enrollments", s.bulk)
	// Azure's Node.js service client posts a bulk operation to
	// /enrollments/ (azure-iot-provisioning-service 1.11.2,
	// runBulkEnrollmentOperation), which DPS serves as /enrollments.
	s.mux.HandleFunc("/enrollments/{$}", s.bulk)
	s.mux.HandleFunc("POST /enrollments/query", s.query)
	s.mux.HandleFunc("/enrollments/{id}", s.enrollment)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, http.StatusNotFound, codeNotFound, "No such resource.")
	})
	return s, nil
}

// ServeHTTP serves the device and service APIs.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// IDScope returns the scope devices register in.
func (s *Server) IDScope() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.IDScope
}

// ConnectionString returns the provisioningserviceowner connection string
// of the service API.
func (s *Server) ConnectionString() dpsservice.ConnectionString {
	s.mu.Lock()
	defer s.mu.Unlock()
	return dpsservice.ConnectionString{HostName: s.serviceHost, KeyName: dpsservice.OwnerKeyName, Key: slices.Clone(s.st.ServiceKey)}
}

// Registry returns the registry assigned devices are created in.
func (s *Server) Registry() *registry.Registry { return s.reg }

// SetFaults replaces the pending faults of the device API.
func (s *Server) SetFaults(f Faults) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.deviceFaults = f
}

// SetServiceFaults replaces the pending faults of the service API.
func (s *Server) SetServiceFaults(f Faults) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.serviceFaults = f
}

// now returns the time in UTC at the 100 ns precision DPS timestamps have
// (seven fractional digits, docs/dps-protocol.md#errors), which .NET clients parse.
func (s *Server) now() time.Time { return s.clock().UTC().Truncate(100 * time.Nanosecond) }

// lockedReader lets handlers share a Rand that may not be safe for
// concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

func validPolicy(p string) bool {
	switch p {
	case dpsservice.AllocationHashed, dpsservice.AllocationStatic, dpsservice.AllocationGeoLatency:
		return true
	}
	return false
}
