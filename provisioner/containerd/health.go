package containerd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
)

// moduleEnv is the variable IoT Edge's edgelet sets in every module
// container; edgeAgent and edgeHub have "$edgeAgent" and "$edgeHub".
const moduleEnv = "IOTEDGE_MODULEID="

// noTask is the State of a container without a task: created but never
// started, or exited and cleaned up.
const noTask = "no task"

// ErrNotHealthy reports edge modules that did not run in time.
var ErrNotHealthy = errors.New("edge modules are not running")

// Container is one IoT Edge module container.
type Container struct {
	ID string `json:"id"`
	// Module is the IoT Edge module name, without the "$" of system
	// modules: "edgeAgent", "edgeHub", or a custom module's name.
	Module string `json:"module"`
	// Image is the image name containerd recorded; Docker with its classic
	// image store records none.
	Image string `json:"image"`
	// State is the task's status: running, stopped, created, paused,
	// pausing or unknown; "no task" without one.
	State string `json:"state"`
	PID   uint32 `json:"pid"`
}

// Containers lists the IoT Edge module containers in the client's
// namespace, sorted by module: those whose OCI spec sets IOTEDGE_MODULEID.
// Docker leaves no labels on the containerd containers it makes, but it
// copies the environment of docker run -e into their spec.
func (c *Client) Containers(ctx context.Context) ([]Container, error) {
	ctx = c.nsContext(ctx)
	list, err := c.ctd.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers in namespace %s: %w", c.ns, err)
	}
	var out []Container
	for _, ctr := range list {
		spec, err := ctr.Spec(ctx)
		if errdefs.IsNotFound(err) {
			continue // deleted since the list
		}
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", ctr.ID(), err)
		}
		var module string
		if spec.Process != nil {
			for _, kv := range spec.Process.Env {
				if v, ok := strings.CutPrefix(kv, moduleEnv); ok {
					module = strings.TrimPrefix(v, "$")
				}
			}
		}
		if module == "" {
			continue
		}
		info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata) // as listed
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", ctr.ID(), err)
		}
		ct := Container{ID: ctr.ID(), Module: module, Image: info.Image, State: noTask}
		task, err := ctr.Task(ctx, nil)
		switch {
		case errdefs.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("task of container %s: %w", ctr.ID(), err)
		default:
			st, err := task.Status(ctx)
			if err != nil && !errdefs.IsNotFound(err) {
				return nil, fmt.Errorf("task of container %s: %w", ctr.ID(), err)
			}
			if err == nil {
				ct.State, ct.PID = string(st.Status), task.Pid()
			}
		}
		out = append(out, ct)
	}
	slices.SortFunc(out, func(a, b Container) int {
		return cmp.Or(cmp.Compare(a.Module, b.Module), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// WaitRunning polls Containers every interval (default 1 s) until every
// module in modules has a running container, and returns that list. When
// ctx ends first it returns the last list and an error wrapping
// ErrNotHealthy and ctx's cause that names each module not running and
// its state, and the containerd address and namespace looked in.
func (c *Client) WaitRunning(ctx context.Context, modules []string, interval time.Duration) ([]Container, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		last    []Container
		lastErr error
	)
	for {
		list, err := c.Containers(ctx)
		switch {
		case ctx.Err() != nil:
			// A listing the deadline cut short may have skipped
			// containers: the last whole one stands.
			if last == nil && err == nil {
				last = list
			}
		case err == nil:
			last, lastErr = list, nil
			if len(notRunning(list, modules)) == 0 {
				return list, nil
			}
		default:
			lastErr = err // containerd may be restarting; keep polling
		}
		select {
		case <-ctx.Done():
			detail := strings.Join(notRunning(last, modules), ", ")
			if last == nil && lastErr != nil {
				detail = "containers not listed: " + lastErr.Error()
			} else if lastErr != nil {
				detail += "; last error: " + lastErr.Error()
			}
			// Say where we looked: a runtime on another socket or in another
			// namespace is the common cause of "no container".
			return last, fmt.Errorf("%w: %s (looked in namespace %s of containerd at %s) (%w)", ErrNotHealthy, detail, c.ns, c.address, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// notRunning describes each module without a running container, e.g.
// "edgeHub: stopped" or "custom: no container".
func notRunning(list []Container, modules []string) []string {
	var out []string
	for _, m := range modules {
		var states []string
		running := false
		for _, ct := range list {
			if ct.Module == m {
				states = append(states, ct.State)
				running = running || ct.State == string(containerd.Running)
			}
		}
		switch {
		case running:
		case len(states) == 0:
			out = append(out, m+": no container")
		default:
			out = append(out, m+": "+strings.Join(states, ", "))
		}
	}
	return out
}
