package hubemu

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// reconcileLocked applies the automatic deployments to every device of
// Config.Devices, as IoT Hub does after a configuration or tag change
// (docs/edge-protocol.md#deployments, #iot-hub-service-api), and records which devices each
// configuration targets and where it is in effect. It returns the
// Config.Agent calls the changes owe, for runAgents once s.deployMu is
// released. s.deployMu must be held.
func (s *Server) reconcileLocked() []agentRun {
	configs := slices.SortedFunc(maps.Values(s.configs), func(a, b *configuration) int { return cmp.Compare(a.seq, b.seq) })
	for _, c := range configs {
		c.targeted, c.applied = map[string]bool{}, map[string]bool{}
	}
	if s.devices == nil {
		return nil
	}
	var runs []agentRun
	for _, d := range s.devices() {
		runs = append(runs, s.reconcileDeviceLocked(d, configs)...)
	}
	return runs
}

// reconcileDeviceLocked applies to device d the highest-priority standard
// deployment that targets it (ties: the most recently created) and, merged
// on top in priority order, the layered deployments that target it with a
// higher priority. A device no standard deployment targets keeps its
// twins. configs are in creation order.
func (s *Server) reconcileDeviceLocked(d string, configs []*configuration) []agentRun {
	s.twinMu.Lock()
	t := s.twinLocked(identity{d, ""})
	doc := map[string]any{
		"deviceId":   d,
		"tags":       t.tags,
		"properties": map[string]any{"desired": t.desired, "reported": t.reported},
	}
	var base *configuration
	var layers []*configuration
	for _, c := range configs {
		if c.cond == nil || !c.cond.Match(doc) {
			continue
		}
		c.targeted[d] = true
		switch {
		case c.layered:
			layers = append(layers, c)
		case base == nil || c.priority >= base.priority: // later seq wins ties
			base = c
		}
	}
	s.twinMu.Unlock()
	if base == nil {
		return nil
	}
	layers = slices.DeleteFunc(layers, func(c *configuration) bool { return c.priority <= base.priority })
	slices.SortStableFunc(layers, func(a, b *configuration) int { return cmp.Compare(a.priority, b.priority) })

	desired := desiredDocs(base.content)
	for _, l := range layers {
		for m, v := range l.content {
			for k, x := range v.(map[string]any) {
				if desired[m] == nil {
					desired[m] = map[string]any{}
				}
				setPath(desired[m], strings.Split(strings.TrimPrefix(k, desiredKey+"."), "."), deepCopy(x))
			}
		}
	}
	runs, err := s.setModulesLocked(d, desired)
	if err != nil {
		s.log.Info().Str("device", d).Str("configuration", base.id).Err(err).Msg("deployment not applied")
		return nil
	}
	base.applied[d] = true
	for _, l := range layers {
		l.applied[d] = true
	}
	return runs
}

// setPath sets doc.segs[0].segs[1]... to value, making objects on the way
// (replacing non-objects); a nil value deletes the member.
func setPath(doc map[string]any, segs []string, value any) {
	for _, k := range segs[:len(segs)-1] {
		next, ok := doc[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			doc[k] = next
		}
		doc = next
	}
	last := segs[len(segs)-1]
	if value == nil {
		delete(doc, last)
		return
	}
	doc[last] = value
}

// setModulesLocked replaces the desired properties of device d's modules
// with desired (module → document), pushing each change to a connected
// module. If one module's document breaks the twin limits, no module
// changes. It returns the Config.Agent call a changed $edgeAgent owes, for
// runAgents once s.deployMu is released. s.deployMu must be held, s.twinMu
// not.
func (s *Server) setModulesLocked(d string, desired map[string]map[string]any) ([]agentRun, error) {
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	type change struct{ doc, patch map[string]any }
	changes := map[string]change{}
	for m, want := range desired {
		cur := map[string]any{}
		if t := s.twins[identity{d, m}]; t != nil {
			cur = t.desired
		}
		patch := diffPatch(cur, want)
		if len(patch) == 0 {
			continue
		}
		doc, err := mergeChecked(cur, patch)
		if err != nil {
			return nil, fmt.Errorf("desired properties of %s: %w", identity{d, m}, err)
		}
		changes[m] = change{doc, patch}
	}
	var runs []agentRun
	for _, m := range slices.Sorted(maps.Keys(desired)) {
		id := identity{d, m}
		t := s.twinLocked(id) // a deployment creates the twins it names
		c, ok := changes[m]
		if !ok {
			continue
		}
		v := s.setDesiredLocked(id, t, c.doc, c.patch)
		if m == edgeAgent {
			runs = append(runs, agentRun{device: d, version: v, desired: c.doc})
		}
	}
	return runs, nil
}

// metricsLocked counts each metric query of c over every twin of the hub,
// as IoT Hub does: device twins for FROM devices, module twins for FROM
// devices.modules. A query counts the devices of one deployment only if it
// says so, with configurations.[[id]].status = 'Applied' (or 'Targeted'),
// which every twin carries. s.deployMu must be held.
func (s *Server) metricsLocked(c *configuration) map[string]int {
	results := map[string]int{}
	if len(c.parsed) == 0 {
		return results
	}
	status := map[string]map[string]any{} // device → configurations
	for _, cc := range s.configs {
		for d := range cc.targeted {
			if status[d] == nil {
				status[d] = map[string]any{}
			}
			st := "Targeted"
			if cc.applied[d] {
				st = "Applied"
			}
			status[d][cc.id] = map[string]any{"status": st}
		}
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	var devices, modules []map[string]any
	for id, t := range s.twins {
		doc := map[string]any{
			"deviceId":       id.device,
			"configurations": status[id.device],
			"properties":     map[string]any{"desired": withVersion(t.desired, t.desiredVersion), "reported": withVersion(t.reported, t.reportedVersion)},
		}
		if id.module == "" {
			doc["tags"] = t.tags
			devices = append(devices, doc)
		} else {
			doc["moduleId"] = id.module
			modules = append(modules, doc)
		}
	}
	for name, q := range c.parsed {
		twins := devices
		if q.From == "devices.modules" {
			twins = modules
		}
		results[name] = q.Count(twins)
	}
	return results
}
