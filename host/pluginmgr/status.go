package pluginmgr

import (
	"time"

	"github.com/microengine/microengine/shared"
)

// Status is what `microengine plugins` shows for one plugin of a running
// engine.
type Status struct {
	Name              string                `json:"name"`
	Path              string                `json:"path"`
	SHA256            string                `json:"sha256,omitempty"`
	PID               int                   `json:"pid,omitempty"`
	Version           string                `json:"version,omitempty"`
	VendorVersion     string                `json:"vendor_version,omitempty"`
	SignaturesVersion string                `json:"signatures_version,omitempty"`
	ArtifactTypes     []shared.ArtifactType `json:"artifact_types,omitempty"`
	StartedAt         time.Time             `json:"started_at,omitempty"`
	Restarts          int                   `json:"restarts"`
	Crashes           int                   `json:"crashes"`
	// LastCrash is the last process death the supervisor found, with the
	// runtime's report when there was one.
	LastCrash string `json:"last_crash,omitempty"`
	Up        bool   `json:"up"`
	Healthy   bool   `json:"healthy"`
	Health    string `json:"health,omitempty"`
	LastError string `json:"last_error,omitempty"`
	SwapError string `json:"swap_error,omitempty"`
}

// Status reports every plugin in config order.
func (m *Manager) Status() []Status {
	m.mu.RLock()
	slots := make([]*slot, 0, len(m.order))
	for _, n := range m.order {
		slots = append(slots, m.slots[n])
	}
	m.mu.RUnlock()
	out := make([]Status, 0, len(slots))
	for _, s := range slots {
		out = append(out, s.status())
	}
	return out
}

func (s *slot) status() Status {
	s.mu.Lock()
	st := Status{
		Name: s.name, Path: s.spec.path, Restarts: s.restarts, Crashes: s.crashes, LastCrash: s.lastCrash,
		LastError: s.lastErr, SwapError: s.swapErr,
	}
	cur := s.cur
	s.mu.Unlock()
	if cur == nil {
		return st
	}
	info, h := cur.snapshot()
	st.SHA256, st.PID, st.StartedAt, st.Up = cur.sha256, cur.pid, cur.started, true
	st.Version, st.VendorVersion, st.SignaturesVersion = info.Version, info.VendorVersion, info.SignaturesVersion
	st.ArtifactTypes = info.ArtifactTypes
	st.Healthy, st.Health = h.Healthy, h.Message
	return st
}
