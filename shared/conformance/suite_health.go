package conformance

// Checks of the suite's config applied and health: CONFIG-001, HEALTH-00x.

import (
	"context"
	"time"
)

func checkConfigAccepted(ctx context.Context, e *env) outcome {
	if _, out, ok := e.session(ctx, stageConfigured); !ok {
		return out
	}
	return passf("accepted")
}

func checkHealthAnswers(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	var p problems
	if err := s.ping(); err != nil {
		p.add("%v", err)
	}
	start := time.Now()
	if _, err := s.health(ctx); err != nil {
		p.add("%v", err)
	}
	return p.outcome("Health answered in %s", elapsedSince(start))
}

func checkHealthy(ctx context.Context, e *env) outcome {
	s, out, ok := e.session(ctx, stageConfigured)
	if !ok {
		return out
	}
	h, err := s.health(ctx)
	switch {
	case err != nil:
		return failf("%v", err)
	case !h.Healthy:
		return failf("Health() reported unhealthy: %q", h.Message)
	}
	return passf("healthy: %q", h.Message)
}
