package hubemu

import (
	"cmp"
	"maps"
	"slices"
	"strings"
)

// reconcileLocked applies the automatic deployments to every device of
// Config.Devices, as IoT Hub does after a configuration or tag change
// (edge-runtime.md §6.2, §6.3), and records which devices each
// configuration targets and where it is in effect. s.deployMu must be held.
func (s *Server) reconcileLocked() {
	configs := slices.SortedFunc(maps.Values(s.configs), func(a, b *configuration) int { return cmp.Compare(a.seq, b.seq) })
	for _, c := range configs {
		c.targeted, c.applied = map[string]bool{}, map[string]bool{}
	}
	if s.devices == nil {
		return
	}
	for _, d := range s.devices() {
		s.reconcileDeviceLocked(d, configs)
	}
}

// reconcileDeviceLocked applies to device d the highest-priority standard
// deployment that targets it (ties: the most recently created) and, merged
// on top in priority order, the layered deployments that target it with a
// higher priority. A device no standard deployment targets keeps its
// twins. configs are in creation order.
func (s *Server) reconcileDeviceLocked(d string, configs []*configuration) {
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
		return
	}
	layers = slices.DeleteFunc(layers, func(c *configuration) bool { return c.priority <= base.priority })
	slices.SortStableFunc(layers, func(a, b *configuration) int { return cmp.Compare(a.priority, b.priority) })

	desired := map[string]map[string]any{}
	for m, v := range base.content {
		if doc, ok := v.(map[string]any)[desiredKey].(map[string]any); ok {
			desired[m] = deepCopy(doc).(map[string]any)
		}
	}
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
	if err := s.setModulesLocked(d, desired); err != nil {
		s.log.Info().Str("device", d).Str("configuration", base.id).Err(err).Msg("deployment not applied")
		return
	}
	base.applied[d] = true
	for _, l := range layers {
		l.applied[d] = true
	}
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
// module, and has Config.Agent judge a changed $edgeAgent. It stops at the
// first module whose document breaks the twin limits. s.deployMu must be
// held, s.twinMu not.
func (s *Server) setModulesLocked(d string, desired map[string]map[string]any) error {
	var agentVersion int64
	s.twinMu.Lock()
	for _, m := range slices.Sorted(maps.Keys(desired)) {
		v, changed, err := s.replaceDesiredLocked(identity{d, m}, desired[m])
		if err != nil {
			s.twinMu.Unlock()
			return err
		}
		if changed && m == edgeAgent {
			agentVersion = v
		}
	}
	s.twinMu.Unlock()
	if agentVersion != 0 {
		s.runAgent(d, agentVersion, desired[edgeAgent])
	}
	return nil
}

// metricsLocked counts each metric query of c over the twins of the
// devices c targets: device twins for FROM devices, their module twins for
// FROM devices.modules. s.deployMu must be held.
func (s *Server) metricsLocked(c *configuration) map[string]int {
	results := map[string]int{}
	if len(c.parsed) == 0 {
		return results
	}
	s.twinMu.Lock()
	defer s.twinMu.Unlock()
	var devices, modules []map[string]any
	for id, t := range s.twins {
		if !c.targeted[id.device] {
			continue
		}
		doc := map[string]any{
			"deviceId":   id.device,
			"properties": map[string]any{"desired": withVersion(t.desired, t.desiredVersion), "reported": withVersion(t.reported, t.reportedVersion)},
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
